"""Timing helpers shared by the scripts in bench/ (which import only the package, never each other)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from nt_llm.host_memory import keep_freed_memory
from nt_llm.sparse import DynamicSparsity


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


def host_memory(device: torch.device, release: bool) -> str:
    """The trainer's ``run.keep_freed_host_memory`` for a benchmark on ``device`` (unless ``release``): on the
    CPU, glibc keeps freed memory for the next step. Returns what holds, for the benchmark's header."""
    if device.type != "cpu":
        return "n/a"
    return "keep" if not release and keep_freed_memory() else "release"


def training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sparsity: DynamicSparsity | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Callable[[torch.Tensor], None]:
    """A closure running one training step on a batch (labels = inputs): forward and backward under autocast to
    ``dtype`` (none for fp32), the DST hook around the optimizer step when there is a sparsity, as the trainer
    does it."""

    def step(input_ids: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids, labels=input_ids, use_cache=False, return_logits=False).loss
        loss.backward()
        if sparsity is not None:
            sparsity.before_optimizer_step()
        optimizer.step()
        if sparsity is not None:
            sparsity.after_optimizer_step()
        optimizer.zero_grad(set_to_none=True)

    return step
