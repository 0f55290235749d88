"""Checkpoint folders: atomic writes, discovery of the latest complete one, retention, torn-write detection.

A checkpoint is ``<run>/checkpoints/step_<N>/``. Every process writes into ``.tmp-step_<N>/``; the main
process writes ``checkpoint.json`` last and renames the folder, so a folder named ``step_<N>`` is complete by
construction, and one without ``checkpoint.json`` (a copy cut short, a hand-made folder) is refused.

A run folder is never overwritten silently: ``plan_start`` refuses a start that would replace, mix or orphan
what a previous run saved there, and ``--restart`` moves the previous run aside (``set_aside``) instead.
"""

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from; the message says why."""


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def temporary_dir(output_dir: str | Path, step: int) -> Path:
    return checkpoints_dir(output_dir) / f".tmp-step_{step}"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / MANIFEST).is_file()
    ]
    return [p for _, p in sorted(found)]


def resolve_resume(output_dir: str | Path, resume: str) -> Path | None:
    """``latest``: the newest complete checkpoint of the run, or None when it has none. Else a path to one."""
    if resume == "latest":
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise CheckpointError(f"--resume {resume}: no such checkpoint folder")
    read_manifest(path)
    return path


def previous_run(output_dir: str | Path) -> list[str]:
    """What a previous run left in ``output_dir`` that a new start would overwrite or mix with (empty: none)."""
    output_dir = Path(output_dir)
    held = [f"checkpoints/{p.name}" for p in complete_checkpoints(output_dir)]
    return held + [name for name in ("metrics.jsonl",) if (output_dir / name).is_file()]


def plan_start(output_dir: str | Path, resume: str | None, restart: bool = False) -> Path | None:
    """The checkpoint to resume from (None: a fresh start), once it is sure that the start loses nothing saved.

    Refused: a fresh start in a folder holding a previous run (unless ``restart``, whose caller moves that run
    aside first), ``--resume latest`` in a folder whose run saved metrics but no checkpoint, resuming a checkpoint
    of another run into a folder holding one, and resuming an earlier checkpoint where later ones would be
    overwritten. Reads only; the caller writes nothing before this returns.
    """
    output_dir = Path(output_dir)
    if restart and resume:
        raise CheckpointError("--restart starts anew and --resume continues: give one of them")
    held = previous_run(output_dir)
    fresh_folder = "a new run.output_dir=FOLDER"
    if resume is None:
        if held and not restart:
            raise CheckpointError(
                f"{output_dir} already holds a run ({_listed(held)}): continue it with --resume latest, start "
                f"elsewhere with {fresh_folder}, or pass --restart to start anew here (the previous run is first "
                f"moved to {output_dir.name}.previous-<date>-<time> beside it; nothing is deleted)"
            )
        return None
    source = resolve_resume(output_dir, resume)
    if source is None:
        if held:  # metrics of steps never saved: a new run from step 0 would interleave with them
            raise CheckpointError(
                f"--resume latest: {output_dir} holds no checkpoint to resume, but an earlier run's "
                f"{_listed(held)}: start anew with --restart (it moves them aside), or use {fresh_folder}"
            )
        return None
    if held and source.resolve().parent != checkpoints_dir(output_dir).resolve():
        raise CheckpointError(
            f"--resume {resume}: {output_dir} holds a run of its own ({_listed(held)}), which a run resumed "
            f"from elsewhere would mix with: resume into {fresh_folder}"
        )
    step = read_manifest(source)["step"]
    later = [p.name for p in complete_checkpoints(output_dir) if int(_STEP_DIR.match(p.name).group(1)) > step]
    if later:
        raise CheckpointError(
            f"--resume {resume}: {output_dir} holds later checkpoints ({_listed(later)}) that continuing from "
            f"step {step} would overwrite: resume the newest with --resume latest, or copy {source} into the "
            f"checkpoints/ folder of {fresh_folder} and resume there"
        )
    return source


def aside_name(output_dir: str | Path) -> Path:
    """Where ``--restart`` moves a previous run: ``<folder>.previous-<date>-<time>`` beside it."""
    output_dir = Path(output_dir).absolute()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = output_dir.with_name(f"{output_dir.name}.previous-{stamp}"), 1
    while candidate.exists():
        n += 1
        candidate = output_dir.with_name(f"{output_dir.name}.previous-{stamp}-{n}")
    return candidate


def set_aside(output_dir: str | Path) -> Path:
    """Main process only: rename the whole run folder (one rename, nothing copied or deleted); returns where."""
    target = aside_name(output_dir)
    try:
        Path(output_dir).rename(target)
    except OSError as err:
        raise CheckpointError(f"--restart: cannot move {output_dir} to {target}: {err}") from err
    return target


def _listed(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_manifest(path: Path) -> dict[str, Any]:
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(
            f"{path} has no {MANIFEST}: it is not a checkpoint, or its write was interrupted (torn); "
            f"resume from an earlier one"
        )
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{manifest} is not valid JSON (torn write?): {err}") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')} is not {FORMAT_VERSION}")
    missing = [name for name in meta.get("files", []) if not (path / name).exists()]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {missing[:5]}")
    return meta


def finalize(tmp: Path, meta: dict[str, Any]) -> Path:
    """Main process only, after every process has written into ``tmp``: manifest last, then the rename."""
    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    manifest = tmp / MANIFEST
    with open(manifest, "w", encoding="utf-8") as handle:
        json.dump({**meta, "format_version": FORMAT_VERSION, "files": files}, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    final = tmp.with_name(f"step_{meta['step']}")
    if final.exists():
        # Same step written again (a resumed run that stopped where it had saved): swap, never lose both.
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final


def prune(output_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints, and leftover temporary folders."""
    for path in complete_checkpoints(output_dir)[:-keep_last]:
        logger.info("removing old checkpoint %s", path)
        shutil.rmtree(path)
    root = checkpoints_dir(output_dir)
    for leftover in root.glob(".tmp-step_*") if root.is_dir() else []:
        logger.warning("removing interrupted checkpoint write %s", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
