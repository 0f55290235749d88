"""Dynamic sparse training (RigL / SET) for any nn.Module, selected by parameter-name patterns."""

from nt_llm.sparse.config import NEUROTRAILS_ALL, NEUROTRAILS_HEADS, SparsityConfig
from nt_llm.sparse.criteria import GROWTH_CRITERIA, PRUNE_CRITERIA, GrowthCriterion, PruneCriterion
from nt_llm.sparse.distribution import DISTRIBUTIONS
from nt_llm.sparse.dst import DynamicSparsity, SparseTensor, UpdateStats, select_parameters
from nt_llm.sparse.engines import (
    ENGINES,
    Engine,
    EngineSpec,
    FSDP2Engine,
    LocalEngine,
    ShardedEngine,
    ZeroEngine,
    assign_owners,
    detect_engine,
)
from nt_llm.sparse.schedules import SCHEDULES

__all__ = [
    "DISTRIBUTIONS",
    "ENGINES",
    "GROWTH_CRITERIA",
    "NEUROTRAILS_ALL",
    "NEUROTRAILS_HEADS",
    "PRUNE_CRITERIA",
    "SCHEDULES",
    "DynamicSparsity",
    "Engine",
    "EngineSpec",
    "FSDP2Engine",
    "GrowthCriterion",
    "LocalEngine",
    "PruneCriterion",
    "ShardedEngine",
    "SparseTensor",
    "SparsityConfig",
    "UpdateStats",
    "ZeroEngine",
    "assign_owners",
    "detect_engine",
    "select_parameters",
]
