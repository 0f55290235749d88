"""How DST reads and writes weights, gradients and optimizer state under each training engine.

An engine hides where the values live: the module itself (single process, DDP), DeepSpeed's fp32
master partitions (ZeRO-1/2/3) or DTensor shards (FSDP2). Per-step masking uses only local data
(no collectives); the full gathers (`full_weight`, `full_grad`) are called at mask updates only, by
every rank, in the same order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

StepHook = Callable[[], None]


class Engine:
    """Single process (or any engine whose parameters are whole, replicated tensors, e.g. DDP)."""

    #: True when the engine runs the DST hooks itself around the real optimizer step.
    drives_hooks = False
    #: Up to this fraction of inactive positions, gradients are zeroed through a list of those
    #: positions: scattered writes to few elements beat a pass over every element and its mask
    #: (about 3x at density 0.9 on CPU), and the list is no bigger than 2 bytes per element.
    index_fraction = 0.25

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.module = unwrap_model(model)
        self.optimizer = unwrap_optimizer(optimizer) if optimizer is not None else None
        self._inactive: dict[int, torch.Tensor] = {}  # id(param) -> flat indices of inactive positions

    @property
    def rank(self) -> int:
        return dist.get_rank() if _distributed() else 0

    @property
    def world_size(self) -> int:
        return dist.get_world_size() if _distributed() else 1

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return list(self.module.named_parameters())

    def shape(self, param: nn.Parameter) -> torch.Size:
        return param.shape

    def install(self, pre_step: StepHook, post_step: StepHook) -> None:
        """Engines that own the optimizer step wrap it here; the user calls the hooks otherwise."""

    def full_weight(self, param: nn.Parameter) -> torch.Tensor:
        return param.detach()

    def full_grad(self, param: nn.Parameter) -> torch.Tensor | None:
        return None if param.grad is None else param.grad.detach().clone()

    def prepare_masks(
        self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor], counts: Sequence[int]
    ) -> None:
        """Called whenever the masks change (with their active counts): precompute the per-step form."""
        self._inactive = {}
        for p, m, n_active in zip(params, masks, counts, strict=True):
            if m.numel() - n_active <= self.index_fraction * m.numel():
                self._inactive[id(p)] = (~m).reshape(-1).nonzero().squeeze(1)

    def mask_grads(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        """Zero gradients at inactive positions so that optimizer state stays zero there."""
        for p, m in zip(params, masks, strict=True):
            grad = p.grad
            if grad is None:
                continue
            inactive = self._inactive.get(id(p))
            if inactive is not None and grad.is_contiguous():
                grad.view(-1).index_fill_(0, inactive, 0.0)
            else:
                zero_outside(grad, m)

    def apply_masks(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        """Zero the weights at inactive positions, wherever the engine keeps weights."""
        with torch.no_grad():
            for p, m in zip(params, masks, strict=True):
                zero_outside(p.data, m)

    def mask_optimizer_state(self, param: nn.Parameter, keep: torch.Tensor) -> None:
        """Zero optimizer state (e.g. Adam moments) outside `keep`: grown weights start clean."""
        if self.optimizer is None:
            return
        for value in self.optimizer.state.get(param, {}).values():
            if torch.is_tensor(value) and value.shape == param.shape:
                zero_outside(value, keep)

    def broadcast_masks(self, masks: Sequence[torch.Tensor]) -> None:
        """Make every rank hold rank 0's masks (gloo has no bool: sent as uint8)."""
        if self.world_size == 1:
            return
        for m in masks:
            buf = m.to(torch.uint8)
            dist.broadcast(buf, src=0)
            m.copy_(buf.bool())


class DeepSpeedEngineAdapter(Engine):
    """DeepSpeed ZeRO-1/2/3: the fp32 master copy is partitioned over ranks and must be masked too.

    DeepSpeed (and accelerate's wrapper around it) steps inside `backward`, so the hooks are run by
    a wrapper around `engine.step` at gradient-accumulation boundaries, where the real step happens.
    """

    drives_hooks = True

    def __init__(self, engine: nn.Module) -> None:
        self.engine = engine
        self.stage = int(engine.zero_optimization_stage())
        if self.stage not in (1, 2, 3):
            raise ValueError(f"DeepSpeed ZeRO stage {self.stage} is not supported by DST: use stage 1, 2 or 3")
        super().__init__(engine.module, None)
        self._ds_optimizer = engine.optimizer

    def shape(self, param: nn.Parameter) -> torch.Size:
        return param.ds_shape if hasattr(param, "ds_shape") else param.shape

    def install(self, pre_step: StepHook, post_step: StepHook) -> None:
        engine = self.engine
        real_step = engine.step

        def step(*args, **kwargs):
            boundary = engine.is_gradient_accumulation_boundary()
            if boundary:
                pre_step()
            out = real_step(*args, **kwargs)
            # fp16 overflow skips the update: the weights did not move, so the step does not count
            if boundary and engine.was_step_applied():
                post_step()
            return out

        engine.step = step

    def prepare_masks(
        self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor], counts: Sequence[int]
    ) -> None:
        """Nothing: gradients are masked per local partition."""

    def full_weight(self, param: nn.Parameter) -> torch.Tensor:
        from deepspeed.utils import safe_get_full_fp32_param

        return safe_get_full_fp32_param(param).reshape(self.shape(param))

    def full_grad(self, param: nn.Parameter) -> torch.Tensor | None:
        from deepspeed.utils import safe_get_full_grad

        grad = safe_get_full_grad(param)
        return None if grad is None else grad.detach().float().clone().reshape(self.shape(param))

    def mask_grads(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        """Mask this rank's partition of the reduced gradient, so Adam state stays zero off-mask."""
        with torch.no_grad():
            for p, m in zip(params, masks, strict=True):
                if self.stage == 3:
                    from deepspeed.utils import safe_get_local_grad, safe_set_local_grad

                    grad = safe_get_local_grad(p)
                    if grad is not None:
                        safe_set_local_grad(p, torch.where(self._zero3_local_slice(p, m), grad, 0.0))
                    continue
                mapping = getattr(p, "_hp_mapping", None)
                if mapping is None:
                    continue
                grad = mapping.get_lp_grad_fragment(p._index_in_param_group)
                # bf16 keeps a whole-tensor accumulation buffer; ZeRO-1/2 keep only the fragment.
                local = m.reshape(-1) if grad.numel() == m.numel() else self._zero12_local_slice(p, m)
                zero_outside(grad, local.view_as(grad))

    def apply_masks(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, m in zip(params, masks, strict=True):
                if self.stage == 3:
                    self._apply_mask_zero3(p, m)
                else:
                    self._apply_mask_zero12(p, m)

    def mask_optimizer_state(self, param: nn.Parameter, keep: torch.Tensor) -> None:
        with torch.no_grad():
            if self.stage == 3:
                from deepspeed.utils import safe_get_local_optimizer_state, safe_set_local_optimizer_state

                local = self._zero3_local_slice(param, keep)
                for key in self._zero3_state_keys(param):
                    state = safe_get_local_optimizer_state(param, key)
                    safe_set_local_optimizer_state(param, torch.where(local, state, 0.0), key)
                return
            mapping = getattr(param, "_hp_mapping", None)
            if mapping is None:  # this rank holds no fragment of the parameter
                return
            local = self._zero12_local_slice(param, keep)
            for state in self._zero12_state_fragments(mapping):
                zero_outside(state, local)

    def _zero12_state_fragments(self, mapping) -> list[torch.Tensor]:
        # Read the optimizer's own state: the per-parameter views DeepSpeed keeps in the mapping
        # are not re-linked after a checkpoint load, and writes through them would be lost.
        opt = self._ds_optimizer
        partitions = getattr(opt, "single_partition_of_fp32_groups", None)
        if partitions is None:
            partitions = getattr(opt, "fp32_groups_flat_partition", None)  # BF16_Optimizer
        if partitions is None:
            raise NotImplementedError(f"DST cannot find the fp32 partitions of {type(opt).__name__}")
        flat = partitions[mapping.param_group_index]
        address = mapping.get_hp_fragment_address()
        return [
            value.narrow(0, address.start, address.numel)
            for value in opt.optimizer.state.get(flat, {}).values()
            if torch.is_tensor(value) and value.shape == flat.shape
        ]

    def _apply_mask_zero12(self, p: nn.Parameter, mask: torch.Tensor) -> None:
        # The module weight is whole and replicated; the fp32 master holds this rank's fragment.
        zero_outside(p.data, mask)
        mapping = getattr(p, "_hp_mapping", None)
        if mapping is not None:
            zero_outside(mapping.hp_fragment.data, self._zero12_local_slice(p, mask))

    def _apply_mask_zero3(self, p: nn.Parameter, mask: torch.Tensor) -> None:
        from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

        local = self._zero3_local_slice(p, mask)
        zero_outside(p.ds_tensor.data, local)
        if p.data.numel() == p.ds_numel:
            # Persistent (small) or currently gathered parameter: the module holds a whole copy too.
            zero_outside(p.data, mask.view(p.data.shape))
        master = safe_get_local_fp32_param(p)
        if master is not None:
            safe_set_local_fp32_param(p, torch.where(local, master, 0.0))

    @staticmethod
    def _zero12_local_slice(p: nn.Parameter, mask: torch.Tensor) -> torch.Tensor:
        address = p._hp_mapping.lp_fragment_address
        return mask.reshape(-1).narrow(0, address.start, address.numel)

    def _zero3_local_slice(self, p: nn.Parameter, mask: torch.Tensor) -> torch.Tensor:
        # ZeRO-3 splits the flattened parameter (padded to a multiple of the world size) into
        # equal partitions, one per rank.
        size = p.ds_tensor.ds_numel
        rank = self._ds_optimizer._get_param_partition_rank(p)
        flat = mask.reshape(-1)
        start = size * rank
        piece = flat[start : start + size]
        if piece.numel() < size:
            piece = torch.cat([piece, piece.new_zeros(size - piece.numel())])
        return piece

    def _zero3_state_keys(self, p: nn.Parameter) -> list[str]:
        opt = self._ds_optimizer
        group_idx, _, _ = opt.grad_position[opt.get_param_id(p)]
        flat = opt.fp32_partitioned_groups_flat[group_idx]
        state = opt.optimizer.state.get(flat, {})
        return [k for k, v in state.items() if torch.is_tensor(v) and v.shape == flat.shape]


class FSDP2Engine(Engine):
    """torch FSDP2 (`fully_shard`): parameters, grads and optimizer state are DTensors sharded on dim 0."""

    def prepare_masks(
        self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor], counts: Sequence[int]
    ) -> None:
        """Nothing: gradients are masked per local shard."""

    def full_weight(self, param: nn.Parameter) -> torch.Tensor:
        return param.detach().full_tensor()

    def full_grad(self, param: nn.Parameter) -> torch.Tensor | None:
        return None if param.grad is None else param.grad.detach().full_tensor()

    def mask_grads(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        for p, m in zip(params, masks, strict=True):
            if p.grad is not None:
                zero_outside(p.grad.to_local(), self._local_slice(p, m))

    def apply_masks(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, m in zip(params, masks, strict=True):
                zero_outside(p.to_local(), self._local_slice(p, m))

    def mask_optimizer_state(self, param: nn.Parameter, keep: torch.Tensor) -> None:
        if self.optimizer is None:
            return
        local_keep = self._local_slice(param, keep)
        for value in self.optimizer.state.get(param, {}).values():
            if torch.is_tensor(value) and value.shape == param.shape:
                zero_outside(value.to_local() if hasattr(value, "to_local") else value, local_keep)

    @staticmethod
    def _local_slice(p: nn.Parameter, mask: torch.Tensor) -> torch.Tensor:
        from torch.distributed.tensor import Shard

        placements = p.placements
        if len(placements) != 1 or not isinstance(placements[0], Shard) or placements[0].dim != 0:
            raise ValueError(f"FSDP2 DST supports one mesh dimension sharded on dim 0, got placements {placements}")
        local = p.to_local()
        # torch.chunk semantics: every rank but the last gets ceil(n / world) rows.
        rows = -(-mask.shape[0] // p.device_mesh.size())
        start = rows * p.device_mesh.get_local_rank()
        return mask[start : start + local.shape[0]]


def zero_outside(tensor: torch.Tensor, keep: torch.Tensor) -> None:
    """tensor[~keep] = 0 in place, in one pass.

    where() reads the bool mask as is; mul_ would first promote it to the tensor's dtype, about
    twice as slow on CPU.
    """
    torch.where(keep, tensor, torch.zeros((), dtype=tensor.dtype, device=tensor.device), out=tensor)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module under DDP / DeepSpeed / torch.compile wrappers, so names match patterns."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel) or _is_deepspeed_engine(model):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer under accelerate's AcceleratedOptimizer (its `.optimizer`)."""
    while not isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def detect_engine(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Engine:
    """Pick the engine from the (prepared) model: DeepSpeed, FSDP2, else plain/DDP."""
    if _is_deepspeed_engine(model):
        return DeepSpeedEngineAdapter(model)
    inner = unwrap_model(model)
    if any(_is_dtensor(p) for p in inner.parameters()):
        return FSDP2Engine(model, optimizer)
    return Engine(model, optimizer)


def _is_deepspeed_engine(model: nn.Module) -> bool:
    cls_names = {c.__name__ for c in type(model).__mro__}
    return "DeepSpeedEngine" in cls_names


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor" or hasattr(t, "device_mesh")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()
