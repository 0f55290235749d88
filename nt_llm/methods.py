"""The training methods: dense, TreeNet, NeuroTrails and the full ensemble, one registered ``Method`` each.

A method declares what it lets a recipe choose of the ensemble's shape (``ensemble_size``: free or one model;
``head_layers``: free, over a shared backbone, or the whole depth), whether the heads share the token embedding,
whether it trains with dynamic sparsity by default, and what the study needs of it (its relative step cost, the
method it becomes at density 1). Everything that depends on the method reads its entry here:

- ``shape_for`` turns a size's fields, the chosen shape and any overrides into the model config's fields, checking
  the shape against the size's depth: the one place the shape rules live (``nt_llm.modeling.sizes.build_config``
  and the trainer call it; the recipe checks what it can before the size is read through ``Method.check``);
- the recipe requires a ``sparsity`` section for a sparse method;
- the study gives an ensemble its ``ensemble_size``, a method with a shared backbone its head depth, a sparse one
  its density, and starts the costliest runs first.

Nothing else branches on a method's name. Adding a method is one entry::

    register(Method("shared_embedding", "H whole-depth models sharing the embedding", ensemble=True,
                    shared_blocks=False, share_embeddings=True, sparse=False, step_cost=2.8))

This module imports nothing of nt_llm: modeling, train and study all read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ShapeError(ValueError):
    """A shape a method cannot take. ``field`` is the config field; the message starts with it, so that the recipe
    layer names the key by prefixing ``model.``."""

    def __init__(self, field: str, message: str) -> None:
        if not message.startswith(field):
            raise AssertionError(f"a ShapeError's message must start with its field {field!r}: {message!r}")
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Method:
    """One training method: what it makes of the ensemble's shape and how it trains.

    Args:
        name: the recipe's ``model.method``.
        summary: what it builds, in a few words (help texts).
        ensemble: ``True``: H heads, ``ensemble_size`` chosen by the recipe; ``False``: one model
            (``ensemble_size`` 1, any other value refused).
        shared_blocks: ``True``: a shared backbone under the heads, ``head_layers`` chosen by the recipe (up to the
            size's depth; by default the config's two thirds); ``False``: each head takes the whole depth (any other
            ``head_layers`` refused: it would be dropped).
        share_embeddings: whether the heads share the token embedding (``False``: nothing shared, which needs
            ``shared_blocks=False``).
        sparse: dynamic sparse training by default: a recipe of this method must have a ``sparsity`` section, and
            the study gives its runs a density below 1.
        step_cost: the relative cost of one training step (dense = 1); the study starts the costliest runs first.
        dense_form: the method this one is at density 1 (NeuroTrails at density 1 is TreeNet), or ``None``.
    """

    name: str
    summary: str
    ensemble: bool
    shared_blocks: bool
    share_embeddings: bool
    sparse: bool = False
    step_cost: float = 1.0
    dense_form: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"Method.name must be an identifier, got {self.name!r}")
        for flag in ("ensemble", "shared_blocks", "share_embeddings", "sparse"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"Method.{flag} must be a bool, got {getattr(self, flag)!r}")
        if not self.share_embeddings and self.shared_blocks:
            raise ValueError(
                f"method {self.name!r}: share_embeddings=False shares nothing, so it needs shared_blocks=False"
            )
        if not (isinstance(self.step_cost, (int, float)) and self.step_cost > 0):
            raise ValueError(f"Method.step_cost must be a number > 0, got {self.step_cost!r}")
        if self.dense_form is not None and not self.sparse:
            raise ValueError(f"method {self.name!r}: dense_form is the method at density 1, only for a sparse method")

    def check(
        self,
        ensemble_size: int | None = None,
        head_layers: int | None = None,
        share_embeddings: bool | None = None,
        depth: int | None = None,
        where: str = "the model",
    ) -> None:
        """Refuse, with a ``ShapeError`` naming the field, a chosen shape this method cannot take. ``None``: not
        chosen. Without ``depth`` (the size not read yet) only what does not depend on it is checked."""
        if ensemble_size is not None and not self.ensemble and ensemble_size != 1:
            raise ShapeError(
                "ensemble_size", f"ensemble_size must be 1 for method {self.name!r} (one model), got {ensemble_size}"
            )
        if head_layers is not None and isinstance(depth, int):
            if not self.shared_blocks and head_layers != depth:
                raise ShapeError(
                    "head_layers",
                    f"head_layers ({head_layers}): method {self.name!r} takes the whole depth of {where} "
                    f"({depth} layers); leave head_layers out",
                )
            if head_layers > depth:
                raise ShapeError(
                    "head_layers",
                    f"head_layers ({head_layers}) must be at most the {depth} layers of {where} "
                    "(equal to it, the heads share only the embedding)",
                )
        if share_embeddings is not None and share_embeddings != self.share_embeddings:
            raise ShapeError(
                "share_embeddings",
                f"share_embeddings: method {self.name!r} sets share_embeddings={self.share_embeddings!r}, "
                f"got share_embeddings={share_embeddings!r}",
            )

    def at_density(self, density: float) -> str:
        """The method's name at ``density``: its dense form at density 1 (NeuroTrails -> TreeNet), else itself."""
        return self.dense_form if self.dense_form is not None and density >= 1 else self.name


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method``; a name already taken is an error (``unregister`` it first)."""
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    if method.dense_form is not None and method.dense_form not in _REGISTRY:
        raise ValueError(f"method {method.name!r}: dense_form {method.dense_form!r} is not a registered method")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove the method ``name`` (tests that register one of their own)."""
    get(name)
    del _REGISTRY[name]


def names() -> tuple[str, ...]:
    """The registered methods' names, in registration order (the paper's four first)."""
    return tuple(_REGISTRY)


def get(name: str) -> Method:
    """The method ``name``; a ``ValueError`` naming the known ones otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"method must be one of {names()}, got {name!r}")
    return _REGISTRY[name]


def shape_for(
    method: str,
    size_fields: Mapping[str, Any],
    ensemble_size: int | None = None,
    head_layers: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    where: str = "the model",
    strict: bool = True,
) -> dict[str, Any]:
    """The model config's fields for ``method``: the size's fields, the overrides, then the ensemble's shape.

    ``ensemble_size`` / ``head_layers`` (``None``: not chosen) and the same keys or ``share_embeddings`` among
    ``overrides`` are checked against the method and the depth (``num_hidden_layers`` of the size or the
    overrides); a shape the method cannot take is a ``ShapeError`` (a ``ValueError``) naming the field, with
    ``where`` saying whose depth it is (``"size '130m'"``). ``strict=False`` drops instead of refusing an
    ``ensemble_size`` / ``head_layers`` *argument* that the method fixes (``build_config``'s arguments, one call
    shape for every method); the overrides are checked either way.
    """
    spec = get(method)
    overrides = dict(overrides or {})
    if not strict:  # the arguments only: an override is the recipe's choice, judged below
        if not spec.ensemble:
            ensemble_size = None
        if not spec.shared_blocks:
            head_layers = None
    ensemble_size = overrides.pop("ensemble_size", ensemble_size)
    head_layers = overrides.pop("head_layers", head_layers)
    fields = {**size_fields, **overrides}
    depth = fields.get("num_hidden_layers")
    spec.check(ensemble_size, head_layers, overrides.get("share_embeddings"), depth, where)
    shape: dict[str, Any] = {"share_embeddings": spec.share_embeddings}
    shape["ensemble_size"] = ensemble_size if spec.ensemble else 1
    shape["head_layers"] = head_layers if spec.shared_blocks else depth
    if shape["ensemble_size"] is None:  # not chosen: the config's default
        del shape["ensemble_size"]
    return {**fields, **shape}


DENSE = register(Method("dense", "one LLaMA (H=1)", ensemble=False, shared_blocks=False, share_embeddings=True))
TREENET = register(
    Method(
        "treenet",
        "shared backbone + H dense heads",
        ensemble=True,
        shared_blocks=True,
        share_embeddings=True,
        step_cost=2.5,
    )
)
NEUROTRAILS = register(
    Method(
        "neurotrails",
        "shared backbone + H heads made sparse by dynamic sparse training",
        ensemble=True,
        shared_blocks=True,
        share_embeddings=True,
        sparse=True,
        step_cost=2.6,
        dense_form="treenet",
    )
)
FULL_ENSEMBLE = register(
    Method(
        "full_ensemble",
        "H independent LLaMAs, nothing shared, not even the embedding",
        ensemble=True,
        shared_blocks=False,
        share_embeddings=False,
        step_cost=3.0,
    )
)
