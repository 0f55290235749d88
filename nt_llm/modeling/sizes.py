"""Model sizes by name (package data, ``nt_llm/resources/models/<name>.yaml``) and a method at a size as a config."""

from importlib.resources import files
from pathlib import Path

import yaml

from nt_llm.methods import names, shape_for
from nt_llm.modeling.configuration_neurotrails import NeuroTrailsConfig

# Shipped inside the package (a wheel has no recipes/ folder beside it); read through importlib.resources so that
# an installed wheel, an editable install and a source checkout all find them.
SIZES_DIR = files("nt_llm") / "resources" / "models"
METHODS = names()  # the methods registered with nt_llm.methods when this module was imported (the paper's four)


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
    """A ``NeuroTrailsConfig`` for a registered method (``nt_llm.methods``) at a named size.

    dense: one model (H=1). treenet / neurotrails: shared backbone, H heads of ``head_layers`` blocks (the same
    model; NeuroTrails adds sparsity in training). full_ensemble: H independent models, nothing shared. The method's
    shape rules are ``nt_llm.methods.shape_for``'s: ``ensemble_size`` / ``head_layers`` are used where the method
    lets them be chosen (a dense model has one head, a full ensemble's heads the whole depth); an override that
    contradicts the method (``share_embeddings=True`` for a full ensemble) is a ValueError naming the field.
    """
    fields = shape_for(
        method, load_size(size), ensemble_size, head_layers, overrides, where=f"size {size!r}", strict=False
    )
    return NeuroTrailsConfig(**fields)
