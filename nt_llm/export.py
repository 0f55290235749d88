"""Export a training checkpoint as a standalone Hugging Face folder, and optionally push it to the Hub.

    nt-export CHECKPOINT OUT [--heads 0,2 | --single-head H] [--dtype bf16|fp32] [--max-position-embeddings N]
              [--license L] [--max-shard-size 2GB] [--push-to-hub REPO_ID [--private] [--revision BRANCH]
              [--commit-message MSG]] [--overwrite]

CHECKPOINT is a ``step_<N>`` checkpoint, a run folder (its newest complete checkpoint) or a bare NeuroTrails
model folder. Every engine (DDP, DeepSpeed ZeRO-1/2/3) leaves the gathered full weights in the checkpoint's
``model/`` folder, so export reads only that, plus the DST masks (``masks.safetensors``) to guarantee exact zeros;
nt_llm.trained opens it (as evaluate and zero-shot do) and nt_llm.checkpoint says where each part lies.

The output holds config.json with ``auto_map``, the configuration/modeling code, ``model.safetensors`` (sharded
past ``--max-shard-size``), the tokenizer, generation_config.json, a model card and the run's training record
(``nt_llm_training.json``: steps, evaluation, recipe, no machine paths), which a later export of the folder reads. It
is written to a temporary folder next to OUT, given ordinary permissions (0755 / 0644 under a 022 umask) and
renamed into place, so OUT is either the previous folder or the complete new one.

The weights keep the dtype the checkpoint holds (fp32, or bf16 from a bf16-true or DeepSpeed bf16 run) unless
``--dtype`` casts them; config.json's ``dtype`` says which, and ``from_pretrained`` loads that by default.
``nt-llm zero-shot --update-card`` later adds its scores to the folder (``nt_llm_zero_shot.json``) and its card
(``add_zero_shot``); a re-export does not carry them, as its weights may differ.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import CommitInfo
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaForCausalLM

from nt_llm import hub
from nt_llm.console import hide_deepspeed_cpu_notice
from nt_llm.model_card import (
    TRAINING_RECORD_FORMAT,
    CardInfo,
    ParamCounts,
    ZeroShotRecord,
    build_model_card,
    training_record,
    with_zero_shot,
)
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM, register_auto_classes
from nt_llm.modeling.convert import head_to_llama
from nt_llm.trained import TrainedModel, TrainedModelError, open_trained

logger = logging.getLogger(__name__)

TRAINING_RECORD = "nt_llm_training.json"
ZERO_SHOT_RECORD = "nt_llm_zero_shot.json"
CARD = "README.md"
# --dtype: what the weights are cast to. None keeps the checkpoint's own: what exports have always been written in.
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# What from_pretrained records about this machine's load; saved, a Hub user's tokenizer would inherit it.
_TOKENIZER_LOAD_FLAGS = ("is_local", "local_files_only")
EXIT_BAD_INPUT, EXIT_PUSH_FAILED = 2, 3


class ExportError(ValueError):
    """The options, the output folder or a record in the source cannot be exported; the message names the problem.
    A source that cannot be opened at all is nt_llm.trained's TrainedModelError."""


@dataclass
class ExportOptions:
    """What to export. `heads` keeps k of the H heads (renumbered 0..k-1, in the given order); `single_head`
    exports one head with the backbone as a plain LlamaForCausalLM. `max_position_embeddings` None means the
    training context (the recipe's data.seq_len), or the folder's own value when there is no recipe. `dtype` ("bf16",
    "fp32") casts the floating-point weights; None keeps the checkpoint's."""

    heads: tuple[int, ...] | None = None
    single_head: int | None = None
    dtype: str | None = None
    max_position_embeddings: int | None = None
    license: str = "apache-2.0"
    max_shard_size: str = "5GB"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.heads is not None:
            self.heads = tuple(self.heads)
            if not self.heads:
                raise ExportError("heads must name at least one head (e.g. --heads 0,2)")
            if any(isinstance(h, bool) or not isinstance(h, int) or h < 0 for h in self.heads):
                raise ExportError(f"heads must be head indices >= 0, got {list(self.heads)}")
            if len(set(self.heads)) != len(self.heads):
                raise ExportError(f"heads lists a head twice: {list(self.heads)}")
        if self.single_head is not None:
            if self.heads is not None:
                raise ExportError("heads and single_head exclude each other: pick a subset or one head")
            if isinstance(self.single_head, bool) or not isinstance(self.single_head, int) or self.single_head < 0:
                raise ExportError(f"single_head must be a head index >= 0, got {self.single_head!r}")
        if self.max_position_embeddings is not None and (
            isinstance(self.max_position_embeddings, bool)
            or not isinstance(self.max_position_embeddings, int)
            or self.max_position_embeddings < 1
        ):
            raise ExportError(f"max_position_embeddings must be an integer >= 1, got {self.max_position_embeddings!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ExportError(f"dtype must be one of {sorted(DTYPES)} (or None: the checkpoint's), got {self.dtype!r}")
        if not self.license.strip():
            raise ExportError("license must be non-empty (a Hub license id such as apache-2.0)")
        if not str(self.max_shard_size).strip():
            raise ExportError("max_shard_size must be a size such as 5GB")


@dataclass
class PushOptions:
    """Where `export` pushes after writing. The token is never an option: HF_TOKEN or the stored login."""

    repo_id: str
    private: bool = False
    revision: str | None = None
    commit_message: str | None = None  # None: "nt_llm: step N (export)"

    def __post_init__(self) -> None:
        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as err:
            raise ExportError(f"push_to_hub {self.repo_id!r} is not a Hub repo id: {err}") from err
        if "/" not in self.repo_id:
            raise ExportError(f"push_to_hub {self.repo_id!r} must be 'namespace/name' (user or organisation first)")
        if self.revision is not None and not self.revision.strip():
            raise ExportError("revision must be a branch name (leave it out for main)")
        if self.commit_message is not None and not self.commit_message.strip():
            raise ExportError("commit_message must not be empty")


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


@dataclass
class ExportResult:
    out: Path
    kind: str  # "ensemble", "subset" or "single_head" of the trained run
    heads: tuple[int, ...]  # the trained run's heads in the export, in order (also when re-exporting an export)
    counts: ParamCounts
    masked_nonzero: int  # weights the DST masks say are off but were not 0 (zeroed in the export)
    step: int | None
    dtype: str = "float32"  # of the exported weights, as config.json names it
    commit: CommitInfo | None = field(default=None, repr=False)


# ---- reading the checkpoint ------------------------------------------------------------------------------


def load_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of a model folder (single or sharded safetensors)."""
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        return load_file(single)
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (model_dir / shard).is_file():
                raise ExportError(f"{index} lists {shard}, which is missing")
            state.update(load_file(model_dir / shard))
        return state
    raise ExportError(f"{model_dir} holds no model.safetensors (or sharded index)")


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


# ---- building the exported model -------------------------------------------------------------------------


def select_heads(
    state: dict[str, torch.Tensor], config: NeuroTrailsConfig, heads: tuple[int, ...]
) -> tuple[dict[str, torch.Tensor], NeuroTrailsConfig]:
    """The state dict and config of a NeuroTrails model made of `heads` (renumbered 0..k-1) and the shared parts."""
    _check_heads(heads, config.ensemble_size, "heads")
    renumber = {f"heads.{old}.": f"heads.{new}." for new, old in enumerate(heads)}
    selected: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not name.startswith("heads."):
            selected[name] = tensor
            continue
        prefix = ".".join(name.split(".")[:2]) + "."
        if prefix in renumber:
            selected[renumber[prefix] + name[len(prefix) :]] = tensor
    subset = NeuroTrailsConfig.from_dict({**config.to_dict(), "ensemble_size": len(heads)})
    return selected, subset


def count_params(state: dict[str, torch.Tensor], heads: tuple[int, ...]) -> ParamCounts:
    """Totals and nonzeros, overall, for the parts outside the heads, and per head (keyed by source head)."""
    per_head = {h: [0, 0] for h in heads}
    shared = [0, 0]
    for name, tensor in state.items():
        numel, nonzero = tensor.numel(), int(torch.count_nonzero(tensor))
        if name.startswith("heads."):
            bucket = per_head[heads[int(name.split(".")[1])]]
        else:
            bucket = shared
        bucket[0] += numel
        bucket[1] += nonzero
    total = shared[0] + sum(t for t, _ in per_head.values())
    nonzero = shared[1] + sum(n for _, n in per_head.values())
    return ParamCounts(
        total=total,
        nonzero=nonzero,
        shared=shared[0],
        shared_nonzero=shared[1],
        heads={h: (t, n) for h, (t, n) in per_head.items()},
    )


def _check_heads(heads: tuple[int, ...], ensemble_size: int, option: str) -> None:
    bad = [h for h in heads if not 0 <= h < ensemble_size]
    if bad:
        raise ExportError(f"{option} {bad} out of range: the model has {ensemble_size} heads (0..{ensemble_size - 1})")


def _build(model_class: type, config: Any, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A model holding exactly `state`, without spending time and memory on a random initialisation."""
    with torch.device("meta"):
        model = model_class(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model


# ---- writing ---------------------------------------------------------------------------------------------


def export(
    checkpoint: Path | str,
    out: Path | str,
    options: ExportOptions | None = None,
    push: PushOptions | None = None,
    token: str | None = None,
) -> ExportResult:
    """Export `checkpoint` (a run folder, a step_<N> checkpoint or a NeuroTrails model folder: nt_llm.trained's
    `open_trained`) to the folder `out`; push it when `push` is given.

    Raises TrainedModelError for a `checkpoint` that cannot be opened or is not a NeuroTrails model, ExportError for
    other bad input (both before anything is written), hub.HubPushError when offline (before
    anything is written) or when the push fails (the export at `out` is then complete and kept).
    """
    options = options or ExportOptions()
    out = Path(out).expanduser().resolve()
    source = open_trained(checkpoint)
    source.require_neurotrails()
    _check_out(out, source, options.overwrite)
    if push is not None and hub.hub_offline():
        raise hub.HubPushError(
            f"HF_HUB_OFFLINE=1 is set: cannot push to {push.repo_id}; nothing was exported or "
            "changed. Unset HF_HUB_OFFLINE, or export without --push-to-hub"
        )
    register_auto_classes()
    config = NeuroTrailsConfig.from_pretrained(source.model_dir)
    if options.heads is not None:
        _check_heads(options.heads, config.ensemble_size, "heads")
    if options.single_head is not None:
        _check_heads((options.single_head,), config.ensemble_size, "single_head")

    lineage = load_lineage(source, config.ensemble_size)
    state = load_state_dict(source.model_dir)
    masked_nonzero = source.apply_masks(state)
    if masked_nonzero:
        logger.warning(
            "%d weights outside the DST masks were not 0 in %s; exported as 0", masked_nonzero, source.model_dir
        )
    if options.dtype is not None:
        state = cast_state(state, DTYPES[options.dtype])  # after the masks: a masked weight is 0 in any dtype
    context = _context(options, source, config)
    config.max_position_embeddings = context
    kept, kept_state, model = _export_model(state, config, options)
    heads = tuple(lineage.heads[h] for h in kept)  # named as in the trained run
    if options.single_head is not None:
        kind = "single_head"
    else:
        kind = "ensemble" if heads == tuple(range(lineage.source_heads)) else "subset"
    counts = count_params(kept_state, heads)
    carried = Lineage(heads, lineage.source_heads, lineage.training)  # what a re-export of `out` will read
    _write(
        out,
        model,
        source,
        context,
        options.max_shard_size,
        carried,
        lambda folder_config: CardInfo(
            kind=kind,
            heads=heads,
            source_heads=lineage.source_heads,
            counts=counts,
            config=folder_config,
            license=options.license,
            training=lineage.training,
        ),
    )
    dtype = str(json.loads((out / "config.json").read_text(encoding="utf-8")).get("dtype"))
    logger.info(
        "exported %s (%s, heads %s, %d of %d weights nonzero, %s) to %s",
        source.model_dir,
        kind,
        list(heads),
        counts.nonzero,
        counts.total,
        dtype,
        out,
    )
    step = (lineage.training or {}).get("step")
    result = ExportResult(
        out=out,
        kind=kind,
        heads=heads,
        counts=counts,
        masked_nonzero=masked_nonzero,
        step=int(step) if step is not None else None,
        dtype=dtype,
    )
    if push is not None:
        message = push.commit_message or hub.step_commit_message(result.step or 0, "export")
        result.commit = hub.push_folder(
            out, push.repo_id, private=push.private, revision=push.revision, commit_message=message, token=token
        )
    return result


def cast_state(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`state` with its floating-point tensors in `dtype` (integer buffers, if any, as they are)."""
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}


def _export_model(
    state: dict[str, torch.Tensor], config: NeuroTrailsConfig, options: ExportOptions
) -> tuple[tuple[int, ...], dict[str, torch.Tensor], torch.nn.Module]:
    """(the source's heads kept, the state dict of what is kept, the model to save)."""
    if options.single_head is not None:
        heads = (options.single_head,)
        sub_state, sub_config = select_heads(state, config, heads)
        return (
            heads,
            sub_state,
            _build(LlamaForCausalLM, sub_config.to_llama_config(), head_to_llama(sub_state, sub_config, 0)),
        )
    heads = options.heads if options.heads is not None else tuple(range(config.ensemble_size))
    sub_state, sub_config = select_heads(state, config, heads)
    return heads, sub_state, _build(NeuroTrailsForCausalLM, sub_config, sub_state)


def _write(
    out: Path,
    model: torch.nn.Module,
    source: TrainedModel,
    context: int,
    max_shard_size: str,
    lineage: Lineage,
    card_info: Callable[[dict[str, Any]], CardInfo],
) -> None:
    """Weights, code, tokenizer, card and training record into a temporary sibling of `out`, checked, given
    ordinary permissions, then renamed to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        _save_tokenizer(source.model_dir, tmp, context)
        (tmp / TRAINING_RECORD).write_text(json.dumps(lineage.to_json(), indent=2) + "\n", encoding="utf-8")
        info = card_info(json.loads((tmp / "config.json").read_text(encoding="utf-8")))
        (tmp / CARD).write_text(build_model_card(info), encoding="utf-8")
        hub.check_model_folder(tmp)
        _ordinary_permissions(tmp)
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ordinary_permissions(folder: Path) -> None:
    """The modes mkdir and open would have given (0755 / 0644 under a 022 umask) instead of mkdtemp's 0700 and the
    0600 of files written through temporary files: other users and containers must be able to read an export."""
    mask = _umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    # os.umask is the only portable way to read it, and it sets as it reads: the old value goes straight back.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _check_out(out: Path, source: TrainedModel, overwrite: bool) -> None:
    protected = source.checkpoint.path if source.checkpoint is not None else source.model_dir
    if _inside(out, protected) or _inside(protected, out):
        raise ExportError(
            f"{out} overlaps the checkpoint {protected.resolve()}: export somewhere else, replacing it "
            "would lose the checkpoint"
        )
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")


def add_zero_shot(folder: Path | str, record: ZeroShotRecord) -> Path:
    """Keep `record` in the exported `folder` (``nt_llm_zero_shot.json``, replacing an earlier one) and add its
    scores to the folder's model card; returns the card's path. Each file is replaced whole (written beside it,
    then renamed), so a reader never sees half of one."""
    folder = Path(folder).expanduser().resolve()
    require_export(folder)
    card = folder / CARD
    text = with_zero_shot(card.read_text(encoding="utf-8"), record)
    _write_replacing(folder / ZERO_SHOT_RECORD, json.dumps(record.to_json(), indent=2) + "\n")
    _write_replacing(card, text)
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


def _write_replacing(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o666 & ~_umask())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def push_checkpoint(
    checkpoint: Path | str,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    note: str = "",
    token: str | None = None,
) -> CommitInfo:
    """Export a training checkpoint to a temporary folder and push it with the message "nt_llm: step N (...)", all
    before returning. Training pushes its checkpoints through nt_llm.train.callbacks.HubPush instead, which exports
    at once and uploads in the background."""
    push = PushOptions(repo_id=repo_id, private=private, revision=revision)
    if hub.hub_offline():
        raise hub.HubPushError(
            f"HF_HUB_OFFLINE=1 is set: not pushing {checkpoint} to {repo_id}; the checkpoint is untouched"
        )
    with tempfile.TemporaryDirectory(prefix="nt_export-") as workdir:
        result = export(checkpoint, Path(workdir) / "model")
        message = hub.step_commit_message(result.step or 0, note)
        return hub.push_folder(
            result.out, push.repo_id, private=push.private, revision=push.revision, commit_message=message, token=token
        )


def _context(options: ExportOptions, source: TrainedModel, config: NeuroTrailsConfig) -> int:
    if options.max_position_embeddings is not None:
        return options.max_position_embeddings
    seq_len = source.checkpoint.seq_len if source.checkpoint is not None else None
    return seq_len or int(config.max_position_embeddings)


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


def _replace(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` (a sibling of `out`) to `out`; an existing `out` is removed only once the new
    one is in place."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


# ---- command line ----------------------------------------------------------------------------------------


def _head_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--heads wants comma-separated head indices like 0,2, got {text!r}") from err


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nt-export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a step_<N> checkpoint, a run folder, or a NeuroTrails model")
    parser.add_argument("out", type=Path, help="the folder to write (must not exist unless --overwrite)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--heads", type=_head_list, help="keep these heads only (k of H), e.g. 0,2")
    which.add_argument("--single-head", type=int, metavar="H", help="export head H alone as a plain LlamaForCausalLM")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="cast the weights (and config.json's dtype) to this; default: keep the checkpoint's dtype (fp32, or bf16 "
        "from a bf16-true or DeepSpeed bf16 run), as exports always have",
    )
    parser.add_argument(
        "--max-position-embeddings",
        type=int,
        metavar="N",
        help="context length in config.json (default: the training seq_len)",
    )
    parser.add_argument("--license", default="apache-2.0", help="license in the model card (default apache-2.0)")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (default 5GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    hub_args = parser.add_argument_group("Hugging Face Hub (token: HF_TOKEN or `hf auth login`)")
    hub_args.add_argument("--push-to-hub", metavar="REPO_ID", help="push the export to this model repo")
    hub_args.add_argument("--private", action="store_true", help="create the repo private")
    hub_args.add_argument("--revision", metavar="BRANCH", help="push to this branch (created from main)")
    hub_args.add_argument("--commit-message", metavar="MSG", help="default: 'nt_llm: step N (export)'")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.push_to_hub and (args.private or args.revision or args.commit_message):
        parser.error("--private, --revision and --commit-message need --push-to-hub")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hide_deepspeed_cpu_notice()
    try:
        options = ExportOptions(
            heads=args.heads,
            single_head=args.single_head,
            dtype=args.dtype,
            max_position_embeddings=args.max_position_embeddings,
            license=args.license,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
        )
        push = (
            PushOptions(
                repo_id=args.push_to_hub,
                private=args.private,
                revision=args.revision,
                commit_message=args.commit_message,
            )
            if args.push_to_hub
            else None
        )
        result = export(args.checkpoint, args.out, options, push)
    except (ExportError, TrainedModelError, hub.NotAModelFolderError) as err:
        logger.error("%s", err)
        return EXIT_BAD_INPUT
    except hub.HubPushError as err:
        logger.error("%s", err)
        return EXIT_PUSH_FAILED
    if result.commit is not None:
        logger.info("pushed to %s", result.commit.commit_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
