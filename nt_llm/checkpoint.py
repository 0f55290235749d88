"""The run folder: its layout, its checkpoints and their manifest, written and read here and nowhere else.

A run folder (``run.output_dir``, a :class:`RunDir`)::

    <run>/
      recipe.yaml                 the resolved recipe of the last start (or resume) in this folder
      metrics.jsonl               one JSON object per event: {"event": "train" | "eval" | "dst", "step": N, ...}
      train.log                   every log record of the run, appended, with timestamps
      checkpoints/
        step_<N>/                 a complete checkpoint (a :class:`Checkpoint`)
          checkpoint.json         the manifest, written last: format_version, step, tokens, world_size,
                                  recipe, eval (the last evaluation), density, files (every file below)
          recipe.yaml             the recipe that wrote it
          model/                  a standalone Hugging Face folder of the gathered full weights (config.json,
                                  safetensors, tokenizer) under every engine: what export and evaluation read
          masks.safetensors       sparse runs: the DST masks, {parameter name: bool tensor of the weight's shape}
          state/                  accelerate's engine state (model, optimizer, scheduler, RNG, DST state): read
                                  only to resume, by accelerate itself
          data_rank<i>.pt         the data position of process i, to resume the stream exactly
        .tmp-step_<N>/            a checkpoint being written (a :class:`PendingCheckpoint`)

Writes are atomic: every process writes into ``.tmp-step_<N>/``; the main process writes ``checkpoint.json``
last and renames the folder, so a folder named ``step_<N>`` is complete by construction, and one without
``checkpoint.json`` (a copy cut short, a hand-made folder) is refused with a message saying so. Format 1
checkpoints (before ``masks.safetensors``) still resume and still give their model; their masks cannot be read
without accelerate's private file names, so reading a sparse one's masks is refused with what to do instead.

A run folder is never overwritten silently: :meth:`RunDir.plan_start` refuses a start that would replace, mix or
orphan what a previous run saved there, and ``--restart`` moves the previous run aside (:meth:`RunDir.set_aside`).

Readers (export, evaluation, report, the eval scripts) go through :class:`RunDir` and :class:`Checkpoint`:
``RunDir(path).latest()``, ``.checkpoints()``, ``.metrics("eval")``, ``.final_eval()``;
``Checkpoint.open(path).model_dir``, ``.manifest``, ``.step``, ``.recipe``, ``.masks()``; ``locate(path)`` for a
path that may name a checkpoint, a run folder or neither.
"""

import json
import logging
import os
import re
import shutil
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nt_llm.atomic import swap_in

logger = logging.getLogger(__name__)

MANIFEST = "checkpoint.json"
FORMAT_VERSION = 2  # 2: masks.safetensors; 1: masks only inside accelerate's state
READABLE_FORMATS = (1, 2)
CHECKPOINTS = "checkpoints"
RECIPE = "recipe.yaml"
METRICS = "metrics.jsonl"
MODEL = "model"
MASKS = "masks.safetensors"
STATE = "state"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint or run folder that cannot be used as asked; the message says why and what to do."""


class _Layout:
    """Where each part of a checkpoint lies; shared by the complete checkpoint and the one being written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path

    def __hash__(self) -> int:
        return hash((type(self), self.path))

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL

    @property
    def masks_file(self) -> Path:
        return self.path / MASKS

    @property
    def state_dir(self) -> Path:
        return self.path / STATE

    @property
    def recipe_file(self) -> Path:
        return self.path / RECIPE

    def data_state_file(self, rank: int) -> Path:
        return self.path / f"data_rank{rank}.pt"


class Checkpoint(_Layout):
    """A complete ``step_<N>`` folder. ``Checkpoint(path)`` reads nothing; :meth:`open` checks the manifest."""

    @classmethod
    def open(cls, path: str | Path) -> "Checkpoint":
        """The checkpoint at ``path``, its manifest read and its files checked (CheckpointError otherwise)."""
        checkpoint = cls(path)
        _ = checkpoint.manifest
        return checkpoint

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)

    @property
    def step(self) -> int:
        return int(self.manifest["step"])

    @property
    def tokens(self) -> int:
        return int(self.manifest["tokens"])

    @property
    def recipe(self) -> dict[str, Any]:
        """The resolved recipe that wrote it, as a plain dict (``nt_llm.train.recipe_from_dict`` types it)."""
        return self.manifest.get("recipe") or {}

    @property
    def eval(self) -> dict[str, float]:
        """The last evaluation before it was written ({} when none had run yet)."""
        return self.manifest.get("eval") or {}

    @property
    def seq_len(self) -> int | None:
        """The training context (the model's config keeps its size's longer maximum)."""
        seq_len = (self.recipe.get("data") or {}).get("seq_len")
        return int(seq_len) if seq_len else None

    @property
    def sparse(self) -> bool:
        return self.recipe.get("sparsity") is not None

    @property
    def run(self) -> "RunDir | None":
        """The run folder it belongs to, when it lies in one's ``checkpoints/``."""
        parent = self.path.parent
        return RunDir(parent.parent) if parent.name == CHECKPOINTS else None

    def masks(self) -> dict[str, torch.Tensor]:
        """The DST masks, {parameter name: bool tensor} ({} for a dense run)."""
        if self.masks_file.is_file():
            return read_masks(self.masks_file)
        if self.sparse and self.manifest["format_version"] < 2:
            raise CheckpointError(
                f"{self.path} was written by an older nt_llm (checkpoint format {self.manifest['format_version']}) "
                f"that kept the DST masks only inside accelerate's state: resume the run from it for at least "
                f"one step to write a checkpoint with {MASKS}, or export its {MODEL}/ folder as a plain model "
                f"(its masked weights are 0, but then nothing checks that)"
            )
        return {}


class PendingCheckpoint(_Layout):
    """A checkpoint being written into ``.tmp-step_<N>/``: every process writes its parts, then the main process
    calls :meth:`finalize`, which makes it a complete ``step_<N>``."""

    def __init__(self, path: str | Path, step: int) -> None:
        super().__init__(path)
        self.step = step

    def create(self) -> None:
        """Main process only, before any process writes: an empty folder (a leftover of a crash is removed)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)

    def save_data_state(self, rank: int, state: dict[str, Any]) -> None:
        torch.save(state, self.data_state_file(rank))

    def save_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Main process only (masks are identical on every rank): the masks as bool tensors, for readers."""
        tensors = {name: mask.detach().to("cpu", torch.bool).contiguous() for name, mask in masks.items()}
        save_file(tensors, self.masks_file)

    def finalize(self, meta: dict[str, Any]) -> Checkpoint:
        """Main process only, after every process has written: manifest last, then the rename to ``step_<N>``."""
        files = sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file())
        manifest = self.path / MANIFEST
        with open(manifest, "w", encoding="utf-8") as handle:
            json.dump({**meta, "step": self.step, "format_version": FORMAT_VERSION, "files": files}, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        final = self.path.with_name(f"step_{self.step}")
        # The same step may be written again (a resumed run that stopped where it had saved): never lose both.
        swap_in(self.path, final)
        return Checkpoint(final)


class RunDir:
    """A run folder (see the module's docstring for its layout). Constructing one reads and writes nothing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def recipe_file(self) -> Path:
        return self.path / RECIPE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    # ---- checkpoints -----------------------------------------------------------------------------------

    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first (their manifests are read when asked for)."""
        return [Checkpoint(p) for p in complete_checkpoints(self.path)]

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None when the run has none."""
        found = complete_checkpoints(self.path)
        return Checkpoint(found[-1]) if found else None

    def checkpoint(self, step: int) -> Checkpoint:
        """Where the checkpoint of ``step`` is (or would be); nothing is read."""
        return Checkpoint(self.checkpoints_dir / f"step_{step}")

    def begin_checkpoint(self, step: int) -> PendingCheckpoint:
        return PendingCheckpoint(self.checkpoints_dir / f"{_TMP_PREFIX}step_{step}", step)

    def prune(self, keep_last: int) -> None:
        """Delete all but the newest ``keep_last`` complete checkpoints, and leftover temporary folders."""
        for path in complete_checkpoints(self.path)[:-keep_last]:
            logger.info("removing old checkpoint %s", path)
            shutil.rmtree(path)
        root = self.checkpoints_dir
        for leftover in root.glob(f"{_TMP_PREFIX}step_*") if root.is_dir() else []:
            logger.warning("removing interrupted checkpoint write %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)

    # ---- the run's record ------------------------------------------------------------------------------

    def recipe(self) -> dict[str, Any]:
        """``recipe.yaml`` as a plain dict: the resolved recipe of the last start in this folder."""
        if not self.recipe_file.is_file():
            raise FileNotFoundError(f"{self.path} has no {RECIPE}: is it a training run folder?")
        return yaml.safe_load(self.recipe_file.read_text(encoding="utf-8")) or {}

    def metrics(self, event: str | None = None) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` (of one ``event`` kind: train, eval, dst), in the order logged.

        A resumed run logs again the steps after its checkpoint that the stopped run had logged: its ``start``
        row (at the checkpoint's step) drops the earlier rows after that step, and any other row that goes back
        to a step already logged drops the earlier rows from that step on, so each (event, step) appears once
        and the rows are the run's as if it had never stopped. A last line cut short by a crash is skipped with
        a warning.
        """
        if not self.metrics_file.is_file():
            raise FileNotFoundError(f"{self.path} has no {METRICS}: is it a training run folder?")
        rows: list[dict[str, Any]] = []
        seen: set[tuple[str, int]] = set()
        lines = self.metrics_file.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                if number == len(lines):
                    logger.warning("%s: skipping its last line, cut short (%s)", self.metrics_file, err)
                    continue
                raise ValueError(f"{self.metrics_file} line {number} is not JSON: {err}") from err
            if not isinstance(row, dict) or "event" not in row or "step" not in row:
                raise ValueError(f"{self.metrics_file} line {number} is not an event with a step: {line[:80]}")
            key = (row["event"], row["step"])
            if row["event"] == "start":
                # A resume starts at its checkpoint's step: what the stopped run logged up to that step (the
                # checkpoint's evaluation among it) stands; only the steps after it are logged again.
                rows = [r for r in rows if r["step"] <= row["step"] and (r["event"], r["step"]) != key]
                seen = {(r["event"], r["step"]) for r in rows}
            elif key in seen or (rows and row["step"] < rows[-1]["step"]):
                rows = [r for r in rows if r["step"] < row["step"]]
                seen = {(r["event"], r["step"]) for r in rows}
            rows.append(row)
            seen.add(key)
        return [r for r in rows if event is None or r["event"] == event]

    def evaluations(self) -> list[dict[str, Any]]:
        """Every evaluation of the run, in step order (ValueError when none has run yet)."""
        evals = self.metrics("eval")
        if not evals:
            raise ValueError(f"{self.metrics_file} holds no evaluation yet")
        return evals

    def final_eval(self) -> dict[str, Any]:
        """The run's last evaluation (its ``step`` and ``tokens`` included)."""
        return self.evaluations()[-1]

    # ---- starting a run ----------------------------------------------------------------------------------

    def previous_run(self) -> list[str]:
        """What a previous run left here that a new start would overwrite or mix with (empty: none)."""
        held = [f"{CHECKPOINTS}/{p.name}" for p in complete_checkpoints(self.path)]
        return held + [name for name in (METRICS,) if (self.path / name).is_file()]

    def plan_start(self, resume: str | None, restart: bool = False) -> Checkpoint | None:
        """The checkpoint to resume from (None: a fresh start), once it is sure that the start loses nothing saved.

        ``resume``: ``"latest"`` (the newest complete checkpoint here, if any) or a checkpoint folder. Refused: a
        fresh start in a folder holding a previous run (unless ``restart``, whose caller moves that run aside
        first), ``--resume latest`` in a folder whose run saved metrics but no checkpoint, resuming a checkpoint of
        another run into a folder holding one, and resuming an earlier checkpoint where later ones would be
        overwritten. Reads only; the caller writes nothing before this returns.
        """
        output_dir = self.path
        if restart and resume:
            raise CheckpointError("--restart starts anew and --resume continues: give one of them")
        held = self.previous_run()
        fresh_folder = "a new run.output_dir=FOLDER"
        if resume is None:
            if held and not restart:
                raise CheckpointError(
                    f"{output_dir} already holds a run ({_listed(held)}): continue it with --resume latest, start "
                    f"elsewhere with {fresh_folder}, or pass --restart to start anew here (the previous run is "
                    f"first moved to {output_dir.name}.previous-<date>-<time> beside it; nothing is deleted)"
                )
            return None
        source = self._resolve_resume(resume)
        if source is None:
            if held:  # metrics of steps never saved: a new run from step 0 would interleave with them
                raise CheckpointError(
                    f"--resume latest: {output_dir} holds no checkpoint to resume, but an earlier run's "
                    f"{_listed(held)}: start anew with --restart (it moves them aside), or use {fresh_folder}"
                )
            return None
        if held and source.path.resolve().parent != self.checkpoints_dir.resolve():
            raise CheckpointError(
                f"--resume {resume}: {output_dir} holds a run of its own ({_listed(held)}), which a run resumed "
                f"from elsewhere would mix with: resume into {fresh_folder}"
            )
        later = [p.name for p in complete_checkpoints(output_dir) if _step_of(p) > source.step]
        if later:
            raise CheckpointError(
                f"--resume {resume}: {output_dir} holds later checkpoints ({_listed(later)}) that continuing from "
                f"step {source.step} would overwrite: resume the newest with --resume latest, or copy {source.path} "
                f"into the {CHECKPOINTS}/ folder of {fresh_folder} and resume there"
            )
        return source

    def _resolve_resume(self, resume: str) -> Checkpoint | None:
        if resume == "latest":
            latest = self.latest()
            return None if latest is None else Checkpoint.open(latest.path)
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"--resume {resume}: no such checkpoint folder")
        return Checkpoint.open(path)

    def aside_name(self) -> Path:
        """Where ``--restart`` moves a previous run: ``<folder>.previous-<date>-<time>`` beside it."""
        output_dir = self.path.absolute()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        candidate, n = output_dir.with_name(f"{output_dir.name}.previous-{stamp}"), 1
        while candidate.exists():
            n += 1
            candidate = output_dir.with_name(f"{output_dir.name}.previous-{stamp}-{n}")
        return candidate

    def set_aside(self) -> Path:
        """Main process only: rename the whole run folder (one rename, nothing copied or deleted); returns where."""
        target = self.aside_name()
        try:
            self.path.rename(target)
        except OSError as err:
            raise CheckpointError(f"--restart: cannot move {self.path} to {target}: {err}") from err
        return target


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete ``step_<N>`` folders of a run folder, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(_step_of(p), p) for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / MANIFEST).is_file()]
    return [p for _, p in sorted(found)]


def locate(path: str | Path) -> Checkpoint | None:
    """The checkpoint ``path`` names: a ``step_<N>`` folder (or any folder with a manifest), or a run folder (its
    newest complete checkpoint); None when it names neither (a model folder, say). The checkpoint is opened:
    a torn one, or a run folder without a complete checkpoint, raises CheckpointError."""
    path = Path(path)
    if (path / MANIFEST).is_file() or _STEP_DIR.match(path.name):
        return Checkpoint.open(path)
    run = RunDir(path)
    if run.checkpoints_dir.is_dir():
        latest = run.latest()
        if latest is None:
            raise CheckpointError(f"run {path} has no complete checkpoint under {run.checkpoints_dir}")
        logger.info("run %s: its newest complete checkpoint is %s", path, latest.path.name)
        return Checkpoint.open(latest.path)
    return None


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A checkpoint's manifest, once it is sure the checkpoint is complete and of a format this code reads."""
    path = Path(path)
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
    if not isinstance(meta, dict) or meta.get("format_version") not in READABLE_FORMATS:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"{path}: checkpoint format {found} is not one this nt_llm reads ({', '.join(map(str, READABLE_FORMATS))})"
        )
    missing = [name for name in meta.get("files", []) if not (path / name).exists()]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {missing[:5]}")
    return meta


def read_masks(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``masks.safetensors``: {parameter name: bool tensor}."""
    try:
        masks = load_file(path)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    wrong = sorted(name for name, mask in masks.items() if mask.dtype != torch.bool)
    if wrong:
        raise CheckpointError(f"{path}: masks must be bool tensors; {wrong[:5]} are not")
    return masks


def apply_masks(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> int:
    """Zero every masked-out weight of ``state`` in place; returns how many of them were not already exactly 0."""
    fixed = 0
    for name, mask in masks.items():
        if name not in state:
            raise CheckpointError(f"the DST masks name {name!r}, which the model's weights do not have")
        weight = state[name]
        if weight.shape != mask.shape:
            raise CheckpointError(f"DST mask {name!r} has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}")
        stray = (weight != 0) & ~mask
        fixed += int(stray.sum())
        weight.masked_fill_(~mask, 0)
    return fixed


def _step_of(path: Path) -> int:
    return int(_STEP_DIR.match(path.name).group(1))


def _listed(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
