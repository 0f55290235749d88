"""Where metrics and logs go: ``metrics.jsonl`` in the run folder (one JSON object per event), accelerate's
trackers, and ``train.log`` (every log record of the run, appended, with timestamps)."""

import importlib.util
import json
import logging
import secrets
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from accelerate import Accelerator
from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType

from nt_llm.train.recipe import LoggingRecipe, RecipeError

logger = logging.getLogger(__name__)

LOG_FILE = "train.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# ``logger.info(..., extra=TERMINAL)``: an INFO record that belongs on a quiet terminal too (the final table).
TERMINAL = {"terminal": True}
# Libraries whose loggers do not propagate to the root logger, and the least level each keeps on a quiet
# terminal: DeepSpeed prints its INFO and its "Setting accelerator to CPU" warning on stdout by itself.
_OWN_HANDLER_LOGGERS = {"DeepSpeed": logging.ERROR, "transformers": logging.NOTSET, "datasets": logging.NOTSET}


# The extra that installs the trackers nt_llm is tested with.
TRACKING_EXTRA = "nt_llm[tracking]"
EXTRA_TRACKERS = ("tensorboard", "wandb")


def resolve_trackers(requested: list[str]) -> list[str]:
    """accelerate's tracker names for ``logging.trackers``: ``auto`` means tensorboard when it is installed, else
    none. A tracker named outright must be installed: accelerate would drop a missing one without a word."""
    trackers = []
    for name in requested:
        if name == "auto":
            if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
                trackers.append("tensorboard")
        elif name != "none":
            _check_tracker(name)
            trackers.append(name)
    return trackers


def _check_tracker(name: str) -> None:
    known = [str(t) for t in LoggerType]
    if name not in known:
        raise RecipeError(f"logging.trackers: unknown tracker {name!r}; choose from {['auto', 'none', *known]}")
    if name != "all" and LoggerType(name) not in get_available_trackers():
        install = f"pip install '{TRACKING_EXTRA}'" if name in EXTRA_TRACKERS else f"install {name}"
        raise RecipeError(f"logging.trackers: {name} is not installed ({install})")


def new_tracker_run_id() -> str:
    """A fresh tracker run id (8 lowercase hex digits, a valid wandb run id). The trainer keeps it in every
    checkpoint, so that a resumed run continues the tracker run it started instead of opening a new one."""
    return secrets.token_hex(4)


def tracker_init_kwargs(
    trackers: list[str], options: LoggingRecipe, run_name: str, run_id: str, output_dir: Path
) -> dict[str, dict[str, Any]]:
    """accelerate's ``init_trackers(init_kwargs=...)``: per tracker, what names, tags and continues the run.

    The project (``logging.project``) is ``init_trackers``'s ``project_name`` and needs nothing here. wandb gets the
    run's id with ``resume="allow"`` (the first start creates the run, a resume continues it) and keeps its local
    files in the run folder instead of the working directory. TensorBoard needs nothing: accelerate writes to
    ``<run.output_dir>/<logging.project>/`` (:func:`tensorboard_dir`), the same folder on every resume, and the
    steps logged are the optimizer steps, which continue from the checkpoint's.
    """
    init_kwargs: dict[str, dict[str, Any]] = {}
    if "wandb" in trackers or "all" in trackers:
        init_kwargs["wandb"] = {
            "name": options.run_name or run_name,
            "tags": list(options.tags),
            "id": run_id,
            "resume": "allow",
            "dir": str(output_dir),
        }
    return init_kwargs


def tensorboard_dir(output_dir: Path, project: str) -> Path:
    """Where accelerate's TensorBoard tracker writes a run's event files: ``<logging_dir>/<project_name>``, and the
    trainer's Accelerator takes the run folder as its project (and logging) directory."""
    return Path(output_dir) / project


def progress_postfix(losses: list[float], values: dict[str, Any]) -> dict[str, str]:
    """The progress bar's numbers. ``losses`` is [training loss, head losses...]: the training loss is the heads'
    sum (the paper's), three times a head's loss for three heads, which reads like a diverged run; the bar shows
    the mean head loss under a label that says so (metrics.jsonl keeps the sum as ``loss``)."""
    heads = losses[1:] or losses[:1]
    return {
        "loss/head": f"{sum(heads) / len(heads):.3f}",
        "tok_s": f"{values['tokens_per_s']:.0f}",
        "tflops": f"{values['tflops']:.3g}",
    }


class MetricsLog:
    """Appends events to ``metrics.jsonl`` (main process) and forwards scalars to the trackers."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, trackers: list[str]) -> None:
        self.accelerator = accelerator
        self.path = output_dir / "metrics.jsonl"
        self.trackers = trackers

    def log(self, event: str, step: int, values: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        record = {"event": event, "step": step, **values}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.trackers:
            scalars = {f"{event}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
            self.accelerator.log(scalars, step=step)


def throughput_metrics(
    tokens_per_s: float, flops_per_token: float, devices: int, matmul_peak: float | None = None
) -> dict[str, float]:
    """Speed of a training window. ``tokens_per_s`` over all processes; ``flops_per_token`` the training FLOPs
    the hardware executes per token (``nt_llm.flops.training_flops_per_token``; masked weights still run dense
    matmuls, so a sparse model counts as dense). ``tflops``: achieved model TFLOP/s over all devices,
    ``tflops_per_device`` the same per device, and with a measured ``matmul_peak`` (FLOP/s of one device)
    ``mfu``, the fraction of that peak each device sustains."""
    values = {
        "tokens_per_s": tokens_per_s,
        "tflops": flops_per_token * tokens_per_s / 1e12,
        "tflops_per_device": flops_per_token * tokens_per_s / devices / 1e12,
    }
    if matmul_peak is not None:
        values["mfu"] = values["tflops_per_device"] * 1e12 / matmul_peak
    return values


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All events of a ``metrics.jsonl``."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class RunLog:
    """The run's log file and, while a progress bar shows, a quiet terminal; a context manager around a run.

    Every record reaching the root logger (and the libraries' own loggers that do not propagate: DeepSpeed,
    transformers, datasets) goes to ``train.log``, at the levels the logging configuration lets through
    (``pretrain.py``: INFO). Records are held in memory until ``open`` names the file, so that a start refused
    before its checks pass writes nothing into the run folder. With ``quiet_terminal`` the terminal handlers keep
    warnings, errors and ``extra=TERMINAL`` records only, DeepSpeed's stdout only errors, and transformers' save
    progress bars are off; without it the terminal shows what it always did.
    """

    def __init__(self, quiet_terminal: bool, write_file: bool = True) -> None:
        self.quiet_terminal = quiet_terminal
        self.handler = _HeldFileHandler() if write_file else None
        self._undo: list[Any] = []

    def __enter__(self) -> "RunLog":
        root = logging.getLogger()
        if not root.handlers:
            # logging.lastResort prints warnings only while no handler exists; ours would silence it.
            self._add_handler(root, _level_handler(logging.WARNING))
        if self.quiet_terminal:
            quiet = _QuietTerminal()
            for handler in root.handlers:
                if _is_terminal(handler):
                    handler.addFilter(quiet)
                    self._undo.append(lambda h=handler: h.removeFilter(quiet))
            self._quiet_progress_bars()
        if self.handler is not None:
            self._add_handler(root, self.handler)
        for name, terminal_level in _OWN_HANDLER_LOGGERS.items():
            library = logging.getLogger(name)  # DeepSpeed configures this same logger when it is imported
            if name == "DeepSpeed":
                # Its records never propagate and its handler is made at import, possibly mid-run: a filter on
                # the logger itself sees them all, copies them to the file and keeps errors on stdout.
                tee = _Tee(self.handler, terminal_level if self.quiet_terminal else logging.NOTSET)
                library.addFilter(tee)
                self._undo.append(lambda lg=library, f=tee: lg.removeFilter(f))
            elif not library.propagate and self.handler is not None:
                self._add_handler(library, self.handler)
        return self

    def open(self, path: Path) -> None:
        """From now on append to ``path``, starting with the records held so far."""
        if self.handler is not None:
            self.handler.open(path)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and self.handler is not None:
            # The file says how the run ended; the terminal hears it from whoever catches the exception.
            self.handler.handle(
                logger.makeRecord(
                    logger.name, logging.ERROR, __file__, 0, "run stopped: %s: %s", (exc_type.__name__, exc), None
                )
            )
        while self._undo:
            self._undo.pop()()
        if self.handler is not None:
            self.handler.close()

    def _add_handler(self, target: logging.Logger, handler: logging.Handler) -> None:
        target.addHandler(handler)
        self._undo.append(lambda: target.removeHandler(handler))

    def _quiet_progress_bars(self) -> None:
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            self._undo.append(hf_logging.enable_progress_bar)


class _HeldFileHandler(logging.Handler):
    """Holds records until ``open``; then appends them, and every later one, to the file."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self._held: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None

    def open(self, path: Path) -> None:
        with self.lock:  # the data prefetch thread may be logging meanwhile
            self._file = logging.FileHandler(path, mode="a", encoding="utf-8")
            self._file.setFormatter(self.formatter)
            for record in self._held:
                self._file.handle(record)
            self._held.clear()

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:
            self._held.append(record)
        else:
            self._file.emit(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._held.clear()
        super().close()


class _QuietTerminal(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or getattr(record, "terminal", False)


class _Tee(logging.Filter):
    """A logger filter that copies each record to the run log and lets it on to the logger's own handlers only
    from ``terminal_level`` up."""

    def __init__(self, handler: logging.Handler | None, terminal_level: int) -> None:
        super().__init__()
        self.handler = handler
        self.terminal_level = terminal_level

    def filter(self, record: logging.LogRecord) -> bool:
        if self.handler is not None:
            self.handler.handle(record)
        return record.levelno >= self.terminal_level


def _is_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    terminal_streams = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and any(stream is s for s in terminal_streams)
    )


def _level_handler(level: int) -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setLevel(level)
    return handler
