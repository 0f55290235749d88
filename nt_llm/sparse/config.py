"""SparsityConfig: everything that determines a dynamic sparse training run, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nt_llm.sparse.criteria import GROWTH_CRITERIA, PRUNE_CRITERIA
from nt_llm.sparse.distribution import DISTRIBUTIONS
from nt_llm.sparse.registry import Registry
from nt_llm.sparse.schedules import SCHEDULES

# NeuroTrails' design: the heads' decoder projections and LM heads are sparse; backbone, embedding
# and norms stay dense.
NEUROTRAILS_HEADS = (
    "heads.*.layers.*.self_attn.*_proj.weight",
    "heads.*.layers.*.mlp.*_proj.weight",
    "heads.*.lm_head.weight",
)
# The paper's code also sparsifies the backbone and the embeddings.
NEUROTRAILS_ALL = NEUROTRAILS_HEADS + (
    "backbone.*.self_attn.*_proj.weight",
    "backbone.*.mlp.*_proj.weight",
    "*embed_tokens.weight",
)


def all_weights_scope(backbone: bool) -> tuple[str, ...]:
    """The paper's scope, every 2-D weight, for a model with or without shared blocks: when the heads take the whole
    depth there is no backbone for its patterns to match, and a pattern that matches nothing is refused."""
    return NEUROTRAILS_ALL if backbone else tuple(p for p in NEUROTRAILS_ALL if not p.startswith("backbone."))


# The paper's dynamic sparse training (its LLM script, scripts/train_llm.sh, and sparselearning): ERK densities,
# soft-magnitude pruning at temperature 3, RigL (gradient) growth, a prune rate of 0.5 decayed by a cosine. The one
# place these are written: SparsityConfig's defaults are read from here, the study (nt_llm.study.reproduce) builds
# its NeuroTrails runs with them, and tests hold recipes/neurotrails_*.yaml to them.
PAPER_DST: dict[str, Any] = {
    "distribution": "erk",
    "prune": "soft_magnitude",
    "temperature": 3.0,
    "growth": "gradient",
    "prune_rate": 0.5,
    "prune_rate_decay": "cosine",
}


@dataclass
class SparsityConfig:
    """Dynamic sparse training settings; defaults are the paper's NeuroTrails LLM recipe (``PAPER_DST``, density 0.9).

    Steps count real optimizer steps (gradient-accumulation micro-steps do not count).
    """

    density: float = 0.9
    distribution: str = PAPER_DST["distribution"]
    erk_power_scale: float = 1.0
    prune: str = PAPER_DST["prune"]
    growth: str = PAPER_DST["growth"]
    temperature: float = PAPER_DST["temperature"]
    final_temperature: float | None = None  # None: temperature stays constant
    temperature_schedule: str = "linear"
    prune_rate: float = PAPER_DST["prune_rate"]
    prune_rate_decay: str = PAPER_DST["prune_rate_decay"]
    prune_rate_floor: float = 0.0
    final_density: float | None = None  # None: no gradual sparsification
    density_schedule: str = "cosine"
    update_frequency: int = 50
    total_steps: int = 1000
    end_fraction: float = 1.0  # topology updates stop at end_fraction * total_steps ...
    stop_step: int | None = None  # ... unless given explicitly
    # Zeroing the gradients (and, at updates, the optimizer state) of inactive positions keeps
    # their weights exactly 0 under SGD/Adam/AdamW; re-zeroing the weights after every step too
    # costs one more pass and is needed only for optimizers that move zero-gradient weights.
    mask_weights_every_step: bool = False
    include: tuple[str, ...] = field(default_factory=lambda: NEUROTRAILS_HEADS)
    exclude: tuple[str, ...] = ()
    # The masks' random streams (initial masks, SET's growth, ties). None: the run's seed (the training recipe
    # fills it from run.seed); a SparsityConfig used on its own reads 0.
    seed: int | None = None

    def __post_init__(self) -> None:
        self.include = tuple(self.include)
        self.exclude = tuple(self.exclude)
        _in_range("density", self.density, 0.0, 1.0, low_open=True)
        _choice("distribution", self.distribution, DISTRIBUTIONS)
        if self.erk_power_scale < 0:
            raise ValueError(f"SparsityConfig.erk_power_scale must be >= 0, got {self.erk_power_scale}")
        _choice("prune", self.prune, PRUNE_CRITERIA)
        _choice("growth", self.growth, GROWTH_CRITERIA)
        if self.temperature < 0:
            raise ValueError(f"SparsityConfig.temperature must be >= 0, got {self.temperature}")
        if self.final_temperature is not None and self.final_temperature < 0:
            raise ValueError(f"SparsityConfig.final_temperature must be >= 0, got {self.final_temperature}")
        _choice("temperature_schedule", self.temperature_schedule, SCHEDULES)
        _in_range("prune_rate", self.prune_rate, 0.0, 1.0)
        _choice("prune_rate_decay", self.prune_rate_decay, SCHEDULES)
        _in_range("prune_rate_floor", self.prune_rate_floor, 0.0, 1.0)
        if self.prune_rate_floor > self.prune_rate:
            raise ValueError(
                f"SparsityConfig.prune_rate_floor ({self.prune_rate_floor}) must not exceed "
                f"prune_rate ({self.prune_rate})"
            )
        if self.final_density is not None:
            _in_range("final_density", self.final_density, 0.0, 1.0, low_open=True)
            if self.final_density > self.density:
                raise ValueError(
                    f"SparsityConfig.final_density ({self.final_density}) must not exceed density ({self.density}): "
                    "density decay only sparsifies"
                )
        _choice("density_schedule", self.density_schedule, SCHEDULES)
        if self.update_frequency < 1:
            raise ValueError(f"SparsityConfig.update_frequency must be >= 1, got {self.update_frequency}")
        if self.total_steps < 1:
            raise ValueError(f"SparsityConfig.total_steps must be >= 1, got {self.total_steps}")
        _in_range("end_fraction", self.end_fraction, 0.0, 1.0)
        if self.stop_step is not None and self.stop_step < 0:
            raise ValueError(f"SparsityConfig.stop_step must be >= 0, got {self.stop_step}")
        if not self.include:
            raise ValueError("SparsityConfig.include must name at least one parameter pattern")
        for name in ("include", "exclude"):
            bad = [p for p in getattr(self, name) if not isinstance(p, str) or not p]
            if bad:
                raise ValueError(f"SparsityConfig.{name} must hold non-empty strings, got {bad!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"SparsityConfig.seed must be an integer or None (the run's seed), got {self.seed!r}")

    @property
    def stream_seed(self) -> int:
        """The seed of the masks' random streams: ``seed``, or 0 when it is left to a run that did not fill it."""
        return 0 if self.seed is None else self.seed

    @property
    def last_update_step(self) -> int:
        """Optimizer step after which the topology is frozen."""
        if self.stop_step is not None:
            return self.stop_step
        return int(self.end_fraction * self.total_steps)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["include"] = list(self.include)
        out["exclude"] = list(self.exclude)
        return out


def _choice(name: str, value: str, registry: Registry) -> None:
    # read at construction: names registered at run time are accepted like the built-in ones
    if value not in registry:
        raise ValueError(
            f"SparsityConfig.{name} must be one of the registered {registry.kind} names {registry.names()}, "
            f"got {value!r}"
        )


def _in_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"SparsityConfig.{name} must be in {bracket}{low}, {high}], got {value}")
