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

Between updates the only per-step work is zeroing the gradients of inactive positions (a list of
those positions when they are few): with their optimizer state zeroed at each update, SGD, Adam
and AdamW then leave the pruned weights exactly 0. `mask_weights_every_step` adds a pass over
the weights for optimizers that move zero-gradient weights.

Resuming: construct DynamicSparsity first, then restore model, optimizer and `load_state_dict`
(the order of `accelerator.register_for_checkpointing(sparsity)` + `accelerator.load_state`).
Construction applies a fresh random mask to the weights; restoring afterwards replaces it.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nt_llm.sparse.config import SparsityConfig
from nt_llm.sparse.criteria import GROWTH_SCORES, PRUNE_SCORES, random_mask, update_mask
from nt_llm.sparse.distribution import layer_densities, target_nonzeros
from nt_llm.sparse.engines import Engine, detect_engine
from nt_llm.sparse.schedules import interpolate

logger = logging.getLogger(__name__)


@dataclass
class UpdateStats:
    """What the last topology update did (counts summed over sparse tensors)."""

    step: int = 0
    pruned: int = 0
    grown: int = 0
    prune_rate: float = 0.0
    temperature: float = 0.0
    density: float = 0.0


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

    Masks are boolean tensors, one per selected parameter, identical on every rank (rank 0's are
    broadcast at each update). Steps count real optimizer steps only.
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
        named = dict(self.engine.named_parameters())
        self.names = select_parameters(list(named), config.include, config.exclude)
        self.params = [named[n] for n in self.names]
        self.shapes = {n: self.engine.shape(p) for n, p in zip(self.names, self.params, strict=True)}
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.last_update = UpdateStats()
        self._armed = False  # before_optimizer_step ran since the last after_optimizer_step
        # Optimizers create their state lazily at the first step (DeepSpeed from unmasked
        # gradients): mask it once more after the next step.
        self._state_pending = True

        self.targets = self._targets(config.density)
        self.masks = {
            n: random_mask(self.shapes[n], self.targets[n], self.generator, p.device)
            for n, p in zip(self.names, self.params, strict=True)
        }
        self.engine.broadcast_masks(list(self.masks.values()))
        self.ever_active = {n: m.clone() for n, m in self.masks.items()}
        self._masks_changed()
        self._apply_all()
        self.engine.install(self._pre_step, self._post_step)
        logger.info(
            "DST: %d sparse tensors, %d of %d weights active (density %.4f)",
            len(self.names),
            sum(self.targets.values()),
            self.numel,
            self.density,
        )

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
        self.engine.mask_grads(self.params, list(self.masks.values()))

    def _post_step(self) -> None:
        self.step += 1
        if self.config.mask_weights_every_step:
            self.engine.apply_masks(self.params, list(self.masks.values()))
        if self._state_pending:
            for n, p in zip(self.names, self.params, strict=True):
                self.engine.mask_optimizer_state(p, self.masks[n])
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

    def _targets(self, density: float) -> dict[str, int]:
        c = self.config
        densities = layer_densities(self.shapes, density, c.distribution, c.erk_power_scale)
        return {n: target_nonzeros(self.shapes[n].numel(), densities[n]) for n in self.names}

    # ---- topology update -----------------------------------------------------------------------

    @torch.no_grad()
    def update_topology(self, step: int | None = None) -> UpdateStats:
        """Prune and regrow every sparse tensor now, with the schedules at `step` (default: the next step).

        The hook calls it before optimizer steps N, 2N, ..., after backward: gradient growth reads
        the dense gradients then.
        """
        c = self.config
        step = self.step + 1 if step is None else step
        rate = self.prune_rate(step)
        temperature = self.temperature(step)
        density = self.target_density(step)
        targets = self._targets(density)
        prune_score = PRUNE_SCORES[c.prune]
        grow_score = GROWTH_SCORES[c.growth]
        new_masks: dict[str, torch.Tensor] = {}
        for n, p in zip(self.names, self.params, strict=True):
            mask = self.masks[n]
            n_active = self.counts[n]
            n_target = targets[n]
            if n_target == mask.numel() and n_active == n_target:
                new_masks[n] = mask  # dense tensor (ERK re-balancing): nothing to move
                continue
            n_prune = int(rate * n_active) + max(0, n_active - n_target)
            weight = self.engine.full_weight(p)  # collective under DeepSpeed: same order on every rank
            keep = prune_score(weight, temperature, self.generator)
            grad = self.engine.full_grad(p) if c.growth == "gradient" else None  # collective too
            grow = grow_score(grad, mask.shape, mask.device, self.generator)
            new_masks[n] = update_mask(mask, keep, grow, min(n_prune, n_active), n_target)
        self.engine.broadcast_masks(list(new_masks.values()))

        pruned = grown = 0
        for n, p in zip(self.names, self.params, strict=True):
            old, new = self.masks[n], new_masks[n]
            kept = old & new
            n_kept = int(torch.count_nonzero(kept))
            pruned += self.counts[n] - n_kept
            grown += targets[n] - n_kept
            self.engine.mask_optimizer_state(p, kept)
            self.masks[n] = new
            self.ever_active[n] |= new
        self.targets = targets
        self._masks_changed()
        self.engine.apply_masks(self.params, list(self.masks.values()))
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
        for n, p in zip(self.names, self.params, strict=True):
            self.engine.mask_optimizer_state(p, self.masks[n])
        self.engine.apply_masks(self.params, list(self.masks.values()))

    # ---- statistics ----------------------------------------------------------------------------

    @property
    def numel(self) -> int:
        return sum(s.numel() for s in self.shapes.values())

    @property
    def density(self) -> float:
        return sum(self.counts.values()) / self.numel

    def _masks_changed(self) -> None:
        """Cache counts and the engine's per-step form of the masks (they change only at updates)."""
        self.counts = {n: int(torch.count_nonzero(m)) for n, m in self.masks.items()}
        self._ever_count = sum(int(torch.count_nonzero(m)) for m in self.ever_active.values())
        self.engine.prepare_masks(self.params, list(self.masks.values()), [self.counts[n] for n in self.names])

    def stats(self, per_tensor: bool = True) -> dict[str, float]:
        """Scalars for a tracker, keyed `sparsity/...` (cheap: counts are cached at mask changes)."""
        active = sum(self.counts.values())
        ever = self._ever_count
        last = self.last_update
        out = {
            "sparsity/density": active / self.numel,
            "sparsity/itop_rate": ever / self.numel,  # in-time over-parameterisation: ever-active fraction
            "sparsity/pruned": float(last.pruned),
            "sparsity/grown": float(last.grown),
            # fraction of the active weights that the last update replaced
            "sparsity/mask_change": last.grown / max(1, active),
            "sparsity/prune_rate": self.prune_rate(self.step),
            "sparsity/temperature": self.temperature(self.step),
            "sparsity/last_update_step": float(last.step),
        }
        if per_tensor:
            for n, m in self.masks.items():
                out[f"sparsity/density/{n}"] = self.counts[n] / m.numel()
        return out

    # ---- checkpointing -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "masks": {n: m.cpu().clone() for n, m in self.masks.items()},
            "ever_active": {n: m.cpu().clone() for n, m in self.ever_active.items()},
            "targets": dict(self.targets),
            "generator": self.generator.get_state(),
            "last_update": vars(self.last_update).copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore masks, counters and RNG; re-applies the masks to weights and optimizer state."""
        names = set(state["masks"])
        if names != set(self.names):
            missing, extra = sorted(set(self.names) - names), sorted(names - set(self.names))
            raise ValueError(f"DST state does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
        for n in self.names:
            if tuple(state["masks"][n].shape) != tuple(self.shapes[n]):
                raise ValueError(
                    f"DST mask {n!r} has shape {tuple(state['masks'][n].shape)}, parameter has {tuple(self.shapes[n])}"
                )
        if state["config"] != self.config.to_dict():
            logger.warning("DST state was saved with a different SparsityConfig; continuing with the current one")
        device = {n: m.device for n, m in self.masks.items()}
        self.masks = {n: state["masks"][n].to(device[n]).bool() for n in self.names}
        self.ever_active = {n: state["ever_active"][n].to(device[n]).bool() for n in self.names}
        self.targets = {n: int(state["targets"][n]) for n in self.names}
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])
        self.last_update = UpdateStats(**state["last_update"])
        self._state_pending = True
        self._masks_changed()
        self._apply_all()
