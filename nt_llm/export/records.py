"""The records an export folder carries besides the model: the trained run behind it (``nt_llm_training.json``, read
again by a re-export), the zero-shot scores ``nt-llm zero-shot --update-card`` adds (``nt_llm_zero_shot.json``) and
the model card (``README.md``) that states both."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nt_llm import atomic
from nt_llm.export.options import ExportError
from nt_llm.model_card import TRAINING_RECORD_FORMAT, ZeroShotRecord, training_record, with_zero_shot
from nt_llm.trained import TrainedModel

logger = logging.getLogger(__name__)

TRAINING_RECORD = "nt_llm_training.json"
ZERO_SHOT_RECORD = "nt_llm_zero_shot.json"
CARD = "README.md"


@dataclass
class Lineage:
    """The trained run behind a source: the run's index of each of the source's heads, the run's head count, and
    its `training_record` (None when unknown). A checkpoint is its own run; an export carries its lineage on in
    TRAINING_RECORD, so a re-export keeps the run's head names and metrics."""

    heads: tuple[int, ...]
    source_heads: int
    training: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": TRAINING_RECORD_FORMAT,
            "heads": list(self.heads),
            "source_heads": self.source_heads,
            "training": self.training,
        }


def load_lineage(source: TrainedModel, ensemble_size: int) -> Lineage:
    """The run behind `source` (a model with `ensemble_size` heads): its checkpoint's manifest, the record an
    earlier export left in the folder, or, for a bare folder, the folder itself with nothing known."""
    if source.checkpoint is not None:
        return Lineage(tuple(range(ensemble_size)), ensemble_size, training_record(source.checkpoint.manifest))
    path = source.model_dir / TRAINING_RECORD
    if not path.is_file():
        return Lineage(tuple(range(ensemble_size)), ensemble_size, None)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ExportError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(record, dict):
        raise ExportError(f"{path} must hold a JSON object, got {type(record).__name__}")
    heads, total, training = record.get("heads"), record.get("source_heads"), record.get("training")
    if not _is_index(total) or total < 1:
        raise ExportError(f"{path}: source_heads must be the trained model's head count, got {total!r}")
    if (
        not isinstance(heads, list)
        or len(heads) != ensemble_size
        or len(set(heads)) != len(heads)
        or not all(_is_index(h) and h < total for h in heads)
    ):
        raise ExportError(
            f"{path}: heads must list {ensemble_size} distinct head indices below source_heads={total} "
            f"(one per head of the folder), got {heads!r}"
        )
    if training is not None and not isinstance(training, dict):
        raise ExportError(f"{path}: training must be an object or null, got {type(training).__name__}")
    return Lineage(tuple(heads), total, training)


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def add_zero_shot(folder: Path | str, record: ZeroShotRecord) -> Path:
    """Keep `record` in the exported `folder` (``nt_llm_zero_shot.json``, replacing an earlier one) and add its
    scores to the folder's model card; returns the card's path. Each file is replaced whole (written beside it,
    then renamed), so a reader never sees half of one."""
    folder = Path(folder).expanduser().resolve()
    require_export(folder)
    card = folder / CARD
    text = with_zero_shot(card.read_text(encoding="utf-8"), record)
    atomic.write_text(folder / ZERO_SHOT_RECORD, json.dumps(record.to_json(), indent=2) + "\n")
    atomic.write_text(card, text)
    logger.info("added the zero-shot scores of %d task(s) to %s", len(record.tasks), card)
    return card


def require_export(folder: Path | str) -> None:
    """ExportError unless `folder` is a folder `export` wrote (its training record and card are there)."""
    folder = Path(folder)
    missing = [name for name in (TRAINING_RECORD, CARD) if not (folder / name).is_file()]
    if missing:
        raise ExportError(
            f"{folder} is not an nt_llm export ({', '.join(missing)} missing), so its card cannot carry zero-shot "
            "scores: export the model with nt-llm export and evaluate the export"
        )


def read_zero_shot(folder: Path | str) -> ZeroShotRecord | None:
    """The zero-shot record an export holds (None without one); ExportError naming the file when it is broken."""
    path = Path(folder) / ZERO_SHOT_RECORD
    if not path.is_file():
        return None
    try:
        return ZeroShotRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError) as err:
        raise ExportError(f"{path}: {err}") from err
