"""The inputs of `nt-llm evaluate` (nt_llm.cli.evaluate): the model, opened by nt_llm.trained (an exported folder of
any kind, a training checkpoint with its DST masks applied as export applies them, or a run folder's newest complete
checkpoint), and text, jsonl or parquet files, read by nt_llm.data exactly as training reads validation files: the
model's own tokenizer, documents packed into rows of T tokens, the first N tokens.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from nt_llm.data import DataConfig, ValidationSet, build_tokenizer, build_validation_set
from nt_llm.data.sources import infer_file_format, resolve_files
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.trained import TrainedModel, open_trained

logger = logging.getLogger(__name__)


class EvalInputError(ValueError):
    """The model or the data cannot be evaluated; the message names the path, option or value."""


@dataclass
class LoadedModel:
    model: torch.nn.Module  # returns logits and head_logits, as `evaluate` wants
    tokenizer: PreTrainedTokenizerBase
    source: TrainedModel
    heads: int
    context: int  # the sequence length it was trained for


class SingleModel(torch.nn.Module):
    """A plain causal LM (a single-head export is a LlamaForCausalLM) seen as an ensemble of one head."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *, output_head_logits: bool = False, **kwargs: Any) -> Any:
        out = self.model(**kwargs)
        if output_head_logits:
            out.head_logits = out.logits[None]  # [1, B, T, V]: a view, no copy
        return out


# ---- the model -------------------------------------------------------------------------------------------


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """MODEL opened by nt_llm.trained (an export or any causal LM folder, a checkpoint, a run folder), loaded in
    fp32 with a checkpoint's DST masks applied as export applies them. A MODEL that cannot be opened raises
    TrainedModelError, one that does not load EvalInputError."""
    source = open_trained(path)
    try:
        if source.is_neurotrails:
            # nt_llm's own class: the same code an export carries, without trusting the folder's copy of it.
            model = NeuroTrailsForCausalLM.from_pretrained(source.model_dir, dtype=torch.float32)
        else:
            model = SingleModel(AutoModelForCausalLM.from_pretrained(source.model_dir, dtype=torch.float32))
    except (OSError, ValueError, KeyError) as err:
        raise EvalInputError(f"cannot load a causal LM from {source.model_dir}: {err}") from err
    masked = source.apply_masks(model.state_dict())
    if masked:
        logger.warning(
            "%s: %d weights the DST masks switch off were not 0; evaluating them as 0, as export does",
            source.model_dir,
            masked,
        )
    tokenizer = _tokenizer(source.model_dir)
    heads = model.config.ensemble_size if isinstance(model, NeuroTrailsForCausalLM) else 1
    config = model.model.config if isinstance(model, SingleModel) else model.config
    context = source.context or int(config.max_position_embeddings)
    return LoadedModel(model.to(device).eval(), tokenizer, source, heads, context)


def _tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    try:
        tokenizer = build_tokenizer(DataConfig(tokenizer=str(model_dir)))
    except (OSError, ValueError) as err:
        raise EvalInputError(f"{model_dir} has no usable tokenizer: {err}") from err
    # Packing tokenizes whole documents and cuts rows itself; the folder's limit (the context) would only
    # warn of "indexing errors" that cannot happen.
    tokenizer.model_max_length = sys.maxsize
    return tokenizer


# ---- the data --------------------------------------------------------------------------------------------


def data_files(patterns: list[str], file_format: str | None) -> list[str]:
    """The files the patterns name; each must exist, hold something, and have a known format."""
    try:
        files = resolve_files(patterns, "data file")
    except FileNotFoundError as err:
        raise EvalInputError(str(err)) from err
    for name in files:
        if Path(name).stat().st_size == 0:
            raise EvalInputError(f"data file {name} is empty")
        if file_format is None:
            try:
                infer_file_format(name)
            except ValueError as err:
                raise EvalInputError(f"{err} (here: --format)") from err
    return files


def validation_batches(
    files: list[str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    seq_len: int,
    batch_size: int,
    max_tokens: int,
    text_field: str,
    file_format: str | None,
    text_sample_by: str,
) -> ValidationSet:
    """The first `max_tokens` tokens of `files`, packed, as training's validation set would read them."""
    try:
        cfg = DataConfig(
            source="files",
            train_files=files,
            validation_files=files,
            file_format=file_format,
            text_field=text_field,
            text_sample_by=text_sample_by,
            tokenizer=tokenizer.name_or_path,
            seq_len=seq_len,
            mode="pack",
            batch_size=batch_size,
            validation_tokens=max_tokens,
            prefetch=0,
        )  # train_files: DataConfig wants both splits; only validation is read
        return build_validation_set(cfg, tokenizer)
    except KeyError as err:  # a text field the files do not have; the message names field, file and columns
        raise EvalInputError(f"{err.args[0]} (--text-field)") from err
    except (ValueError, OSError, StopIteration, datasets.exceptions.DatasetGenerationError) as err:
        raise EvalInputError(
            f"cannot read text to evaluate from {', '.join(files)}: {err or type(err).__name__}"
        ) from err


def with_progress(batches: ValidationSet) -> Iterator[dict[str, torch.Tensor]]:
    """The batches, with a progress bar in tokens on stderr (none when stderr is not a terminal)."""
    with tqdm(total=batches.num_tokens, unit="tok", unit_scale=True, desc="evaluating", disable=None) as bar:
        for batch in batches:
            yield batch
            bar.update(int(batch["attention_mask"].sum()))
