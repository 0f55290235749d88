"""Writing an export folder: weights, the model's code, tokenizer, training record and model card, into a temporary
sibling of the output that is checked and then swapped in (nt_llm.atomic), so the output is either the previous
folder or the complete new one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from nt_llm import hub
from nt_llm.atomic import atomic_folder
from nt_llm.export.options import ExportError
from nt_llm.export.records import CARD, TRAINING_RECORD, Lineage
from nt_llm.model_card import CardInfo, build_model_card

# What from_pretrained records about this machine's load; saved, a Hub user's tokenizer would inherit it.
_TOKENIZER_LOAD_FLAGS = ("is_local", "local_files_only")


def write_folder(
    out: Path,
    model: torch.nn.Module,
    tokenizer_dir: Path,
    context: int,
    max_shard_size: str,
    lineage: Lineage,
    card_info: Callable[[dict[str, Any]], CardInfo],
) -> None:
    """Weights, code, the tokenizer of `tokenizer_dir`, card and training record, checked as a model folder the Hub
    would take, then in place at `out`. `card_info` makes the card's facts from the written config.json."""
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        _save_tokenizer(tokenizer_dir, tmp, context)
        (tmp / TRAINING_RECORD).write_text(json.dumps(lineage.to_json(), indent=2) + "\n", encoding="utf-8")
        info = card_info(json.loads((tmp / "config.json").read_text(encoding="utf-8")))
        (tmp / CARD).write_text(build_model_card(info), encoding="utf-8")
        hub.check_model_folder(tmp)


def _save_tokenizer(model_dir: Path, out: Path, context: int) -> None:
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise ExportError(f"{model_dir} has no loadable tokenizer: {err}") from err
    # Tools that read the tokenizer's limit (lm-eval falls back to it) should see the trained context too.
    tokenizer.model_max_length = context
    for flag in _TOKENIZER_LOAD_FLAGS:
        tokenizer.init_kwargs.pop(flag, None)
    tokenizer.save_pretrained(out)
