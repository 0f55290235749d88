"""Starting a run from a pretrained ``LlamaForCausalLM`` (``model.init_from``: a folder or a Hub id).

The source's ``LlamaConfig`` gives the architecture: hidden size, depth, attention and key/value heads, head
dimension, MLP width, biases, activation, rotary settings, norm epsilon and context are the source's. The recipe
chooses what NeuroTrails adds to it (``model.method``, ``ensemble_size``, ``head_layers``), and the tokenizer
(``data.tokenizer``) gives the special-token ids as in any run; its vocabulary must be the source's. What the
recipe writes beside ``init_from``:

- a field that shapes a weight (``SHAPE_FIELDS``: ``model.hidden_size``, ``model.num_hidden_layers``, ...) must
  equal the source's, or the run is refused naming the field: the weights cannot take another shape;
- any other ``LlamaConfig`` field (``model.max_position_embeddings``, ``model.rope_parameters``, ...) overrides the
  source's, as it overrides a size (logged: the model then no longer computes exactly what the source does);
- ``model.size`` may be left out. Written, it is a check: each of its fields (the vocabulary aside, which is the
  tokenizer's) must equal the model's, so a recipe that names ``130m`` cannot silently train another shape.

The weights: the shared blocks are the source's lower ``num_hidden_layers - head_layers`` layers, each head's blocks
its upper layers, each head's final norm and LM head the source's (the embedding shared; a full ensemble copies
everything, its embedding included, into every head), by ``nt_llm.modeling.convert.llama_to_neurotrails``. At
step 0 every head computes the source's logits, so their average does too. A source that ties its LM head to the
embedding gives each head an untied copy of it (``tie_word_embeddings`` is false in NeuroTrails: the heads own
their LM heads).

Resuming never reads the source: the checkpoint holds the weights, and its ``model/config.json`` the architecture.
"""

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from nt_llm.data import vocab_size_of
from nt_llm.methods import shape_for
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM
from nt_llm.modeling.convert import llama_to_neurotrails
from nt_llm.modeling.sizes import load_size
from nt_llm.train.recipe import ModelRecipe, RecipeError

logger = logging.getLogger(__name__)

KEY = "model.init_from"
NT_TYPE = NeuroTrailsConfig.model_type
# LlamaConfig fields that give a weight its shape: the source's weights fit only the source's values.
SHAPE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "attention_bias",
    "mlp_bias",
)
# LlamaConfig fields that change what the model computes but no weight's shape: the source's unless the recipe
# overrides them.
BEHAVIOUR_FIELDS = (
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "attention_dropout",
    "pretraining_tp",
    "initializer_range",
)
# The sizes' vocabulary is a placeholder everywhere: the tokenizer's is the model's.
FROM_TOKENIZER = "vocab_size"


def source_config(init_from: str) -> LlamaConfig:
    """The source's ``LlamaConfig``, read from its ``config.json`` (a folder, or a Hub id through the cache)."""
    try:
        values, _ = LlamaConfig.get_config_dict(init_from)
    except (OSError, ValueError) as err:  # no such folder / repo, no config.json, unreadable JSON, offline
        raise RecipeError(f"{KEY}: cannot read a model config from {init_from!r}: {err}") from err
    model_type = values.get("model_type")
    if model_type != LlamaConfig.model_type:
        hint = " (a NeuroTrails export: start from one head, nt-export --single-head)" if model_type == NT_TYPE else ""
        raise RecipeError(
            f"{KEY}: {init_from!r} holds a {model_type!r} model{hint}; a LlamaForCausalLM checkpoint "
            f"(model_type 'llama') is needed"
        )
    return LlamaConfig.from_dict(values)


def config_from_source(m: ModelRecipe, tokenizer, checkpoint_model_dir: Path | None = None) -> NeuroTrailsConfig:
    """The run's model config: the source's architecture (or, resuming, the checkpoint's), the recipe's method
    and ensemble shape, the tokenizer's special tokens. Every mismatch is a RecipeError naming the field."""
    if checkpoint_model_dir is None:
        source, origin = source_config(m.init_from), f"the source {m.init_from!r}"
    else:  # resuming: the architecture the run was started with, without reading the source again
        source = NeuroTrailsConfig.from_pretrained(checkpoint_model_dir).to_llama_config()
        origin = f"the checkpoint's {checkpoint_model_dir / 'config.json'}"
    vocab_size = vocab_size_of(tokenizer)
    if source.vocab_size != vocab_size:
        raise RecipeError(
            f"{KEY}: {origin} has vocab_size {source.vocab_size}, data.tokenizer has {vocab_size} tokens: train with "
            "the source's tokenizer (the embedding and LM heads are the source's, one row per token)"
        )
    fields = _architecture(m, source.to_dict(), origin)
    if m.size is not None:
        _check_size(m.size, fields, origin)
    if source.tie_word_embeddings:
        logger.info("%s ties its LM head to the embedding: each head's LM head starts as an untied copy", origin)
    specials = {
        "vocab_size": vocab_size,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    try:
        return _build(m.method, {**fields, **specials, "tie_word_embeddings": False})
    except ValueError as err:  # the ensemble's shape against the source's depth (head_layers, ...)
        raise RecipeError(f"model (with {KEY} {m.init_from!r}, {source.num_hidden_layers} layers): {err}") from err


def load_source_weights(model: NeuroTrailsForCausalLM, init_from: str | None, resuming: bool) -> None:
    """Copy the source's weights into every head and the shared parts of ``model`` (built from
    ``config_from_source``); nothing without ``init_from``, and nothing when resuming (the checkpoint's state
    replaces the weights, and the source may be gone)."""
    if init_from is None:
        return
    if resuming:
        logger.info("%s (%s) is not read: the run resumes, its checkpoint holds the weights", KEY, init_from)
        return
    try:
        llama = LlamaForCausalLM.from_pretrained(init_from)
    except (OSError, ValueError) as err:
        raise RecipeError(f"{KEY}: cannot load the weights of {init_from!r}: {err}") from err
    # The source's own tensors, mapped H times over; load_state_dict copies them into the model's parameters.
    mapped = llama_to_neurotrails(llama.state_dict(), model.config, clone=False)
    try:
        with torch.no_grad():
            model.load_state_dict(mapped, strict=True)
    except RuntimeError as err:  # a weights file that does not match its own config.json
        raise RecipeError(f"{KEY}: the weights of {init_from!r} do not fit its config: {err}") from err
    config = model.config
    logger.info(
        "%s: %d shared blocks and %d heads of %d blocks start from %s (%d layers)",
        KEY,
        config.num_shared_layers,
        config.ensemble_size,
        config.head_layers,
        init_from,
        config.num_hidden_layers,
    )


def _architecture(m: ModelRecipe, source: dict[str, Any], origin: str) -> dict[str, Any]:
    """The LlamaConfig fields of the run's model: the source's, with the recipe's fields checked or applied."""
    fields = {key: source[key] for key in (*SHAPE_FIELDS, *BEHAVIOUR_FIELDS) if key in source}
    llama_fields = {f.name for f in dataclasses.fields(LlamaConfig)}
    for key, value in m.config.items():
        if key in SHAPE_FIELDS and value != fields.get(key):
            raise RecipeError(
                f"{KEY}: model.{key} is {value!r} but {origin} has {key} {fields.get(key)!r}; its weights take "
                f"only that shape: leave model.{key} out"
            )
        if key in llama_fields and key not in SHAPE_FIELDS and value != source.get(key):
            logger.info("model.%s=%r overrides %s's %r", key, value, origin, source.get(key))
    return {**fields, **m.config}


def _check_size(size: str, fields: dict[str, Any], origin: str) -> None:
    """``model.size`` beside ``init_from`` is a check: every field it sets must be the model's."""
    try:
        size_fields = load_size(size)
    except (OSError, ValueError) as err:
        raise RecipeError(f"model.size: {err}") from err
    for key, value in size_fields.items():
        if key != FROM_TOKENIZER and fields.get(key) != value:
            raise RecipeError(
                f"{KEY}: model.size {size!r} has {key} {value!r} but the model from {origin} has {fields.get(key)!r}; "
                "leave model.size out (the source's config gives the architecture)"
            )


def _build(method: str, fields: dict[str, Any]) -> NeuroTrailsConfig:
    """The method's shape (``nt_llm.methods.shape_for``) over the source's architecture."""
    return NeuroTrailsConfig(**shape_for(method, {}, overrides=fields, where="the source"))
