"""The one tiny model shape of the tests, and a factory for configs and size files around it.

A test passes only what it really needs to differ (vocabulary of its tokenizer, GQA, depth, context).
"""

from pathlib import Path
from typing import Any

import yaml

from nt_llm.modeling import NeuroTrailsConfig

# A size file's fields (as nt_llm/resources/models/*.yaml): no vocabulary, which a recipe takes from its tokenizer.
TINY_SIZE: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "max_position_embeddings": 64,
}
# LlamaConfig / NeuroTrailsConfig fields of a model built without a tokenizer; 97 is prime, so no
# vocabulary-sized dimension can be mistaken for another one in a shape assertion.
TINY_FIELDS: dict[str, Any] = {**TINY_SIZE, "vocab_size": 97}
# The modeling tests' shape: grouped-query attention (2 KV heads for 4 query heads), as LLaMA-2/3 use it.
TINY_GQA_FIELDS: dict[str, Any] = {**TINY_FIELDS, "num_key_value_heads": 2}


def tiny_config(ensemble_size: int = 3, head_layers: int = 2, **overrides: Any) -> NeuroTrailsConfig:
    """3 heads of 2 blocks over 1 shared block at the tiny shape; ``overrides`` replace any config field."""
    return NeuroTrailsConfig(**{**TINY_FIELDS, **overrides}, ensemble_size=ensemble_size, head_layers=head_layers)


def tiny_size_file(folder: Path, name: str = "tiny_size.yaml", **overrides: Any) -> str:
    """``TINY_SIZE`` with ``overrides`` written as a size file (what ``model.size`` and ``build_config`` read)."""
    path = Path(folder) / name
    path.write_text(yaml.safe_dump({**TINY_SIZE, **overrides}))
    return str(path)
