"""Dynamic sparse training (RigL / SET) for any nn.Module, selected by parameter-name patterns."""

from nt_llm.sparse.config import NEUROTRAILS_ALL, NEUROTRAILS_HEADS, SparsityConfig
from nt_llm.sparse.dst import DynamicSparsity, UpdateStats, select_parameters
from nt_llm.sparse.engines import DeepSpeedEngineAdapter, Engine, FSDP2Engine, detect_engine

__all__ = [
    "NEUROTRAILS_ALL",
    "NEUROTRAILS_HEADS",
    "DeepSpeedEngineAdapter",
    "DynamicSparsity",
    "Engine",
    "FSDP2Engine",
    "SparsityConfig",
    "UpdateStats",
    "detect_engine",
    "select_parameters",
]
