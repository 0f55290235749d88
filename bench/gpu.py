"""The GPU benchmark of the README: one CUDA device, a few minutes, one markdown table.

Measured in one run, one model alive at a time:
- bf16 training steps (forward + backward + fused AdamW; + the DST hook for NeuroTrails) of dense, TreeNet and
  NeuroTrails, eager and ``torch.compile``d: step time, tokens/s, achieved TFLOP/s (``nt_llm.flops``, dense
  execution), MFU against the measured bf16 matmul peak of this device, and the step against its FLOP-ideal
  (the dense step of the same execution x the FLOP ratio method/dense; the target is <= 1.05);
- one NeuroTrails mask update (prune + regrow of every sparse tensor with RigL's dense gradient), in ms and
  in steps;
- greedy generation latency with the KV cache (batch 1, bf16 weights): dense and NeuroTrails, ms per token.

    python bench/gpu.py                                    # 130m, 64 x 256 tokens (the paper's sequence length)
    python bench/gpu.py --batch 32 --seq 1024 --out gpu.md
    python bench/gpu.py --device cpu --size tiny --batch 2 --seq 16 --steps 1 --new-tokens 2 \\
        --compile-backend aot_eager                        # a CPU smoke run of the whole script (the tests')

Without a CUDA device it exits 2 with a message, unless ``--device cpu`` asks for the smoke run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from nt_llm.benchmarking import Sample, median, sync, timed, training_step
from nt_llm.flops import matmul_peak_flops, training_flops_per_token
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config
from nt_llm.sparse import DynamicSparsity, SparsityConfig

log = logging.getLogger("bench_gpu")
METHODS = ("dense", "treenet", "neurotrails")
EXECUTIONS = ("eager", "compiled")


@dataclass
class StepResult:
    method: str
    execution: str
    step: Sample
    flops_per_token: float


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="a CUDA device (cuda, cuda:1); cpu only for the smoke run")
    p.add_argument("--size", default="130m")
    p.add_argument("--ensemble-size", type=int, default=3)
    p.add_argument("--head-layers", type=int, default=8, help="the paper's 130m: 8 of 12 blocks per head")
    p.add_argument("--density", type=float, default=0.9)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation happens here)")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--executions", default=",".join(EXECUTIONS))
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens before generation")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    args.executions = [e for e in args.executions.split(",") if e]
    if not args.executions or set(args.executions) - set(EXECUTIONS):
        p.error(f"--executions: a comma-separated subset of {EXECUTIONS}, got {args.executions}")
    if min(args.steps, args.batch, args.seq, args.new_tokens, args.prompt) < 1 or args.warmup < 0:
        p.error("--steps, --batch, --seq, --prompt and --new-tokens must be >= 1, --warmup >= 0")
    return args


def make_step(
    method: str, args: argparse.Namespace, device: torch.device, compiled: bool
) -> tuple[Callable[[torch.Tensor], None], NeuroTrailsForCausalLM, DynamicSparsity | None]:
    """One bf16 training step of a fresh model; the sparsity (NeuroTrails) never changes topology in a step."""
    config = build_config(args.size, method, ensemble_size=args.ensemble_size, head_layers=args.head_layers)
    model = NeuroTrailsForCausalLM(config).to(device).train()
    if compiled:
        model.compile(backend=args.compile_backend)  # in place, as the trainer's model.compile
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    sparsity = None
    if method == "neurotrails":
        cfg = SparsityConfig(density=args.density, update_frequency=10**9, total_steps=10**9)
        sparsity = DynamicSparsity(model, cfg, optimizer)

    return training_step(model, optimizer, sparsity, device, torch.bfloat16), model, sparsity


def time_steps(step: Callable[[torch.Tensor], None], args: argparse.Namespace, device: torch.device) -> Sample:
    vocab = build_config(args.size, "dense").vocab_size
    generator = torch.Generator().manual_seed(0)
    samples = []
    for index in range(args.warmup + args.steps):
        batch = torch.randint(0, vocab, (args.batch, args.seq), generator=generator).to(device)
        sample = timed(lambda batch=batch: step(batch), device)
        if index >= args.warmup:
            samples.append(sample)
    return median(samples)


def mask_update_seconds(
    model: NeuroTrailsForCausalLM, sparsity: DynamicSparsity, args: argparse.Namespace, device: torch.device
) -> float:
    """One topology update after a backward (RigL grows by the dense gradient of this batch)."""
    batch = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        model(batch, labels=batch, use_cache=False, return_logits=False).loss.backward()
    samples = [timed(sparsity.update_topology, device).wall for _ in range(2)]  # the first warms up
    return samples[-1]


def generation_ms_per_token(method: str, args: argparse.Namespace, device: torch.device) -> float:
    config = build_config(args.size, method, ensemble_size=args.ensemble_size, head_layers=args.head_layers)
    model = NeuroTrailsForCausalLM(config).to(device, torch.bfloat16).eval()
    prompt = torch.randint(3, config.vocab_size, (1, args.prompt), device=device)

    def generate() -> None:
        model.generate(
            prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0
        )

    with torch.inference_mode():
        generate()  # warm-up
        seconds = timed(generate, device).wall
    return 1e3 * seconds / args.new_tokens


def table(results: list[StepResult], peak: float | None, tokens: int) -> list[str]:
    """The README's markdown rows: one per (method, execution)."""
    dense = {r.execution: r for r in results if r.method == "dense"}
    lines = [
        "| model | execution | step ms | tokens/s | TFLOP/s | MFU | step / FLOP-ideal |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        tflops = r.flops_per_token * tokens / r.step.wall / 1e12
        mfu = f"{tflops * 1e12 / peak:.1%}" if peak else "-"
        ideal = "-"
        if r.execution in dense:
            ref = dense[r.execution]
            ideal_s = ref.step.wall * r.flops_per_token / ref.flops_per_token
            ideal = f"{r.step.wall / ideal_s:.3f}"
        lines.append(
            f"| {r.method} | {r.execution} | {1e3 * r.step.wall:.1f} | {tokens / r.step.wall:,.0f} | {tflops:.3g} "
            f"| {mfu} | {ideal} |"
        )
    return lines


def main(argv: list[str] | None = None) -> dict:
    """Run everything; returns the numbers behind the printed table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        message = "bench/gpu.py needs a CUDA device and none is visible (--device cpu runs the smoke test)"
        print(message, file=sys.stderr)
        raise SystemExit(2)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    started = time.perf_counter()
    torch.manual_seed(0)
    peak = matmul_peak_flops(device, torch.bfloat16) if device.type == "cuda" else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tokens = args.batch * args.seq
    log.info(
        "device=%s (%s) torch=%s size=%s H=%d head_layers=%d density=%s batch=%dx%d steps=%d warmup=%d%s",
        device,
        name,
        torch.__version__,
        args.size,
        args.ensemble_size,
        args.head_layers,
        args.density,
        args.batch,
        args.seq,
        args.steps,
        args.warmup,
        f" bf16 matmul peak {peak / 1e12:.0f} TFLOP/s" if peak else "",
    )
    results: list[StepResult] = []
    update_s = None
    for execution in args.executions:
        for method in METHODS:
            step, model, sparsity = make_step(method, args, device, compiled=execution == "compiled")
            sample = time_steps(step, args, device)
            config = model.config
            results.append(StepResult(method, execution, sample, training_flops_per_token(config, args.seq)))
            log.info("%s %s: %.1f ms/step (%.0f s so far)", method, execution, 1e3 * sample.wall, _since(started))
            if sparsity is not None and update_s is None:
                update_s = mask_update_seconds(model, sparsity, args, device)
            del step, model, sparsity
            _free(device)
    generation = {method: generation_ms_per_token(method, args, device) for method in ("dense", "neurotrails")}
    _free(device)

    lines = [
        f"{name}, torch {torch.__version__}, size {args.size} (H={args.ensemble_size}, {args.head_layers} head "
        f"layers, density {args.density}), bf16 autocast, batch {args.batch} x {args.seq}, median of "
        f"{args.steps} steps"
        + (f", MFU against the measured bf16 matmul peak of {peak / 1e12:.0f} TFLOP/s" if peak else ""),
        "",
        *table(results, peak, tokens),
        "",
    ]
    nt_step = next((r.step.wall for r in results if r.method == "neurotrails" and r.execution == "eager"), None)
    if update_s is not None and nt_step:
        lines.append(f"One NeuroTrails mask update: {1e3 * update_s:.1f} ms ({update_s / nt_step:.2f} eager steps).")
    lines.append(
        f"Greedy generation, batch 1, KV cache, {args.prompt}-token prompt, {args.new_tokens} new tokens: "
        f"dense {generation['dense']:.2f} ms/token, NeuroTrails {generation['neurotrails']:.2f} ms/token."
    )
    command = " ".join(["python bench/gpu.py", *(argv if argv is not None else sys.argv[1:])])
    lines.append(f"(`{command}`, {_since(started):.0f} s)")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return {"steps": results, "mask_update_s": update_s, "generation_ms_per_token": generation, "peak": peak}


def _since(started: float) -> float:
    return time.perf_counter() - started


def _free(device: torch.device) -> None:
    """Release the last model: dynamo's compiled code holds on to it otherwise."""
    sync(device)
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
