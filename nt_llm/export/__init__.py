"""Export a training checkpoint as a standalone Hugging Face folder, and optionally push it to the Hub.

    nt-llm export CHECKPOINT OUT [--heads 0,2 | --single-head H] [--dtype bf16|fp32] ...   (nt_llm.cli.export)

CHECKPOINT is a ``step_<N>`` checkpoint, a run folder (its newest complete checkpoint) or a bare NeuroTrails
model folder. Every engine (DDP, DeepSpeed ZeRO-1/2/3) leaves the gathered full weights in the checkpoint's
``model/`` folder, so export reads only that, plus the DST masks (``masks.safetensors``) to guarantee exact zeros;
nt_llm.trained opens it (as evaluate and zero-shot do) and nt_llm.checkpoint says where each part lies.

The output holds config.json with ``auto_map``, the configuration/modeling code, ``model.safetensors`` (sharded
past ``--max-shard-size``), the tokenizer, generation_config.json, a model card and the run's training record
(``nt_llm_training.json``: steps, evaluation, recipe, no machine paths), which a later export of the folder reads. It
is written to a temporary folder next to OUT, given ordinary permissions (0755 / 0644 under a 022 umask) and
swapped into place (nt_llm.atomic), so OUT is either the previous folder or the complete new one.

The weights keep the dtype the checkpoint holds (fp32, or bf16 from a bf16-true or DeepSpeed bf16 run) unless
``--dtype`` casts them; config.json's ``dtype`` says which, and ``from_pretrained`` loads that by default.
``nt-llm zero-shot --update-card`` later adds its scores to the folder (``nt_llm_zero_shot.json``) and its card
(``add_zero_shot``); a re-export does not carry them, as its weights may differ.

The parts: ``options`` (ExportOptions, ExportError), ``surgery`` (weights and heads), ``records`` (training record,
zero-shot record, card), ``write`` (the folder), ``push`` (the Hub), ``pipeline`` (`export`, `push_checkpoint`).
"""

from nt_llm.export.options import DTYPES, ExportError, ExportOptions
from nt_llm.export.pipeline import ExportResult, export, push_checkpoint
from nt_llm.export.push import PushOptions
from nt_llm.export.records import TRAINING_RECORD, ZERO_SHOT_RECORD, add_zero_shot, read_zero_shot, require_export

__all__ = [
    "DTYPES",
    "TRAINING_RECORD",
    "ZERO_SHOT_RECORD",
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "PushOptions",
    "add_zero_shot",
    "export",
    "push_checkpoint",
    "read_zero_shot",
    "require_export",
]
