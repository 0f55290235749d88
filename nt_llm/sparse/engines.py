"""How DST reads and writes weights, gradients and optimizer state under each training engine.

An engine hides where the values live: the module itself (`LocalEngine`: single process, DDP),
DeepSpeed's fp32 master partitions (`ZeroEngine`: ZeRO-1/2/3) or DTensor shards (`FSDP2Engine`).
Per-step masking uses only local data (no collectives).

A mask update is split over ranks: every tensor has one owner (`assign_owners`, the same on every
rank), `gather_full` materialises full weights and gradients on their owners only, the owners
score and select, and `share_masks` broadcasts every new mask (bit-packed) from its owner.
Replicated engines gather nothing: the owner reads its local tensors. Sharded engines send each
local piece straight to the owner (one `gather` per destination rank), never to every rank.
What every rank then does is proportional to what changed: `clear_dropped` zeroes weights and
optimizer state only where positions left the masks (elsewhere outside them both are zero already).

A new engine subclasses `Engine` (or `ShardedEngine` if it only has to say which piece of each
full tensor this rank holds) and registers an `EngineSpec` in `ENGINES`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from nt_llm.sparse.registry import Registry

logger = logging.getLogger(__name__)

StepHook = Callable[[], None]
Kind = Literal["weight", "grad"]


def assign_owners(sizes: Sequence[int], world_size: int) -> list[int]:
    """Owner rank per tensor, balancing total size: largest first, each to the least-loaded rank.

    Pure and deterministic (ties go to the lower index and the lower rank), so every rank computes
    the same assignment without communicating. The busiest rank gets at most the average load plus
    the largest tensor.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    owners = [0] * len(sizes)
    loads = [0] * world_size
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        owners[i] = rank
        loads[rank] += sizes[i]
    return owners


class Engine(ABC):
    """What DynamicSparsity needs from a training engine; subclasses say where the values live."""

    #: True when the engine runs the DST hooks itself around the real optimizer step.
    drives_hooks = False

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.module = unwrap_model(module)
        self.optimizer = unwrap_optimizer(optimizer) if optimizer is not None else None

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

    def install(self, pre_step: StepHook, post_step: StepHook) -> None:  # noqa: B027 (optional hook)
        """Engines that own the optimizer step wrap it here; the user calls the hooks otherwise."""

    # ---- update time ---------------------------------------------------------------------------

    @abstractmethod
    def gather_full(
        self, params: Sequence[nn.Parameter], owners: Sequence[int], kind: Kind
    ) -> dict[int, torch.Tensor | None]:
        """Full tensors of the parameters this rank owns, by position in `params`.

        `kind="weight"`: the weight DST scores (DeepSpeed: the fp32 master); `kind="grad"`: the
        dense, already reduced gradient (None where there is none). Every rank calls it with the
        same arguments (it may be a collective).
        """

    def share_masks(
        self, masks: dict[int, torch.Tensor], owners: Sequence[int], shapes: Sequence[torch.Size], device: torch.device
    ) -> list[torch.Tensor]:
        """Every position's mask on every rank, sent from its owner (`masks` holds this rank's).

        One broadcast per owning rank of its masks, bit-packed (1 bit per weight), of exactly their
        size: each rank receives every mask once, total/8 bytes, however unequal the owners' shares
        (an all_gather would pad every rank's share to the largest one).
        """
        world = self.world_size
        if world == 1:
            return [masks[i] for i in range(len(owners))]
        rank = self.rank
        comm = comm_device(device)
        packed_sizes = [(s.numel() + 7) // 8 for s in shapes]
        out: list[torch.Tensor | None] = [None] * len(owners)
        for src in range(world):
            mine = [i for i, o in enumerate(owners) if o == src]
            size = sum(packed_sizes[i] for i in mine)
            if size == 0:
                continue
            if src == rank:
                buf = torch.cat([pack_bits(masks[i].to(comm)) for i in mine])
            else:
                buf = torch.empty(size, dtype=torch.uint8, device=comm)
            dist.broadcast(buf, src=src)
            offset = 0
            for i in mine:
                piece = buf[offset : offset + packed_sizes[i]]
                offset += packed_sizes[i]
                out[i] = masks[i] if src == rank else unpack_bits(piece, shapes[i]).to(device)
        return out

    # ---- per step and at updates: local work only -----------------------------------------------

    def prepare_masks(  # noqa: B027 (optional hook)
        self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor], counts: Sequence[int]
    ) -> None:
        """Called whenever the masks change (with their active counts): precompute the per-step form."""

    @abstractmethod
    def mask_grads(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        """Zero gradients at inactive positions so that optimizer state stays zero there."""

    @abstractmethod
    def apply_masks(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        """Zero the weights at inactive positions, wherever the engine keeps weights."""

    @abstractmethod
    def mask_optimizer_state(self, param: nn.Parameter, keep: torch.Tensor) -> None:
        """Zero optimizer state (e.g. Adam moments) outside `keep`: grown weights start clean."""

    def clear_dropped(self, params: Sequence[nn.Parameter], dropped: Sequence[torch.Tensor]) -> None:
        """After a mask update: zero weights and optimizer state where ``dropped`` (positions that were active and
        are not any more).

        Positions that were already inactive hold zero weights and state (gradients are masked at every step and
        state is zeroed at updates), so grown positions start from zero without a pass over them. This default
        masks whole tensors; engines with a cheaper way to touch only the dropped positions override it.
        """
        keeps = [~d for d in dropped]
        for p, keep in zip(params, keeps, strict=True):
            self.mask_optimizer_state(p, keep)
        self.apply_masks(params, keeps)


class LocalEngine(Engine):
    """Single process, or any engine whose parameters are whole, replicated tensors (DDP)."""

    #: Up to this fraction of inactive positions, gradients are zeroed through a list of those
    #: positions: scattered writes to few elements beat a pass over every element and its mask
    #: (about 3x at density 0.9 on CPU), and the list is no bigger than 2 bytes per element.
    index_fraction = 0.25

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        super().__init__(model, optimizer)
        self._inactive: dict[int, torch.Tensor] = {}  # id(param) -> flat indices of inactive positions

    def gather_full(
        self, params: Sequence[nn.Parameter], owners: Sequence[int], kind: Kind
    ) -> dict[int, torch.Tensor | None]:
        """Replicated already (DDP all-reduces the gradients): the owner reads its own tensors."""
        rank = self.rank
        out: dict[int, torch.Tensor | None] = {}
        for i, (p, owner) in enumerate(zip(params, owners, strict=True)):
            if owner == rank:
                out[i] = p.detach() if kind == "weight" else (None if p.grad is None else p.grad.detach())
        return out

    def prepare_masks(
        self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor], counts: Sequence[int]
    ) -> None:
        self._inactive = {}
        for p, m, n_active in zip(params, masks, counts, strict=True):
            if m.numel() - n_active <= self.index_fraction * m.numel():
                self._inactive[id(p)] = flat_nonzero(~m)

    def mask_grads(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
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
        with torch.no_grad():
            for p, m in zip(params, masks, strict=True):
                zero_outside(p.data, m)

    def mask_optimizer_state(self, param: nn.Parameter, keep: torch.Tensor) -> None:
        for value in self._state_tensors(param):
            zero_outside(value, keep)

    def clear_dropped(self, params: Sequence[nn.Parameter], dropped: Sequence[torch.Tensor]) -> None:
        # An update drops a small share of each tensor (about the prune rate times the share that does not
        # grow back): one index list per tensor, then scattered writes to the weight and each state tensor,
        # instead of a pass over all of them. This is the part of an update that every DDP rank repeats.
        with torch.no_grad():
            for p, d in zip(params, dropped, strict=True):
                positions = flat_nonzero(d)
                if positions.numel() == 0:
                    continue
                for tensor in [p.data, *self._state_tensors(p)]:
                    if tensor.is_contiguous():
                        tensor.view(-1).index_fill_(0, positions, 0.0)
                    else:
                        zero_outside(tensor, ~d)

    def _state_tensors(self, param: nn.Parameter) -> list[torch.Tensor]:
        """The optimizer's per-position state of ``param`` (Adam's moments; not step counters)."""
        if self.optimizer is None:
            return []
        state = self.optimizer.state.get(param, {})
        return [v for v in state.values() if torch.is_tensor(v) and v.shape == param.shape]


class ShardedEngine(Engine):
    """Engines where each rank holds a contiguous piece of every flattened full tensor.

    Subclasses say which piece (`local_piece`) and which part of a mask covers it (`local_mask`); `gather_full`
    sends every piece to the tensor's owner only: one all_gather of the piece addresses, then one `gather` per
    destination rank.
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        super().__init__(module, optimizer)
        self._local_masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(param) -> (mask, its local part)

    @abstractmethod
    def local_mask(self, param: nn.Parameter, mask: torch.Tensor) -> torch.Tensor:
        """The part of the full ``mask`` over the piece of ``param`` (weight, master weight) this rank holds."""

    def prepare_masks(
        self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor], counts: Sequence[int]
    ) -> None:
        # The local parts are the same at every step until the masks change: sliced (under ZeRO-3 padded) once.
        self._local_masks = {id(p): (m, self.local_mask(p, m)) for p, m in zip(params, masks, strict=True)}

    def _local(self, param: nn.Parameter, mask: torch.Tensor) -> torch.Tensor:
        """``local_mask`` from the cache when ``mask`` is the one prepared for ``param``."""
        cached = self._local_masks.get(id(param))
        return cached[1] if cached is not None and cached[0] is mask else self.local_mask(param, mask)

    @abstractmethod
    def local_piece(self, param: nn.Parameter, kind: Kind) -> tuple[int, torch.Tensor] | None:
        """(flat start, 1-D values) of the part of the full weight / reduced grad this rank holds."""

    def gather_full(
        self, params: Sequence[nn.Parameter], owners: Sequence[int], kind: Kind
    ) -> dict[int, torch.Tensor | None]:
        world, rank = self.world_size, self.rank
        pieces = [self.local_piece(p, kind) for p in params]
        device = comm_device(params[0].device if params else torch.device("cpu"))
        # (start, numel) of every piece on every rank: the receive sizes, known to all
        address = torch.tensor(
            [[-1, 0] if piece is None else [piece[0], piece[1].numel()] for piece in pieces], dtype=torch.int64
        ).reshape(-1, 2)
        if world > 1:
            table = [torch.empty_like(address) for _ in range(world)]
            dist.all_gather(table, address.to(device))
            addresses = [t.cpu() for t in table]
        else:
            addresses = [address]
        counts = [a[:, 1].tolist() for a in addresses]
        starts = [a[:, 0].tolist() for a in addresses]
        out: dict[int, torch.Tensor | None] = {}
        for dst in range(world):
            mine = [i for i, o in enumerate(owners) if o == dst]
            if not mine:
                continue
            width = max(sum(counts[src][i] for i in mine) for src in range(world))
            received: list[torch.Tensor] = []
            if width > 0:
                send = torch.zeros(width, dtype=torch.float32, device=device)
                held = [pieces[i] for i in mine if counts[rank][i] > 0]
                parts = [piece[1].to(device, torch.float32) for piece in held]
                if parts:
                    flat = torch.cat(parts)
                    send[: flat.numel()] = flat
                if world == 1:
                    received = [send]
                else:
                    received = [torch.empty_like(send) for _ in range(world)] if rank == dst else []
                    dist.gather(send, received if rank == dst else None, dst=dst)
            if rank != dst:
                continue
            for i in mine:
                out[i] = None
            offsets = [0] * world
            for i in mine:
                numel = self.shape(params[i]).numel()
                full = torch.empty(numel, dtype=torch.float32, device=device)
                covered = 0
                for src in range(world):
                    n = counts[src][i]
                    if n == 0:
                        continue
                    start = starts[src][i]
                    full[start : start + n] = received[src][offsets[src] : offsets[src] + n]
                    offsets[src] += n
                    covered += n
                if covered == 0:
                    continue  # no rank holds a gradient for it
                if covered != numel:
                    raise RuntimeError(f"DST gathered {covered} of {numel} values of a {kind}: pieces do not tile it")
                out[i] = full.view(self.shape(params[i]))
        return out


class ZeroEngine(ShardedEngine):
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

    def local_piece(self, param: nn.Parameter, kind: Kind) -> tuple[int, torch.Tensor] | None:
        if self.stage == 3:
            from deepspeed.utils import safe_get_local_fp32_param, safe_get_local_grad

            values = safe_get_local_fp32_param(param) if kind == "weight" else safe_get_local_grad(param)
            if values is None:
                return None
            start, size = self._zero3_partition(param)
            return start, values.reshape(-1)[: max(0, min(size, param.ds_numel - start))]  # without the padding
        mapping = getattr(param, "_hp_mapping", None)
        if mapping is None:  # this rank holds no fragment of the parameter
            return None
        address = mapping.lp_fragment_address
        if kind == "weight":
            return address.start, mapping.hp_fragment.reshape(-1)
        # the order of deepspeed.utils.safe_get_full_grad: BF16 accumulation buffer, whole reduced
        # .grad, else the partitioned gradient fragment
        if getattr(param, "_hp_grad", None) is None and param.grad is not None:
            grad = param.grad.reshape(-1)
        else:
            grad = mapping.get_lp_grad_fragment(param._index_in_param_group).reshape(-1)
        if grad.numel() == param.numel():  # whole-tensor buffer: contribute only this rank's part
            grad = grad.narrow(0, address.start, address.numel)
        return address.start, grad

    def mask_grads(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        """Mask this rank's partition of the reduced gradient, so Adam state stays zero off-mask."""
        with torch.no_grad():
            for p, m in zip(params, masks, strict=True):
                if self.stage == 3:
                    from deepspeed.utils import safe_get_local_grad, safe_set_local_grad

                    grad = safe_get_local_grad(p)
                    if grad is not None:
                        safe_set_local_grad(p, torch.where(self._local(p, m), grad, 0.0))
                    continue
                mapping = getattr(p, "_hp_mapping", None)
                if mapping is None:
                    continue
                grad = mapping.get_lp_grad_fragment(p._index_in_param_group)
                # bf16 keeps a whole-tensor accumulation buffer; ZeRO-1/2 keep only the fragment.
                local = m.reshape(-1) if grad.numel() == m.numel() else self._local(p, m)
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

                local = self.local_mask(param, keep)
                for key in self._zero3_state_keys(param):
                    state = safe_get_local_optimizer_state(param, key)
                    safe_set_local_optimizer_state(param, torch.where(local, state, 0.0), key)
                return
            mapping = getattr(param, "_hp_mapping", None)
            if mapping is None:  # this rank holds no fragment of the parameter
                return
            local = self.local_mask(param, keep)
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
            zero_outside(mapping.hp_fragment.data, self._local(p, mask))

    def _apply_mask_zero3(self, p: nn.Parameter, mask: torch.Tensor) -> None:
        from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

        local = self._local(p, mask)
        zero_outside(p.ds_tensor.data, local)
        if p.data.numel() == p.ds_numel:
            # Persistent (small) or currently gathered parameter: the module holds a whole copy too.
            zero_outside(p.data, mask.view(p.data.shape))
        master = safe_get_local_fp32_param(p)
        if master is not None:
            safe_set_local_fp32_param(p, torch.where(local, master, 0.0))

    def local_mask(self, param: nn.Parameter, mask: torch.Tensor) -> torch.Tensor:
        flat = mask.reshape(-1)
        if self.stage != 3:  # ZeRO-1/2: this rank's fragment of the flattened parameter
            mapping = getattr(param, "_hp_mapping", None)
            if mapping is None:  # this rank holds no fragment of it
                return flat[:0]
            address = mapping.lp_fragment_address
            return flat.narrow(0, address.start, address.numel)
        start, size = self._zero3_partition(param)
        piece = flat[start : start + size]
        if piece.numel() < size:  # the last partition's padding
            piece = torch.cat([piece, piece.new_zeros(size - piece.numel())])
        return piece

    def _zero3_partition(self, p: nn.Parameter) -> tuple[int, int]:
        """(flat start, size) of this rank's partition: ZeRO-3 splits the flattened parameter, padded to a
        multiple of the world size, into equal partitions, one per rank."""
        size = p.ds_tensor.ds_numel
        return size * self._ds_optimizer._get_param_partition_rank(p), size

    def _zero3_state_keys(self, p: nn.Parameter) -> list[str]:
        opt = self._ds_optimizer
        group_idx, _, _ = opt.grad_position[opt.get_param_id(p)]
        flat = opt.fp32_partitioned_groups_flat[group_idx]
        state = opt.optimizer.state.get(flat, {})
        return [k for k, v in state.items() if torch.is_tensor(v) and v.shape == flat.shape]


class FSDP2Engine(ShardedEngine):
    """torch FSDP2 (`fully_shard`): parameters, grads and optimizer state are DTensors sharded on dim 0."""

    def local_piece(self, param: nn.Parameter, kind: Kind) -> tuple[int, torch.Tensor] | None:
        tensor = param if kind == "weight" else param.grad
        if tensor is None:
            return None
        local = tensor.detach().to_local()
        start_row = self._start_row(param)
        return start_row * (param.numel() // max(1, param.shape[0])), local.reshape(-1)

    def mask_grads(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        for p, m in zip(params, masks, strict=True):
            if p.grad is not None:
                zero_outside(p.grad.to_local(), self._local(p, m))

    def apply_masks(self, params: Sequence[nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, m in zip(params, masks, strict=True):
                zero_outside(p.to_local(), self._local(p, m))

    def mask_optimizer_state(self, param: nn.Parameter, keep: torch.Tensor) -> None:
        if self.optimizer is None:
            return
        local_keep = self.local_mask(param, keep)
        for value in self.optimizer.state.get(param, {}).values():
            if torch.is_tensor(value) and value.shape == param.shape:
                zero_outside(value.to_local() if hasattr(value, "to_local") else value, local_keep)

    @staticmethod
    def _start_row(p: nn.Parameter) -> int:
        from torch.distributed.tensor import Shard

        placements = p.placements
        if len(placements) != 1 or not isinstance(placements[0], Shard) or placements[0].dim != 0:
            raise ValueError(f"FSDP2 DST supports one mesh dimension sharded on dim 0, got placements {placements}")
        # torch.chunk semantics: every rank but the last gets ceil(n / world) rows.
        rows = -(-p.shape[0] // p.device_mesh.size())
        return rows * p.device_mesh.get_local_rank()

    def local_mask(self, param: nn.Parameter, mask: torch.Tensor) -> torch.Tensor:
        start = self._start_row(param)
        return mask[start : start + param.to_local().shape[0]]


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8, 8 positions a byte (little-endian within the byte).

    On the CPU numpy's packbits (about 30x faster than the tensor arithmetic below, which serves other devices).
    """
    if mask.device.type == "cpu":
        return torch.from_numpy(np.packbits(mask.reshape(-1).numpy(), bitorder="little"))
    return _pack_bits_tensor(mask)


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The inverse of pack_bits for a tensor of `shape`."""
    if packed.device.type == "cpu":
        bits = np.unpackbits(packed.numpy(), count=shape.numel(), bitorder="little")
        return torch.from_numpy(bits.view(np.bool_)).view(shape)
    return _unpack_bits_tensor(packed, shape)


def _pack_bits_tensor(mask: torch.Tensor) -> torch.Tensor:
    flat = mask.reshape(-1)
    pad = -flat.numel() % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = torch.arange(8, dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8).to(torch.uint8) << shifts).sum(1, dtype=torch.uint8)


def _unpack_bits_tensor(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    powers = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=packed.device)
    bits = torch.ne(packed.unsqueeze(1) & powers, 0)  # two passes, straight to bool
    return bits.reshape(-1)[: shape.numel()].view(shape)


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Flat (int64) indices of the True positions of a bool tensor, in increasing order.

    On the CPU numpy's flatnonzero, about 3x faster than torch.nonzero there.
    """
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()).astype(np.int64, copy=False))
    return mask.reshape(-1).nonzero().squeeze(1)


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


def _is_deepspeed_engine(model: nn.Module) -> bool:
    cls_names = {c.__name__ for c in type(model).__mro__}
    return "DeepSpeedEngine" in cls_names


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor" or hasattr(t, "device_mesh")


def comm_device(default: torch.device) -> torch.device:
    """Where collective buffers live: the CPU under gloo, else next to the data (NCCL: the GPU)."""
    if _distributed() and dist.get_backend() == "gloo":
        return torch.device("cpu")
    return default


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@dataclass(frozen=True)
class EngineSpec:
    """How to recognise a prepared model that an engine serves, and how to build that engine."""

    matches: Callable[[nn.Module], bool]
    build: Callable[[nn.Module, torch.optim.Optimizer | None], Engine]
    #: tried only when no other engine matches (the replicated local engine)
    fallback: bool = False


ENGINES: Registry[EngineSpec] = Registry("engine")
ENGINES.register("deepspeed")(EngineSpec(lambda m: _is_deepspeed_engine(m), lambda m, o: ZeroEngine(m)))
ENGINES.register("fsdp2")(EngineSpec(lambda m: any(_is_dtensor(p) for p in unwrap_model(m).parameters()), FSDP2Engine))
ENGINES.register("local")(EngineSpec(lambda m: True, LocalEngine, fallback=True))


def detect_engine(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Engine:
    """The engine for a (prepared) model: the first registered match, else the fallback (plain / DDP)."""
    specs = [ENGINES.get(name) for name in ENGINES]
    for spec in [s for s in specs if not s.fallback] + [s for s in specs if s.fallback]:
        if spec.matches(model):
            return spec.build(model, optimizer)
    raise ValueError(f"no DST engine matches {type(model).__name__}; registered: {ENGINES.names()}")
