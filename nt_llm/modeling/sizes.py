"""Model sizes by name (``recipes/models/<name>.yaml``) and the paper's methods as configs."""

from pathlib import Path

import yaml

from nt_llm.modeling.configuration_neurotrails import NeuroTrailsConfig

SIZES_DIR = Path(__file__).resolve().parents[2] / "recipes" / "models"
METHODS = ("dense", "treenet", "neurotrails", "full_ensemble")


def available_sizes() -> list[str]:
    """Names of the sizes in ``recipes/models``."""
    return sorted(path.stem for path in SIZES_DIR.glob("*.yaml"))


def load_size(name_or_path: str) -> dict:
    """LlamaConfig fields of a size: a name from ``recipes/models`` (``"130m"``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SIZES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"unknown model size {name_or_path!r}: no file {path}; "
            f"known sizes: {', '.join(available_sizes()) or 'none'}"
        )
    fields = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(fields, dict):
        raise ValueError(f"model size file {path} must hold a mapping of LlamaConfig fields")
    return fields


def build_config(
    size: str,
    method: str,
    ensemble_size: int = 3,
    head_layers: int | None = None,
    **overrides,
) -> NeuroTrailsConfig:
    """A ``NeuroTrailsConfig`` for one of the paper's methods at a named size.

    dense: one model (H=1). treenet / neurotrails: shared backbone, H heads of ``head_layers`` blocks (the same
    model; NeuroTrails adds sparsity in training). full_ensemble: H independent models, nothing shared.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    fields = {**load_size(size), **overrides}
    depth = fields.get("num_hidden_layers")
    if method == "dense":
        shape = {"ensemble_size": 1, "head_layers": depth}
    elif method == "full_ensemble":
        shape = {"ensemble_size": ensemble_size, "head_layers": depth, "share_embeddings": False}
    else:
        shape = {"ensemble_size": ensemble_size, "head_layers": head_layers}
    return NeuroTrailsConfig(**fields, **shape)
