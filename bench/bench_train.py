"""Training step time of the paper's four methods against their FLOP-ideal, measured in one run.

A step is forward + backward + AdamW step (+ the DST hook around it for NeuroTrails). Each method is timed
in a phase beside a fresh single dense model, the two alternating step by step (so both see the same
machine load, and only two models with optimizer state are alive at once); the dense median of that phase
scaled by the FLOP ratio (``nt_llm.flops``, dense execution: masked weights still run dense matmuls) is the
method's FLOP-ideal. Target: NeuroTrails within 5 % of its FLOP-ideal (ratio <= 1.05).

The DST hook here never updates the topology (update_frequency beyond the run): the cost of one mask
update is bench/bench_dst.py's. Batched vs looped heads: bench/bench_heads.py.

    python bench/bench_train.py                                   # 130m, batch 1 x 128, CPU: ~5 min
    python bench/bench_train.py --size 9m --batch 4 --seq 128 --steps 3
    python bench/bench_train.py --device cuda --dtype bfloat16 --batch 16 --seq 1024 --steps 10   # + MFU
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from nt_llm.flops import training_flops_per_token
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.configuration_neurotrails import NeuroTrailsConfig
from nt_llm.modeling.sizes import build_config
from nt_llm.sparse import DynamicSparsity, SparsityConfig

log = logging.getLogger("bench_train")
METHODS = ("treenet", "neurotrails", "full_ensemble")


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


def make_step(
    config: NeuroTrailsConfig, sparse: bool, density: float, device: torch.device, dtype: torch.dtype
) -> Callable[[torch.Tensor], None]:
    """A closure running one full training step of a freshly built model on a batch."""
    model = NeuroTrailsForCausalLM(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sparsity = None
    if sparse:
        # update_frequency past the run: the hook runs every step but never changes the topology.
        cfg = SparsityConfig(density=density, update_frequency=10**6, total_steps=10**7)
        sparsity = DynamicSparsity(model, cfg, optimizer)

    def step(input_ids: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids, labels=input_ids, return_logits=False).loss
        loss.backward()
        if sparsity is not None:
            sparsity.before_optimizer_step()
        optimizer.step()
        if sparsity is not None:
            sparsity.after_optimizer_step()
        optimizer.zero_grad(set_to_none=True)

    return step


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 10) -> float:
    """Measured FLOP/s of a square matmul: the denominator of MFU."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    sample = timed(lambda: [a @ b for _ in range(repeats)], device)
    return 2 * n**3 * repeats / sample.wall


def main(argv: list[str] | None = None) -> list[dict[str, float | str]]:
    """Run the benchmark; returns one row per (phase, model) as printed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="130m")
    parser.add_argument("--ensemble-size", type=int, default=3)
    parser.add_argument("--head-layers", type=int, default=None, help="None: two thirds of the blocks")
    parser.add_argument("--density", type=float, default=0.9)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method (after one warm-up)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {METHODS}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    dense_config = build_config(args.size, "dense")
    dense_flops = training_flops_per_token(dense_config, args.seq)
    tokens = args.batch * args.seq
    peak = matmul_peak(device, dtype) if device.type == "cuda" else None
    log.info(
        "size=%s H=%d batch=%dx%d device=%s dtype=%s torch=%s threads=%d steps=%d%s",
        args.size,
        args.ensemble_size,
        args.batch,
        args.seq,
        device,
        args.dtype,
        torch.__version__,
        args.threads,
        args.steps,
        f" matmul_peak={peak / 1e12:.1f} TFLOP/s" if peak else "",
    )
    header = (
        f"{'method':<14} {'wall s/step':>11} {'cpu s/step':>10} {'tokens/s':>9} {'FLOP ratio':>10} "
        f"{'wall/ideal':>10} {'cpu/ideal':>9}"
    )
    log.info("%s%s", header, "   MFU" if peak else "")
    rows: list[dict[str, float | str]] = []
    for method in methods:
        config = build_config(args.size, method, ensemble_size=args.ensemble_size, head_layers=args.head_layers)
        flop_ratio = training_flops_per_token(config, args.seq) / dense_flops
        steps = {
            "dense": make_step(dense_config, False, 1.0, device, dtype),
            method: make_step(config, method == "neurotrails", args.density, device, dtype),
        }
        generator = torch.Generator().manual_seed(0)
        samples: dict[str, list[Sample]] = {name: [] for name in steps}
        for index in range(args.steps + 1):  # index 0 warms up both
            batch = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=generator).to(device)
            for name, step in steps.items():
                sample = timed(lambda step=step, batch=batch: step(batch), device)
                if index:
                    samples[name].append(sample)
        dense, other = median(samples["dense"]), median(samples[method])
        for name, s, ratio in (("dense", dense, 1.0), (method, other, flop_ratio)):
            flops = training_flops_per_token(config if name == method else dense_config, args.seq)
            mfu = f" {flops * tokens / s.wall / peak:5.1%}" if peak else ""
            log.info(
                "%-14s %11.3f %10.3f %9.0f %10.2f %10.3f %9.3f%s",
                name,
                s.wall,
                s.cpu,
                tokens / s.wall,
                ratio,
                s.wall / (dense.wall * ratio),
                s.cpu / (dense.cpu * ratio),
                mfu,
            )
            rows.append(
                {
                    "phase": method,
                    "model": name,
                    "wall": s.wall,
                    "cpu": s.cpu,
                    "flop_ratio": ratio,
                    "wall_vs_ideal": s.wall / (dense.wall * ratio),
                    "cpu_vs_ideal": s.cpu / (dense.cpu * ratio),
                }
            )
        del steps  # free this phase's models and optimizer state before the next
    log.info("wall/ideal = step time / (dense step time of the same phase x FLOP ratio); <= 1.05 is the target")
    return rows


if __name__ == "__main__":
    main()
