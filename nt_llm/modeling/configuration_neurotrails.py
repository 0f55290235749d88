"""NeuroTrails configuration: a LlamaConfig plus the shape of the ensemble.

This file is copied next to exported weights and loaded with ``trust_remote_code``: it may import only
torch, transformers and files in its own folder.
"""

import dataclasses

from transformers import LlamaConfig

# What names this class rather than the model (save_pretrained writes them): a plain LlamaConfig has its own.
CLASS_KEYS = ("model_type", "architectures", "auto_map", "transformers_version")
# Keys that config.json files written before December 2026 carry: how the heads executed and two training-only
# loss options. None changes the weights or what the model computes: loading drops them (a re-save does not carry
# them on), while passing one to the constructor is a mistake worth naming.
LEGACY_KEYS = ("head_execution", "loss_reduction", "loss_chunk_size")
# How the heads' weights start: each drawn on its own, or every head a copy of head 0 (with DST, different masks are
# then the only difference between heads: the copy-init diagnostic).
HEADS_INITS = ("independent", "copies")


class NeuroTrailsConfig(LlamaConfig):
    r"""Configuration of a NeuroTrails LLaMA: ``num_hidden_layers - head_layers`` shared decoder blocks (the
    backbone), then ``ensemble_size`` heads of ``head_layers`` blocks, a final RMSNorm and an LM head each.

    Every ``LlamaConfig`` field keeps its meaning; ``num_hidden_layers`` is the depth of one path through the
    model (backbone + one head), so a single head reproduces ``LlamaForCausalLM``.

    The four methods of the paper from one config (``nt_llm.methods`` declares each method's shape rules; this config
    only checks that its own fields make one model):
    - single dense model: ``ensemble_size=1``;
    - TreeNet / NeuroTrails: ``ensemble_size=H``, ``head_layers < num_hidden_layers`` (sparsity is applied
      by ``nt_llm.sparse``, not by the model);
    - full ensemble: ``ensemble_size=H``, ``head_layers=num_hidden_layers``, ``share_embeddings=False``.

    Args:
        ensemble_size: number of heads H (>= 1).
        head_layers: decoder blocks in each head, in ``[1, num_hidden_layers]``. ``None`` takes the paper's
            two-thirds split (8 of 12, 16 of 24).
        share_embeddings: whether the token embedding is shared. ``False`` means H independent models, which
            requires ``head_layers == num_hidden_layers``.
        embedding_init_std: the standard deviation of the token embeddings' normal initialisation. ``None``
            takes ``initializer_range`` (0.02, transformers' LLaMA); the paper's code draws embeddings with
            sqrt(2/5) = 0.632 while its linear layers keep 0.02.
        heads_init: how the heads' weights start when the model is initialised: ``"independent"`` (each head drawn
            on its own) or ``"copies"`` (every head's blocks, final norm, LM head and, in a full ensemble, embedding
            equal to head 0's). Loading saved weights (``from_pretrained``) keeps them as saved.

    How the heads' losses combine and whether they are computed in chunks are arguments of the forward
    (training-only), not fields of the config.
    """

    model_type = "neurotrails"

    ensemble_size: int = 3
    head_layers: int | None = None
    share_embeddings: bool = True
    embedding_init_std: float | None = None
    heads_init: str = "independent"

    def __post_init__(self, **kwargs):
        for key in LEGACY_KEYS:
            if key in kwargs:
                raise ValueError(
                    f"{key} is not a NeuroTrailsConfig field any more: the heads have one execution path, and "
                    f"loss_reduction / loss_chunk_size are arguments of the model's forward (training only)"
                )
        super().__post_init__(**kwargs)
        if self.head_layers is None:
            self.head_layers = max(1, (2 * self.num_hidden_layers) // 3)
        self._validate_neurotrails()

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "NeuroTrailsConfig":
        """What ``from_pretrained`` builds from a config.json: an old folder's legacy keys are dropped."""
        return super().from_dict({k: v for k, v in config_dict.items() if k not in LEGACY_KEYS}, **kwargs)

    def to_llama_config(self) -> LlamaConfig:
        """The ``LlamaConfig`` of one path through the model (the backbone and one head), which
        ``LlamaForCausalLM`` builds: every field but this class's own (the ensemble's shape) and its names."""
        llama_fields = {f.name for f in dataclasses.fields(LlamaConfig)}
        own = {f.name for f in dataclasses.fields(NeuroTrailsConfig)} - llama_fields
        dropped = own | set(CLASS_KEYS)
        return LlamaConfig(**{key: value for key, value in self.to_dict().items() if key not in dropped})

    @property
    def num_shared_layers(self) -> int:
        """Decoder blocks in the shared backbone."""
        return self.num_hidden_layers - self.head_layers

    @property
    def num_cache_layers(self) -> int:
        """KV-cache layers the model uses: one per decoder block, the backbone's and every head's."""
        return self.num_shared_layers + self.ensemble_size * self.head_layers

    def _validate_neurotrails(self) -> None:
        # LlamaConfig's own checks run only under its @strict decorator, which subclasses do not inherit.
        _require_int("num_hidden_layers", self.num_hidden_layers, minimum=1)
        _require_int("num_attention_heads", self.num_attention_heads, minimum=1)
        _require_int("ensemble_size", self.ensemble_size, minimum=1)
        _require_int("head_layers", self.head_layers, minimum=1)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads})"
            )
        if self.head_layers > self.num_hidden_layers:
            raise ValueError(
                f"head_layers ({self.head_layers}) must be at most num_hidden_layers ({self.num_hidden_layers})"
            )
        if self.embedding_init_std is not None and not (
            isinstance(self.embedding_init_std, (int, float))
            and not isinstance(self.embedding_init_std, bool)
            and self.embedding_init_std > 0
        ):
            raise ValueError(f"embedding_init_std must be a number > 0 or None, got {self.embedding_init_std!r}")
        if self.heads_init not in HEADS_INITS:
            raise ValueError(f"heads_init must be one of {HEADS_INITS}, got {self.heads_init!r}")
        if not isinstance(self.share_embeddings, bool):
            raise ValueError(f"share_embeddings must be a bool, got {self.share_embeddings!r}")
        if not self.share_embeddings and self.head_layers != self.num_hidden_layers:
            raise ValueError(
                "share_embeddings=False (a full ensemble) shares nothing, so head_layers must equal "
                f"num_hidden_layers ({self.num_hidden_layers}), got {self.head_layers}"
            )
        if self.tie_word_embeddings:
            raise ValueError(
                "tie_word_embeddings=True is not supported: each head owns its LM head while the embedding is shared"
            )


def _require_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
