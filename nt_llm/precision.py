"""Which precision a run trains in: the recipe's ``optim.precision`` resolved against the machine.

- ``auto``: bf16 autocast where the hardware runs bf16 natively and fast (a CUDA device that supports it; a CPU
  with AMX; a CPU with AVX-512 BF16 whose bf16 matmuls a short probe measures faster than fp32), fp32 elsewhere.
  On a CPU without bf16 instructions bf16 is emulated and far slower than fp32 (measured on a 2-core AMD EPYC with
  AVX2 only: the cpu-4m NeuroTrails recipe at 79 tokens/s in bf16 against 1,650-1,800 in fp32). AVX-512 BF16
  without AMX goes either way, hence the probe: oneDNN's bf16 matmuls ran at about 0.6x MKL's fp32 on Intel VMs
  of that kind, and at 2.2-4x on an AMD EPYC (Zen 4) VM, where the cpu-4m NeuroTrails recipe then trained at
  1.3x its fp32 speed. With AMX, bf16 is 1.4x fp32 at cpu-4m and 2.4x at 60m (measured).
- ``no``: fp32 weights and compute.
- ``bf16``: mixed precision, bf16 autocast over fp32 weights and optimizer state (torch.amp).
- ``bf16-true``: the paper's setup, the whole model and the Adam state in bf16 (its code casts the model with
  ``model.to(torch.bfloat16)``); no autocast, no fp32 master copy.
- ``fp16``: autocast with a loss scaler.
"""

import functools
import logging
import time
from dataclasses import dataclass

import torch
from accelerate.state import PartialState
from accelerate.utils import broadcast_object_list

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "no", "bf16", "bf16-true", "fp16")
# Native bf16 that auto picks without measuring: faster than fp32 wherever it was measured.
FAST_BF16 = ("cuda_bf16", "amx_bf16")
# AVX-512 BF16 without AMX: auto times one matmul of this shape (m, k, n: 0.5 GFLOP, a few milliseconds) in fp32
# and in bf16, and picks bf16 from this speedup on. The kinds measured lie far on either side (0.6x and 2.2x), so
# the margin keeps timing noise from flipping the choice.
PROBE_SHAPE = (1024, 512, 512)
PROBE_MIN_SPEEDUP = 1.25
# The slowdown of emulated bf16 named in the warning (the measurement quoted above).
EMULATED_BF16_NOTE = (
    "this CPU has no native bf16 (no AMX, no AVX-512 BF16): bf16 is emulated, about 20x slower than fp32 "
    "(measured: cpu-4m NeuroTrails 79 vs 1,650 tokens/s on an AVX2 AMD EPYC); optim.precision=auto picks fp32 here"
)


class PrecisionError(ValueError):
    """A precision the device or engine cannot train in; the message says what to use instead."""


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what was asked, what runs, and why (one line for the log and the run's record)."""

    requested: str
    name: str  # "no" | "bf16" | "bf16-true" | "fp16": what runs
    reason: str

    @property
    def mixed_precision(self) -> str:
        """accelerate's ``mixed_precision``: autocast only for the mixed modes."""
        return self.name if self.name in ("bf16", "fp16") else "no"

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the model's weights and the optimizer's state."""
        return torch.bfloat16 if self.name == "bf16-true" else torch.float32

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the matmuls run in (MFU's denominator, evaluation's autocast)."""
        return {"no": torch.float32, "bf16": torch.bfloat16, "bf16-true": torch.bfloat16, "fp16": torch.float16}[
            self.name
        ]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of evaluation, None where the weights already are the compute dtype."""
        return self.compute_dtype if self.name in ("bf16", "fp16") else None


def cpu_native_bf16() -> str | None:
    """The CPU's native bf16 instruction set ("amx_bf16" or "avx512_bf16"), None without one."""
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else _cpuinfo_flags()
    for name in ("amx_bf16", "avx512_bf16"):
        if capabilities.get(name):
            return name
    return None


def _cpuinfo_flags() -> dict[str, bool]:
    """Linux's CPU flags, for a torch without ``torch.cpu.get_capabilities``; empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return dict.fromkeys(line.split(":", 1)[1].split(), True)
    except OSError:
        pass
    return {}


def resolve_precision(requested: str, device_type: str, deepspeed: bool = False) -> Precision:
    """``optim.precision`` for a run on ``device_type`` ("cuda", "cpu", ...); PrecisionError where it cannot run."""
    if requested not in PRECISIONS:
        raise PrecisionError(f"optim.precision must be one of {PRECISIONS}, got {requested!r}")
    native = _native_bf16(device_type)
    if requested == "auto":
        if native in FAST_BF16:
            return Precision(requested, "bf16", f"auto: bf16 autocast, {_describe(native)}")
        if native == "avx512_bf16":
            speedup = bf16_matmul_speedup()
            measured = f"{_describe(native)}, no AMX; a bf16 matmul probe ran at {speedup:.1f}x fp32"
            if speedup >= PROBE_MIN_SPEEDUP:
                return Precision(requested, "bf16", f"auto: bf16 autocast, {measured}")
            return Precision(requested, "no", f"auto: fp32, {measured}")
        return Precision(requested, "no", f"auto: fp32, {_why_not_bf16(device_type)}")
    if requested == "bf16-true" and deepspeed:
        raise PrecisionError(
            "optim.precision=bf16-true casts the model itself, while DeepSpeed keeps fp32 master weights of its "
            "own: use optim.precision=bf16 with DeepSpeed"
        )
    if requested in ("bf16", "bf16-true") and device_type == "cuda" and native is None:
        raise PrecisionError(f"optim.precision={requested}: this CUDA device does not support bf16; use fp16 or no")
    if requested in ("bf16", "bf16-true") and device_type == "cpu" and native is None:
        logger.warning("optim.precision=%s: %s", requested, EMULATED_BF16_NOTE)
        return Precision(requested, requested, f"{requested} as asked; emulated, no native bf16 on this CPU")
    return Precision(requested, requested, f"{requested} as asked" + (f", {_describe(native)}" if native else ""))


def main_process_choice(local: Precision) -> Precision:
    """``auto``'s choice made once for all the processes of a run: the main process's. Each process resolves ``auto``
    on its own CPU (capabilities, probe), and processes that computed in different precisions would still train,
    unlike any single-precision run; a process whose own choice differs says so. Every process calls this once,
    after accelerate's process group exists; with one process, or a precision the recipe pins, it is ``local``."""
    if local.requested != "auto" or PartialState().num_processes == 1:
        return local
    chosen = broadcast_object_list([local], from_process=0)[0]
    if chosen.name != local.name:
        logger.warning(
            "optim.precision=auto: process %d alone would train in %s (%s); it follows the main process's %s",
            PartialState().process_index,
            local.name,
            local.reason,
            chosen.name,
        )
    return chosen


@functools.cache
def bf16_matmul_speedup() -> float:
    """How many times faster a bf16 matmul of ``PROBE_SHAPE`` runs than an fp32 one on this CPU (best of 5 each,
    at torch's current thread count); measured once per process."""
    m, k, n = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)

    def best_time(x: torch.Tensor, y: torch.Tensor) -> float:
        torch.mm(x, y)  # the first call builds the kernel
        times = []
        for _ in range(5):
            start = time.perf_counter()
            torch.mm(x, y)
            times.append(time.perf_counter() - start)
        return min(times)

    return best_time(a, b) / best_time(a.bfloat16(), b.bfloat16())


def _native_bf16(device_type: str) -> str | None:
    """What makes bf16 native on the device ("cuda_bf16", "amx_bf16", "avx512_bf16"), None where it is not."""
    if device_type == "cuda":
        return "cuda_bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    if device_type == "cpu":
        return cpu_native_bf16()
    return None


def _describe(native: str) -> str:
    return "a CUDA device with bf16" if native == "cuda_bf16" else f"this CPU has {native}"


def _why_not_bf16(device_type: str) -> str:
    if device_type == "cpu":
        return "this CPU has no native bf16 (no AMX, no AVX-512 BF16)"
    if device_type == "cuda":
        return "this CUDA device does not support bf16"
    return f"auto picks bf16 only on CUDA and on CPUs with native bf16, not on {device_type}"
