"""Inference of an exported NeuroTrails model vs a full ensemble of the same width, measured in one run.

Both are ``NeuroTrailsForCausalLM`` in eval mode, the class an export loads (its forward returns the mean of
the heads' logits); a single dense model is the reference. Printed per model, the configurations
alternating trial by trial and medians reported:
- latency per generated token: greedy ``generate()`` with the KV cache, batch 1, after a prompt;
- throughput: tokens/s of one forward over a batch of full sequences (prefill / scoring);
- the ratio of NeuroTrails to full-ensemble time beside their FLOP ratio (``nt_llm.flops``, dense
  execution): time ratio / FLOP ratio near 1 means the speed-up is what the FLOPs allow.

    python bench/bench_inference.py                         # 130m, CPU: ~2 min
    python bench/bench_inference.py --size 9m --new-tokens 16 --trials 3
"""

from __future__ import annotations

import argparse
import logging

import torch

from nt_llm.benchmarking import Sample, median, timed
from nt_llm.flops import forward_flops_per_token
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config

log = logging.getLogger("bench_inference")


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the benchmark; returns per model its median latency and forward samples and FLOPs per token."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="130m")
    parser.add_argument("--ensemble-size", type=int, default=3)
    parser.add_argument("--head-layers", type=int, default=None, help="None: two thirds of the blocks")
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens before generation")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2, help="sequences of the throughput forward")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--trials", type=int, default=2, help="timed trials per model (after one warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    configs = {
        "dense": build_config(args.size, "dense"),
        "neurotrails": build_config(args.size, "neurotrails", args.ensemble_size, args.head_layers),
        "full_ensemble": build_config(args.size, "full_ensemble", args.ensemble_size),
    }
    models = {name: NeuroTrailsForCausalLM(c).to(device, dtype).eval() for name, c in configs.items()}
    generator = torch.Generator().manual_seed(0)
    vocab = configs["dense"].vocab_size
    prompt = torch.randint(3, vocab, (1, args.prompt), generator=generator).to(device)
    batch = torch.randint(3, vocab, (args.batch, args.seq), generator=generator).to(device)

    def generate(model: NeuroTrailsForCausalLM) -> None:
        model.generate(
            prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0
        )

    latency: dict[str, list[Sample]] = {name: [] for name in models}
    throughput: dict[str, list[Sample]] = {name: [] for name in models}
    with torch.inference_mode():
        for trial in range(args.trials + 1):  # trial 0 warms up
            for name, model in models.items():
                gen = timed(lambda model=model: generate(model), device)
                fwd = timed(lambda model=model: model(batch), device)
                if trial:
                    latency[name].append(gen)
                    throughput[name].append(fwd)

    log.info(
        "size=%s H=%d prompt=%d new=%d throughput batch=%dx%d device=%s dtype=%s torch=%s threads=%d trials=%d",
        args.size,
        args.ensemble_size,
        args.prompt,
        args.new_tokens,
        args.batch,
        args.seq,
        device,
        args.dtype,
        torch.__version__,
        args.threads,
        args.trials,
    )
    log.info(
        "%-14s %14s %13s %12s %13s %12s",
        "model",
        "ms/token wall",
        "ms/token cpu",
        "tokens/s",
        "fwd cpu s",
        "GFLOP/token",
    )
    tokens = args.batch * args.seq
    med_lat = {name: median(s) for name, s in latency.items()}
    med_fwd = {name: median(s) for name, s in throughput.items()}
    flops = {name: forward_flops_per_token(c, args.seq) for name, c in configs.items()}
    for name in models:
        lat, fwd = med_lat[name], med_fwd[name]
        log.info(
            "%-14s %14.1f %13.1f %12.0f %13.3f %12.3f",
            name,
            1e3 * lat.wall / args.new_tokens,
            1e3 * lat.cpu / args.new_tokens,
            tokens / fwd.wall,
            fwd.cpu,
            flops[name] / 1e9,
        )
    flop_ratio = flops["neurotrails"] / flops["full_ensemble"]
    nt, full = "neurotrails", "full_ensemble"
    log.info("neurotrails / full_ensemble: FLOP ratio %.3f", flop_ratio)
    for what, med in (("latency", med_lat), ("throughput fwd", med_fwd)):
        wall, cpu = med[nt].wall / med[full].wall, med[nt].cpu / med[full].cpu
        log.info(
            "  %-15s time ratio wall %.3f cpu %.3f   / FLOP ratio: wall %.3f cpu %.3f (1 = as fast as FLOPs allow)",
            what,
            wall,
            cpu,
            wall / flop_ratio,
            cpu / flop_ratio,
        )
    return {
        name: {
            "latency_wall": med_lat[name].wall,
            "latency_cpu": med_lat[name].cpu,
            "forward_wall": med_fwd[name].wall,
            "forward_cpu": med_fwd[name].cpu,
            "flops_per_token": flops[name],
        }
        for name in models
    }


if __name__ == "__main__":
    main()
