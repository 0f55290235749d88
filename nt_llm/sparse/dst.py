"""DynamicSparsity: owns the masks and schedules, and is called around every real optimizer step.

Usage with accelerate (after `accelerator.prepare`)::

    sparsity = DynamicSparsity(model, SparsityConfig(...), optimizer)
    for batch in loader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)          # DeepSpeed steps in here: the hooks run inside it
            if accelerator.sync_gradients:
                sparsity.before_optimizer_step()  # topology update every N steps; grads masked
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # after: clips active grads only
                optimizer.step()
                sparsity.after_optimizer_step(optimizer.step_was_skipped)  # counts the step
            optimizer.zero_grad()

Under DeepSpeed the two calls are no-ops: the engine's own `step` is wrapped to run them.

Between updates the only per-step work is zeroing the gradients of inactive positions (LocalEngine:
through a list of those positions when they are few; the sharded engines mask their local slices):
with their optimizer state zeroed at each update, SGD, Adam and AdamW then leave the pruned weights
exactly 0. `mask_weights_every_step` adds a pass over the weights for optimizers that move
zero-gradient weights.

Mask updates are split over ranks (see engines.py): each tensor is scored and selected by one
owner rank (owners balance each update's work by size), with its own random stream seeded from
(config.seed, the tensor's name, the update step), so the masks are the same on every rank and the
same as a single-process run's, whatever the world size. The streams need no saved state: resuming
is exact by construction. What every rank repeats afterwards is proportional to what changed:
weights and optimizer state are zeroed only at the positions that left the masks.

Resuming: construct DynamicSparsity first, then restore model, optimizer and `load_state_dict`
(the order of `accelerator.register_for_checkpointing(sparsity)` + `accelerator.load_state`).
Construction applies a fresh random mask to the weights; restoring afterwards replaces it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nt_llm.sparse.config import SparsityConfig
from nt_llm.sparse.criteria import GROWTH_CRITERIA, PRUNE_CRITERIA, random_mask, update_mask
from nt_llm.sparse.distribution import layer_densities, target_nonzeros
from nt_llm.sparse.engines import Engine, assign_owners, detect_engine
from nt_llm.sparse.schedules import interpolate

logger = logging.getLogger(__name__)

#: Layout of `DynamicSparsity.state_dict()`. 1 (no "format" key) kept one global generator state;
#: 2 derives every random stream from (seed, name, step) and saves none.
STATE_FORMAT = 2


@dataclass
class UpdateStats:
    """What the last topology update did (counts summed over sparse tensors)."""

    step: int = 0
    pruned: int = 0
    grown: int = 0
    prune_rate: float = 0.0
    temperature: float = 0.0
    density: float = 0.0


@dataclass(eq=False)
class SparseTensor:
    """One sparse parameter: its mask and everything DST tracks about it."""

    name: str
    param: nn.Parameter
    shape: torch.Size
    mask: torch.Tensor  # bool, full shape, identical on every rank
    ever_active: torch.Tensor  # bool: positions active at any time so far (in-time over-parameterisation)
    target: int  # nonzeros it must hold
    count: int  # nonzeros it holds (== target after every update)

    @property
    def numel(self) -> int:
        return self.shape.numel()


def stream_seed(seed: int, name: str, step: int) -> int:
    """Seed of a tensor's random stream at an update: a digest, stable across processes and runs
    (Python's hash() is salted per process)."""
    digest = hashlib.sha256(f"{seed}/{name}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def tensor_generator(seed: int, name: str, step: int, device: torch.device) -> torch.Generator:
    """The tensor's stream at `step`, on the device its random numbers are used on."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, name, step))


def select_parameters(names: list[str], include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """Names matching any include glob and no exclude glob; every pattern must match some name."""
    for kind, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ValueError(
                    f"SparsityConfig.{kind} pattern {pattern!r} matches no parameter; parameters are e.g. {names[:5]}"
                )
    selected = [
        n
        for n in names
        if any(fnmatch.fnmatchcase(n, p) for p in include) and not any(fnmatch.fnmatchcase(n, p) for p in exclude)
    ]
    if not selected:
        raise ValueError("SparsityConfig.include/exclude leave no parameter to sparsify")
    return selected


class DynamicSparsity:
    """Masks, schedules and the optimizer-step hooks of dynamic sparse training (RigL / SET).

    Masks are boolean tensors, one per selected parameter (`records`), identical on every rank.
    Steps count real optimizer steps only.
    """

    def __init__(
        self,
        model: nn.Module,
        config: SparsityConfig,
        optimizer: torch.optim.Optimizer | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.config = config
        self.engine = engine if engine is not None else detect_engine(model, optimizer)
        self.prune_criterion = PRUNE_CRITERIA.get(config.prune)()
        self.growth_criterion = GROWTH_CRITERIA.get(config.growth)()
        named = dict(self.engine.named_parameters())
        names = select_parameters(list(named), config.include, config.exclude)
        shapes = {n: self.engine.shape(named[n]) for n in names}
        targets = self._targets_for(shapes, config.density)
        # initial topology: every tensor that is not dense is drawn by its owner from its step-0 stream
        drawn = [n for n in names if targets[n] < shapes[n].numel()]
        owners = assign_owners([shapes[n].numel() for n in drawn], self.engine.world_size)
        own = {
            i: random_mask(shapes[n], targets[n], self._generator(n, 0, named[n].device), named[n].device)
            for i, (n, owner) in enumerate(zip(drawn, owners, strict=True))
            if owner == self.engine.rank
        }
        shared = self.engine.share_masks(own, owners, [shapes[n] for n in drawn], named[names[0]].device)
        masks = dict(zip(drawn, shared, strict=True))
        #: the rank that drew or updated each tensor's mask last time (dense tensors have nothing to do: absent)
        self.last_owners: dict[str, int] = dict(zip(drawn, owners, strict=True))
        self.records = []
        for n in names:
            mask = masks.get(n)
            if mask is None:
                mask = torch.ones(shapes[n], dtype=torch.bool, device=named[n].device)
            self.records.append(SparseTensor(n, named[n], shapes[n], mask, mask.clone(), targets[n], targets[n]))
        self._params = [r.param for r in self.records]  # the sparse parameters never change, their masks do
        self.step = 0
        self.last_update = UpdateStats()
        self._armed = False  # before_optimizer_step ran since the last after_optimizer_step
        # Optimizers create their state lazily at the first step (DeepSpeed from unmasked
        # gradients): mask it once more after the next step.
        self._state_pending = True
        self._masks_changed()
        self._apply_all()
        self.engine.install(self._pre_step, self._post_step)
        logger.info(
            "DST: %d sparse tensors over %d ranks, %d of %d weights active (density %.4f)",
            len(self.records),
            self.engine.world_size,
            sum(r.target for r in self.records),
            self.numel,
            self.density,
        )

    # ---- views by name (the public, read-only face of the records) ------------------------------

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    @property
    def params(self) -> list[nn.Parameter]:
        return self._params

    @property
    def shapes(self) -> dict[str, torch.Size]:
        return {r.name: r.shape for r in self.records}

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return {r.name: r.mask for r in self.records}

    @property
    def ever_active(self) -> dict[str, torch.Tensor]:
        return {r.name: r.ever_active for r in self.records}

    @property
    def targets(self) -> dict[str, int]:
        return {r.name: r.target for r in self.records}

    @property
    def counts(self) -> dict[str, int]:
        return {r.name: r.count for r in self.records}

    # ---- hooks ---------------------------------------------------------------------------------

    def before_optimizer_step(self) -> None:
        """Call right before `optimizer.step()` on real (synchronised) steps; no-op under DeepSpeed."""
        if not self.engine.drives_hooks:
            self._pre_step()
            self._armed = True

    def after_optimizer_step(self, step_was_skipped: bool = False) -> None:
        """Call right after `optimizer.step()` on real steps; pass accelerate's `optimizer.step_was_skipped`."""
        if self.engine.drives_hooks:
            return
        if not self._armed:
            # unmasked gradients would have let the step move pruned weights
            raise RuntimeError("after_optimizer_step() without before_optimizer_step() before the optimizer step")
        self._armed = False
        if step_was_skipped:
            return  # an overflowed step moved nothing and does not count
        self._post_step()

    def _pre_step(self) -> None:
        # The topology changes right before optimizer step N, 2N, ...: RigL's dense gradient exists
        # only now (DeepSpeed frees it in the step), and the step then trains the new topology,
        # grown weights starting from 0 with zeroed optimizer state. A step that was skipped
        # (fp16 overflow) is retried with the same step number: do not update twice.
        upcoming = self.step + 1
        if self.is_update_step(upcoming) and self.last_update.step != upcoming:
            self.update_topology(upcoming)
        self.engine.mask_grads(self._params, self._mask_list)

    def _post_step(self) -> None:
        self.step += 1
        if self.config.mask_weights_every_step:
            self.engine.apply_masks(self._params, self._mask_list)
        if self._state_pending:
            for r in self.records:
                self.engine.mask_optimizer_state(r.param, r.mask)
            self._state_pending = False

    # ---- schedules -----------------------------------------------------------------------------

    def is_update_step(self, step: int) -> bool:
        """Topology changes right before optimizer steps N, 2N, ... up to the stop step."""
        return step > 0 and step % self.config.update_frequency == 0 and step <= self.config.last_update_step

    def _progress(self, step: int) -> float:
        return step / max(1, self.config.last_update_step)

    def prune_rate(self, step: int) -> float:
        c = self.config
        return interpolate(c.prune_rate_decay, c.prune_rate, c.prune_rate_floor, self._progress(step))

    def temperature(self, step: int) -> float:
        c = self.config
        if c.final_temperature is None:
            return c.temperature
        return interpolate(c.temperature_schedule, c.temperature, c.final_temperature, self._progress(step))

    def target_density(self, step: int) -> float:
        c = self.config
        if c.final_density is None:
            return c.density
        return interpolate(c.density_schedule, c.density, c.final_density, self._progress(step))

    def _targets_for(self, shapes: dict[str, torch.Size], density: float) -> dict[str, int]:
        c = self.config
        densities = layer_densities(shapes, density, c.distribution, c.erk_power_scale)
        return {n: target_nonzeros(shape.numel(), densities[n]) for n, shape in shapes.items()}

    def _generator(self, name: str, step: int, device: torch.device) -> torch.Generator:
        return tensor_generator(self.config.stream_seed, name, step, device)

    # ---- topology update -----------------------------------------------------------------------

    @torch.no_grad()
    def update_topology(self, step: int | None = None) -> UpdateStats:
        """Prune and regrow every sparse tensor now, with the schedules at `step` (default: the next step).

        The hook calls it before optimizer steps N, 2N, ..., after backward: gradient growth reads
        the dense gradients then. Every rank must call it (it is a collective when distributed);
        each scores only the tensors it owns.
        """
        step = self.step + 1 if step is None else step
        rate = self.prune_rate(step)
        temperature = self.temperature(step)
        targets = self._targets_for(self.shapes, self.target_density(step))
        rank = self.engine.rank
        # a dense tensor at a dense target (ERK re-balancing) has nothing to move
        work = [r for r in self.records if not (targets[r.name] == r.numel and r.count == r.numel)]
        # owners balance this update's work: the tensors that are dense at a dense target count for nothing
        owners = assign_owners([r.numel for r in work], self.engine.world_size)
        params = [r.param for r in work]
        weights = self.engine.gather_full(params, owners, "weight")
        grads = self.engine.gather_full(params, owners, "grad") if self.growth_criterion.needs_dense_grad else {}
        new_masks: dict[int, torch.Tensor] = {}
        for i, (r, owner) in enumerate(zip(work, owners, strict=True)):
            if owner != rank:
                continue
            n_target = targets[r.name]
            n_prune = min(r.count, int(rate * r.count) + max(0, r.count - n_target))
            generator = self._generator(r.name, step, r.mask.device)  # prune draws first, growth after
            keep = self.prune_criterion.scores(weights.pop(i).to(r.mask.device), temperature, generator)
            grad = grads.pop(i, None)
            grow = self.growth_criterion.scores(
                None if grad is None else grad.to(r.mask.device), r.shape, r.mask.device, generator
            )
            new_masks[i] = update_mask(r.mask, keep, grow, n_prune, n_target, n_active=r.count)
            del keep, grow, grad
        device = work[0].mask.device if work else torch.device("cpu")
        shared = self.engine.share_masks(new_masks, owners, [r.shape for r in work], device)

        # Every rank from here: work in proportion to what changed. Dropped = active before, not after (a pruned
        # position that grew back keeps its weight and state); one device sync for all their counts.
        dropped = [r.mask > new for r, new in zip(work, shared, strict=True)]
        n_dropped = torch.stack([torch.count_nonzero(d) for d in dropped]).tolist() if dropped else []
        pruned = sum(n_dropped)
        grown = sum(targets[r.name] - (r.count - n) for r, n in zip(work, n_dropped, strict=True))
        self.engine.clear_dropped(params, dropped)
        del dropped
        for r, new in zip(work, shared, strict=True):
            r.mask = new
            r.ever_active |= new
        for r in self.records:
            r.target = targets[r.name]
            r.count = r.target  # selection is exact
        self._masks_changed()
        self.last_owners = {r.name: owner for r, owner in zip(work, owners, strict=True)}
        self.last_update = UpdateStats(step, pruned, grown, rate, temperature, self.density)
        logger.info(
            "DST step %d: pruned %d, grown %d (prune rate %.4f, T %.3g, density %.4f)",
            step,
            pruned,
            grown,
            rate,
            temperature,
            self.density,
        )
        return self.last_update

    def _apply_all(self) -> None:
        for r in self.records:
            self.engine.mask_optimizer_state(r.param, r.mask)
        self.engine.apply_masks(self._params, self._mask_list)

    # ---- statistics ----------------------------------------------------------------------------

    @property
    def numel(self) -> int:
        return sum(r.numel for r in self.records)

    @property
    def density(self) -> float:
        return sum(r.count for r in self.records) / self.numel

    def _masks_changed(self) -> None:
        """Refresh the per-step mask list and the engine's per-step form of the masks; the ever-active count is
        recounted when stats() next asks."""
        self._mask_list = [r.mask for r in self.records]
        self._ever_count: int | None = None  # counted when stats() asks: a pass over every mask
        self.engine.prepare_masks(self._params, self._mask_list, [r.count for r in self.records])

    def stats(self, per_tensor: bool = True) -> dict[str, float]:
        """Scalars for a tracker, keyed `sparsity/...` (active counts are kept; the first call after a mask update
        counts the ever-active positions once)."""
        active = sum(r.count for r in self.records)
        if self._ever_count is None:
            self._ever_count = int(torch.stack([torch.count_nonzero(r.ever_active) for r in self.records]).sum())
        last = self.last_update
        out = {
            "sparsity/density": active / self.numel,
            "sparsity/itop_rate": self._ever_count / self.numel,  # in-time over-parameterisation
            "sparsity/pruned": float(last.pruned),
            "sparsity/grown": float(last.grown),
            # fraction of the active weights that the last update replaced
            "sparsity/mask_change": last.grown / max(1, active),
            "sparsity/prune_rate": self.prune_rate(self.step),
            "sparsity/temperature": self.temperature(self.step),
            "sparsity/last_update_step": float(last.step),
        }
        if per_tensor:
            for r in self.records:
                out[f"sparsity/density/{r.name}"] = r.count / r.numel
        return out

    # ---- checkpointing -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "step": self.step,
            "masks": {r.name: r.mask.cpu().clone() for r in self.records},
            "ever_active": {r.name: r.ever_active.cpu().clone() for r in self.records},
            "targets": {r.name: r.target for r in self.records},
            "last_update": vars(self.last_update).copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore masks, counters and schedule position; re-applies the masks to weights and optimizer state.

        A format-1 state (one global generator, no "format" key) is converted: masks, counters and
        schedules carry over, and later random draws follow this version's per-tensor streams (so
        they differ from what the old version would have drawn; a warning says so).
        """
        version = state.get("format", 1)
        if version == 1:
            if "generator" not in state:
                raise ValueError("DST state has neither a 'format' nor a 'generator' key: not a DynamicSparsity state")
            logger.warning(
                "DST state has the old layout (one global generator): converted; masks and schedules are restored, "
                "later random choices use per-tensor streams and will differ from the old version's"
            )
        elif version != STATE_FORMAT:
            raise ValueError(f"DST state format {version!r} is not supported (this version reads 1 and {STATE_FORMAT})")
        names = set(state["masks"])
        own = {r.name for r in self.records}
        if names != own:
            missing, extra = sorted(own - names), sorted(names - own)
            raise ValueError(f"DST state does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
        for r in self.records:
            saved = tuple(state["masks"][r.name].shape)
            if saved != tuple(r.shape):
                raise ValueError(f"DST mask {r.name!r} has shape {saved}, parameter has {tuple(r.shape)}")
        if state["config"] != self.config.to_dict():
            logger.warning("DST state was saved with a different SparsityConfig; continuing with the current one")
        for r in self.records:
            r.mask = state["masks"][r.name].to(r.mask.device).bool()
            r.ever_active = state["ever_active"][r.name].to(r.mask.device).bool()
            r.target = int(state["targets"][r.name])
        counts = torch.stack([torch.count_nonzero(r.mask) for r in self.records]).tolist()
        for r, n in zip(self.records, counts, strict=True):
            r.count = int(n)
        self.step = int(state["step"])
        self.last_update = UpdateStats(**state["last_update"])
        self._state_pending = True
        self._masks_changed()
        self._apply_all()
