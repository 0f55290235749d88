"""Timing helpers shared by the scripts in bench/ (which import only the package, never each other)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Sample:
    wall: float
    cpu: float


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> Sample:
    """Wall and process-CPU seconds of ``fn`` (CPU time is the steadier number on a shared machine)."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return Sample(time.perf_counter() - wall, time.process_time() - cpu)


def median(samples: list[Sample]) -> Sample:
    return Sample(statistics.median(s.wall for s in samples), statistics.median(s.cpu for s in samples))
