"""Training step time measured in one run: each method against its FLOP-ideal, bf16 against fp32, compiled
against eager.

A step is forward + backward + AdamW step (fused kernel, as the trainer's ``optim.implementation: auto``; + the
DST hook around it for NeuroTrails). A phase times two configurations alternating step by step (so both see the
same machine load, and only two models with optimizer state are alive at once); medians are reported.

- ``--compare ideal`` (default): each method beside a fresh single dense model. The method's FLOP-ideal is the
  dense median of that phase x the FLOP ratio method/dense (``nt_llm.flops``, dense execution: masked weights
  still run dense matmuls); ``wall/ideal`` = method step / FLOP-ideal. Target: NeuroTrails <= 1.05.
- ``--compare bf16``: each method in fp32 and under bf16 autocast; ``speedup`` = fp32 step / bf16 step.
- ``--compare compile``: each method eager and ``torch.compile``d (``--dtype`` for both); ``speedup`` = eager
  step / compiled step.

``--warmup`` steps (3 by default; compilation included) are not timed: on the CPU the first steps also fault the
allocator's heap in, and a 130m NeuroTrails step settles only by the third.

The DST hook here never updates the topology (update_frequency beyond the run): the cost of one mask
update is bench/bench_dst.py's. The heads' path against the paper's loop of whole models: bench/bench_heads.py.

    python bench/bench_train.py                                   # 130m, batch 1 x 128, CPU: ~5 min
    python bench/bench_train.py --size 9m --batch 4 --seq 128 --steps 3
    python bench/bench_train.py --compare bf16 --size cpu-4m --batch 8 --seq 256 --methods dense,neurotrails
    python bench/bench_train.py --compare compile --size cpu-4m --batch 8 --seq 256 --methods neurotrails
    python bench/bench_train.py --device cuda --dtype bfloat16 --batch 16 --seq 1024 --steps 10   # + MFU
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from nt_llm.benchmarking import Sample, host_memory, median, timed, training_step
from nt_llm.flops import matmul_peak_flops, training_flops_per_token
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.configuration_neurotrails import NeuroTrailsConfig
from nt_llm.modeling.sizes import build_config
from nt_llm.precision import cpu_native_bf16, resolve_precision
from nt_llm.sparse import DynamicSparsity, SparsityConfig

log = logging.getLogger("bench_train")
METHODS = ("treenet", "neurotrails", "full_ensemble")
COMPARISONS = ("ideal", "bf16", "compile")
FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def make_step(
    config: NeuroTrailsConfig,
    sparse: bool,
    density: float,
    device: torch.device,
    dtype: torch.dtype,
    compile: bool = False,
) -> Callable[[torch.Tensor], None]:
    """A closure running one full training step of a freshly built model on a batch."""
    model = NeuroTrailsForCausalLM(config).to(device).train()
    if compile:
        model.compile()  # in place, as the trainer's model.compile
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in FUSED_ADAMW_DEVICES)
    sparsity = None
    if sparse:
        # update_frequency past the run: the hook runs every step but never changes the topology.
        cfg = SparsityConfig(density=density, update_frequency=10**6, total_steps=10**7)
        sparsity = DynamicSparsity(model, cfg, optimizer)

    return training_step(model, optimizer, sparsity, device, dtype)


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Measured FLOP/s of a square matmul: the denominator of MFU (the trainer's own measurement)."""
    return matmul_peak_flops(device, dtype)


@dataclass
class Phase:
    """Two configurations timed alternately; the first is the reference of the second."""

    name: str
    steps: dict[str, Callable[[torch.Tensor], None]]
    flops: dict[str, float]  # training FLOPs per token of each configuration
    dtypes: dict[str, torch.dtype]


def build_phase(args: argparse.Namespace, method: str, device: torch.device, dtype: torch.dtype) -> Phase:
    dense_config = build_config(args.size, "dense")
    config = build_config(args.size, method, ensemble_size=args.ensemble_size, head_layers=args.head_layers)
    sparse = method == "neurotrails"
    flops = training_flops_per_token(config, args.seq)
    if args.compare == "ideal":
        return Phase(
            method,
            {
                "dense": make_step(dense_config, False, 1.0, device, dtype),
                method: make_step(config, sparse, args.density, device, dtype),
            },
            {"dense": training_flops_per_token(dense_config, args.seq), method: flops},
            {"dense": dtype, method: dtype},
        )
    if args.compare == "bf16":
        variants = {"fp32": (torch.float32, False), "bf16": (torch.bfloat16, False)}
    else:
        variants = {"eager": (dtype, False), "compiled": (dtype, True)}
    return Phase(
        method,
        {name: make_step(config, sparse, args.density, device, d, compile=c) for name, (d, c) in variants.items()},
        dict.fromkeys(variants, flops),
        {name: d for name, (d, _) in variants.items()},
    )


def time_phase(phase: Phase, args: argparse.Namespace, vocab_size: int, device: torch.device) -> dict[str, Sample]:
    """Median step time of each configuration, alternating them step by step after the warm-up steps."""
    generator = torch.Generator().manual_seed(0)
    samples: dict[str, list[Sample]] = {name: [] for name in phase.steps}
    for index in range(args.warmup + args.steps):
        batch = torch.randint(0, vocab_size, (args.batch, args.seq), generator=generator).to(device)
        for name, step in phase.steps.items():
            sample = timed(lambda step=step, batch=batch: step(batch), device)
            if index >= args.warmup:
                samples[name].append(sample)
    return {name: median(s) for name, s in samples.items()}


def cpu_precision() -> str:
    """The CPU's native bf16 and what ``optim.precision: auto`` picks on it and why (AVX-512 BF16 without AMX:
    the probe's measured ratio), to read beside ``--compare bf16``'s measured speedup."""
    resolved = resolve_precision("auto", "cpu")
    return f"{cpu_native_bf16() or 'none'}, auto={resolved.name} ({resolved.reason})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=COMPARISONS, default="ideal")
    parser.add_argument("--size", default="130m")
    parser.add_argument("--ensemble-size", type=int, default=3)
    parser.add_argument("--head-layers", type=int, default=None, help="None: two thirds of the blocks")
    parser.add_argument("--density", type=float, default=0.9)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    # On the CPU the first steps fault the allocator's heap in: a 130m step settles by the third.
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation included)")
    parser.add_argument("--methods", default=None, help=f"comma-separated (default {','.join(METHODS)})")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="not with bf16")
    parser.add_argument(
        "--release-host-memory",
        action="store_true",
        help="glibc's default on the CPU (freed blocks over 32 MiB go back to the kernel), not the trainer's",
    )
    args = parser.parse_args(argv)
    args.methods = [m for m in (args.methods or ",".join(METHODS)).split(",") if m]
    allowed = METHODS if args.compare == "ideal" else ("dense", *METHODS)
    unknown = sorted(set(args.methods) - set(allowed))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {allowed}")
    if args.compare == "bf16" and args.dtype != "float32":
        parser.error("--compare bf16 times float32 against bfloat16: leave --dtype out")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, float | str]]:
    """Run the benchmark; returns one row per (phase, configuration) as printed."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    memory = host_memory(device, args.release_host_memory)
    tokens = args.batch * args.seq
    log.info(
        "compare=%s size=%s H=%d batch=%dx%d device=%s dtype=%s torch=%s threads=%d steps=%d warmup=%d cpu_bf16=%s "
        "host_memory=%s",
        args.compare,
        args.size,
        args.ensemble_size,
        args.batch,
        args.seq,
        device,
        args.dtype,
        torch.__version__,
        args.threads,
        args.steps,
        args.warmup,
        cpu_precision(),
        memory,
    )
    cuda = device.type == "cuda"
    if cuda:
        peaks = {d: matmul_peak(device, d) for d in {torch.float32, torch.bfloat16, dtype}}
        log.info("matmul peak: %s", ", ".join(f"{d} {p / 1e12:.1f} TFLOP/s" for d, p in peaks.items()))
    ideal = args.compare == "ideal"
    columns = ("FLOP ratio", "wall/ideal", "cpu/ideal") if ideal else ("", "speedup wall", "speedup cpu")
    log.info(
        "%-14s %-13s %11s %10s %9s %8s %10s %12s %11s%s",
        "phase",
        "config",
        "wall s/step",
        "cpu s/step",
        "tokens/s",
        "TFLOP/s",
        *columns,
        "    MFU" if cuda else "",
    )
    rows: list[dict[str, float | str]] = []
    vocab_size = build_config(args.size, "dense").vocab_size
    for method in args.methods:
        phase = build_phase(args, method, device, dtype)
        medians = time_phase(phase, args, vocab_size, device)
        ref_name = next(iter(medians))
        ref = medians[ref_name]
        for name, s in medians.items():
            tflops = phase.flops[name] * tokens / s.wall / 1e12
            row: dict[str, float | str] = {"phase": method, "model": name, "wall": s.wall, "cpu": s.cpu}
            row["tokens_per_s"], row["tflops"] = tokens / s.wall, tflops
            if ideal:
                # The FLOP-ideal of a configuration: the dense step of the same phase scaled by the FLOP ratio.
                ratio = phase.flops[name] / phase.flops[ref_name]
                row["flop_ratio"] = ratio
                row["wall_vs_ideal"], row["cpu_vs_ideal"] = s.wall / (ref.wall * ratio), s.cpu / (ref.cpu * ratio)
                shown = f"{ratio:10.2f} {row['wall_vs_ideal']:12.3f} {row['cpu_vs_ideal']:11.3f}"
            else:
                row["speedup_wall"], row["speedup_cpu"] = ref.wall / s.wall, ref.cpu / s.cpu
                shown = f"{'':10} {row['speedup_wall']:12.3f} {row['speedup_cpu']:11.3f}"
            if cuda:
                row["mfu"] = tflops * 1e12 / peaks[phase.dtypes[name]]
            log.info(
                "%-14s %-13s %11.3f %10.3f %9.0f %8.3f %s%s",
                method,
                name,
                s.wall,
                s.cpu,
                tokens / s.wall,
                tflops,
                shown,
                f" {row['mfu']:6.1%}" if cuda else "",
            )
            rows.append(row)
        del phase  # free this phase's models and optimizer state before the next
    if ideal:
        log.info("wall/ideal = step time / (dense step time of the same phase x FLOP ratio); <= 1.05 is the target")
    else:
        log.info("speedup = step time of %s / step time of the configuration, in the same phase", ref_name)
    return rows


if __name__ == "__main__":
    main()
