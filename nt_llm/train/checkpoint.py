"""Checkpoint folders: atomic writes, discovery of the latest complete one, retention, torn-write detection.

A checkpoint is ``<run>/checkpoints/step_<N>/``. Every process writes into ``.tmp-step_<N>/``; the main
process writes ``checkpoint.json`` last and renames the folder, so a folder named ``step_<N>`` is complete by
construction, and one without ``checkpoint.json`` (a copy cut short, a hand-made folder) is refused.
"""

import json
import logging
import os
import re
import shutil
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
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / MANIFEST).is_file()]
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
