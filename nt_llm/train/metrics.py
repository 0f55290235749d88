"""Where metrics go: ``metrics.jsonl`` in the run folder (one JSON object per event) and accelerate's trackers."""

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from accelerate import Accelerator

logger = logging.getLogger(__name__)


def resolve_trackers(requested: list[str]) -> list[str]:
    """``auto`` means tensorboard when it is installed, else none."""
    trackers = []
    for name in requested:
        if name == "auto":
            if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
                trackers.append("tensorboard")
        elif name != "none":
            trackers.append(name)
    return trackers


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


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All events of a ``metrics.jsonl``."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
