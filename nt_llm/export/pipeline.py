"""`export`: a source opened by nt_llm.trained, checked, its heads selected, written and, if asked, pushed; and
`push_checkpoint`, the same into a temporary folder that is pushed and removed."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitInfo

from nt_llm.export.options import DTYPES, ExportError, ExportOptions
from nt_llm.export.push import PushOptions, push_export, refuse_offline
from nt_llm.export.records import Lineage, load_lineage
from nt_llm.export.surgery import cast_state, check_heads, count_params, export_model, load_state_dict
from nt_llm.export.write import write_folder
from nt_llm.model_card import CardInfo, ParamCounts
from nt_llm.modeling import NeuroTrailsConfig, register_auto_classes
from nt_llm.trained import TrainedModel, open_trained

logger = logging.getLogger(__name__)


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
    if push is not None:
        refuse_offline(
            f"cannot push to {push.repo_id}; nothing was exported or changed. Unset HF_HUB_OFFLINE, or export "
            "without --push-to-hub"
        )
    register_auto_classes()
    config = NeuroTrailsConfig.from_pretrained(source.model_dir)
    if options.heads is not None:
        check_heads(options.heads, config.ensemble_size, "heads")
    if options.single_head is not None:
        check_heads((options.single_head,), config.ensemble_size, "single_head")

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
    kept, kept_state, model = export_model(state, config, options)
    heads = tuple(lineage.heads[h] for h in kept)  # named as in the trained run
    if options.single_head is not None:
        kind = "single_head"
    else:
        kind = "ensemble" if heads == tuple(range(lineage.source_heads)) else "subset"
    counts = count_params(kept_state, heads)
    carried = Lineage(heads, lineage.source_heads, lineage.training)  # what a re-export of `out` will read
    write_folder(
        out,
        model,
        source.model_dir,
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
        result.commit = push_export(out, push, result.step, "export", token)
    return result


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
    refuse_offline(f"not pushing {checkpoint} to {repo_id}; the checkpoint is untouched")
    with tempfile.TemporaryDirectory(prefix="nt_export-") as workdir:
        result = export(checkpoint, Path(workdir) / "model")
        return push_export(result.out, push, result.step, note, token)


def _context(options: ExportOptions, source: TrainedModel, config: NeuroTrailsConfig) -> int:
    if options.max_position_embeddings is not None:
        return options.max_position_embeddings
    seq_len = source.checkpoint.seq_len if source.checkpoint is not None else None
    return seq_len or int(config.max_position_embeddings)


def _check_out(out: Path, source: TrainedModel, overwrite: bool) -> None:
    protected = source.checkpoint.path if source.checkpoint is not None else source.model_dir
    if _inside(out, protected) or _inside(protected, out):
        raise ExportError(
            f"{out} overlaps the checkpoint {protected.resolve()}: export somewhere else, replacing it "
            "would lose the checkpoint"
        )
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents
