"""Model sizes by name (package data, ``nt_llm/resources/models/<name>.yaml``) and the paper's methods as configs."""

from importlib.resources import files
from pathlib import Path

import yaml

from nt_llm.modeling.configuration_neurotrails import NeuroTrailsConfig

# Shipped inside the package (a wheel has no recipes/ folder beside it); read through importlib.resources so that
# an installed wheel, an editable install and a source checkout all find them.
SIZES_DIR = files("nt_llm") / "resources" / "models"
METHODS = ("dense", "treenet", "neurotrails", "full_ensemble")


def available_sizes() -> list[str]:
    """Names of the sizes shipped with the package."""
    return sorted(item.name[: -len(".yaml")] for item in SIZES_DIR.iterdir() if item.name.endswith(".yaml"))


def load_size(name_or_path: str) -> dict:
    """LlamaConfig fields of a size: a shipped name (``"130m"``, see ``available_sizes``) or a path to a YAML file."""
    # A Path or an importlib.resources Traversable: both have is_file / read_text.
    source = Path(name_or_path)
    if source.suffix not in (".yaml", ".yml"):
        source = SIZES_DIR / f"{name_or_path}.yaml"
    if not source.is_file():
        raise FileNotFoundError(
            f"unknown model size {name_or_path!r}: no file {source}; "
            f"known sizes: {', '.join(available_sizes()) or 'none'}"
        )
    fields = yaml.safe_load(source.read_text(encoding="utf-8"))
    if not isinstance(fields, dict):
        raise ValueError(f"model size file {source} must hold a mapping of LlamaConfig fields")
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
    # The method fixes its shape: an override that contradicts it (share_embeddings=True for a full ensemble) is a
    # mistake worth naming, not something to drop silently.
    for key in sorted(set(overrides) & set(shape)):
        if overrides[key] != shape[key]:
            raise ValueError(f"method {method!r} sets {key}={shape[key]!r}, got {key}={overrides[key]!r}")
    return NeuroTrailsConfig(**{**fields, **shape})
