"""Batched vs looped head execution: one training step (forward + backward) of a NeuroTrails model.

The two modes alternate step by step and the medians are compared, so both see the same machine load. On
the CPU the process time is reported beside the wall time: on a shared machine it is the steadier number.
    python bench/bench_heads.py --size 130m --batch 4 --seq 256 --steps 5 --threads 1
"""

import argparse
import logging
import statistics
import time

import torch

from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config

log = logging.getLogger("bench_heads")
MODES = ("loop", "batched")


def timed_step(model: NeuroTrailsForCausalLM, input_ids: torch.Tensor, dtype: torch.dtype) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one forward + backward."""
    device_type = input_ids.device.type
    model.zero_grad(set_to_none=True)
    if device_type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(input_ids, labels=input_ids).loss
    loss.backward()
    if device_type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="130m")
    parser.add_argument("--ensemble-size", type=int, default=3)
    parser.add_argument("--head-layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    config = build_config(args.size, "neurotrails", ensemble_size=args.ensemble_size, head_layers=args.head_layers)
    model = NeuroTrailsForCausalLM(config).to(device).train()
    input_ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=device)

    samples: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for step in range(args.steps + 1):  # step 0 warms up both modes
        for mode in MODES:
            model.config.head_execution = mode
            sample = timed_step(model, input_ids, dtype)
            if step:
                samples[mode].append(sample)
    wall = {mode: statistics.median(s[0] for s in samples[mode]) for mode in MODES}
    cpu = {mode: statistics.median(s[1] for s in samples[mode]) for mode in MODES}

    log.info(
        "size=%s H=%d head_layers=%d batch=%dx%d device=%s dtype=%s torch=%s threads=%d steps=%d",
        args.size,
        args.ensemble_size,
        args.head_layers,
        args.batch,
        args.seq,
        device,
        args.dtype,
        torch.__version__,
        args.threads,
        args.steps,
    )
    tokens = args.batch * args.seq
    for mode in MODES:
        log.info(
            "%-8s wall %7.3f s/step (%7.0f tokens/s)   cpu %7.3f s/step",
            mode,
            wall[mode],
            tokens / wall[mode],
            cpu[mode],
        )
    log.info(
        "loop / batched: wall %.3fx  cpu %.3fx  (>1: batched is faster)",
        wall["loop"] / wall["batched"],
        cpu["loop"] / cpu["batched"],
    )


if __name__ == "__main__":
    main()
