"""Peak memory of a training forward + backward: the loss from returned logits against the training loss
(``linear_cross_entropy``, whole and chunked), measured in one run.

The logits of H heads x vocab are the memory hog: with the loss taken from returned logits (what a model that
returns logits, and the paper's loop, do), autograd keeps [H, B, T, V] floats plus their log-softmax for
backward. The training path (``return_logits=False``) computes each head's loss and gradients in its forward:
one head's [B x T, V] fp32 logits exist at a time, or ``loss_chunk_size`` rows of them.
Each configuration runs in a fresh process (on the CPU, ``ru_maxrss`` is a high-water mark that cannot be
reset); the step's peak is the high-water mark after forward + backward minus the one after building the
model (parameters, initialisation). On CUDA the same is read from ``torch.cuda.max_memory_allocated``.
Printed beside it: the fp32 logits of all heads ([H, B, T, V] x 4 bytes), their share of the step's peak
with returned logits, and the step's CPU time of each configuration.

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
CONFIGS = ("logits", "fused", "chunked")  # loss from returned logits; training loss whole; training loss chunked


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
        if args.loss == "logits":
            loss = model(input_ids, labels=input_ids).loss  # from whole logits, which the forward returns
        else:
            loss = model(input_ids, labels=input_ids, return_logits=False, loss_chunk_size=args.chunk).loss
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return {
        "built": built,
        "peak": peak_bytes(device),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "heads": config.ensemble_size,
    }


def run_child(args: argparse.Namespace, batch: int, loss: str, chunk: int = 0) -> dict[str, float]:
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
        "--loss",
        loss,
        "--chunk",
        str(chunk),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"configuration batch={batch} loss={loss} chunk={chunk} failed:\n{result.stderr[-2000:]}")
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
    parser.add_argument("--chunk", type=int, default=512, help="the chunked configuration's loss_chunk_size")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--loss", choices=("logits", "fused"), default="fused", help=argparse.SUPPRESS)
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
    columns = ["batch", "logits MiB", *(f"MiB {n}" for n in CONFIGS), "logits share", *(f"cpu s {n}" for n in CONFIGS)]
    log.info(" ".join(f"{c:>13}" for c in columns))
    for batch in batches:
        runs = {
            "logits": run_child(args, batch, "logits"),
            "fused": run_child(args, batch, "fused"),
            "chunked": run_child(args, batch, "fused", args.chunk),
        }
        logits = runs["logits"]["heads"] * batch * args.seq * args.vocab * 4
        step = {name: run["peak"] - run["built"] for name, run in runs.items()}
        share = logits / step["logits"] if step["logits"] > 0 else float("nan")
        values = [logits / MiB, *(step[n] / MiB for n in CONFIGS), share, *(runs[n]["cpu_seconds"] for n in CONFIGS)]
        log.info(" ".join([f"{batch:>13}", *(f"{v:>13.2f}" for v in values)]))
        row = {"batch": batch, "logits": logits}
        for name, run in runs.items():
            row |= {f"step_{name}": step[name], f"seconds_{name}": run["seconds"]}
            row[f"cpu_seconds_{name}"] = run["cpu_seconds"]
        rows.append(row)
    log.info("step MiB = peak after forward + backward - peak after building the model (includes parameter grads)")
    return rows


if __name__ == "__main__":
    main()
