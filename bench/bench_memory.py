"""Peak memory of a training forward + backward, full logits vs the chunked loss, measured in one run.

The logits of H heads x vocab are the memory hog: [H, B, T, V] floats, plus their log-softmax and gradient.
Each configuration runs in a fresh process (on the CPU, ``ru_maxrss`` is a high-water mark that cannot be
reset); the step's peak is the high-water mark after forward + backward minus the one after building the
model (parameters, initialisation). On CUDA the same is read from ``torch.cuda.max_memory_allocated``.
Printed beside it: the fp32 logits of all heads ([H, B, T, V] x 4 bytes), their share of the step's peak
with full logits, what ``loss_chunk_size`` saves, and the step's CPU time of each (the chunked loss recomputes
each chunk's logits in the backward: one more LM-head forward).

    python bench/bench_memory.py                                   # 9m NeuroTrails, vocab 32000, ~1 min
    python bench/bench_memory.py --size 130m --batches 1,4 --seq 512 --chunk 1024
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time

import torch

from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config

log = logging.getLogger("bench_memory")
MiB = 2**20


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(args: argparse.Namespace) -> dict[str, float]:
    """One configuration in this (fresh) process: build, then two forward + backward steps."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = build_config(args.size, args.method, args.ensemble_size, vocab_size=args.vocab)
    model = NeuroTrailsForCausalLM(config).to(device).train()
    input_ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    built = peak_bytes(device)
    for _ in range(2):  # the second step is timed: the first pays one-time allocation and kernel setup
        model.zero_grad(set_to_none=True)
        start, cpu = time.perf_counter(), time.process_time()
        model(input_ids, labels=input_ids, return_logits=False, loss_chunk_size=args.chunk).loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return {
        "built": built,
        "peak": peak_bytes(device),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "heads": config.ensemble_size,
    }


def run_child(args: argparse.Namespace, batch: int, chunk: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--size",
        args.size,
        "--method",
        args.method,
        "--ensemble-size",
        str(args.ensemble_size),
        "--vocab",
        str(args.vocab),
        "--seq",
        str(args.seq),
        "--batch",
        str(batch),
        "--chunk",
        str(chunk),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"configuration batch={batch} chunk={chunk} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Run the benchmark; returns one row per batch size (bytes and seconds) as printed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="9m")
    parser.add_argument("--method", default="neurotrails")
    parser.add_argument("--ensemble-size", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batches", default="2,8", help="comma-separated batch sizes")
    parser.add_argument("--chunk", type=int, default=512, help="loss_chunk_size to compare with full logits")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))  # the parent reads this line
        return []
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.chunk < 1:
        parser.error("--chunk must be >= 1 (the chunked configuration to compare)")
    batches = [int(b) for b in args.batches.split(",") if b]
    rows: list[dict[str, float]] = []
    log.info(
        "size=%s method=%s H=%d vocab=%d seq=%d device=%s torch=%s threads=%d (one fresh process per row)",
        args.size,
        args.method,
        args.ensemble_size,
        args.vocab,
        args.seq,
        args.device,
        torch.__version__,
        args.threads,
    )
    log.info(
        "%6s %12s %14s %16s %10s %13s %12s %13s",
        "batch",
        "logits MiB",
        "step MiB full",
        "step MiB chunked",
        "saved MiB",
        "logits share",
        "cpu s full",
        "cpu s chunked",
    )
    for batch in batches:
        full, chunked = run_child(args, batch, 0), run_child(args, batch, args.chunk)
        logits = full["heads"] * batch * args.seq * args.vocab * 4
        step_full, step_chunk = full["peak"] - full["built"], chunked["peak"] - chunked["built"]
        log.info(
            "%6d %12.0f %14.0f %16.0f %10.0f %13.2f %12.2f %13.2f",
            batch,
            logits / MiB,
            step_full / MiB,
            step_chunk / MiB,
            (step_full - step_chunk) / MiB,
            logits / step_full if step_full > 0 else float("nan"),
            full["cpu_seconds"],
            chunked["cpu_seconds"],
        )
        rows.append(
            {
                "batch": batch,
                "logits": logits,
                "step_full": step_full,
                "step_chunked": step_chunk,
                "seconds_full": full["seconds"],
                "seconds_chunked": chunked["seconds"],
                "cpu_seconds_full": full["cpu_seconds"],
                "cpu_seconds_chunked": chunked["cpu_seconds"],
            }
        )
    log.info("step MiB = peak after forward + backward - peak after building the model (includes parameter grads)")
    return rows


if __name__ == "__main__":
    main()
