"""DST cost relative to a plain training step, measured in the same run.

    python bench/bench_dst.py                       # the 130m NeuroTrails config (H=3, 8 head layers)
    python bench/bench_dst.py --size tiny --steps 3 # quick

Prints, for one process on the current device:
- the plain step (forward + backward + AdamW step) in seconds;
- the hook overhead per ordinary step (before_optimizer_step + after_optimizer_step, timed around
  the calls themselves, and as the difference of whole-step times) as a fraction of the plain step;
- one mask update (prune + regrow of every sparse tensor, with RigL's dense-gradient capture) as a
  ratio to the plain step.
Targets (the issue's): hook overhead < 2 % of a step, one update < 1 step.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
from tqdm import tqdm

from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config
from nt_llm.sparse import DynamicSparsity, SparsityConfig

log = logging.getLogger("bench_dst")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="130m", help="model size from recipes/models")
    p.add_argument("--ensemble-size", type=int, default=3)
    p.add_argument("--head-layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant (after one warm-up)")
    p.add_argument("--updates", type=int, default=2, help="timed mask updates")
    p.add_argument("--density", type=float, default=0.9)
    p.add_argument("--prune", default="soft_magnitude")
    p.add_argument("--growth", default="gradient")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Runs the benchmark, logs it and returns its numbers (seconds and ratios)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = build_config(args.size, "neurotrails", ensemble_size=args.ensemble_size, head_layers=args.head_layers)
    model = NeuroTrailsForCausalLM(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, config.vocab_size, (args.batch, args.seq_len), generator=gen).to(device)
        for _ in range(args.steps + 1)
    ]

    def forward_backward(ids: torch.Tensor) -> None:
        model(input_ids=ids, labels=ids).loss.backward()

    def plain_step(ids: torch.Tensor) -> tuple[float, float]:
        sync(device)
        t0 = time.perf_counter()
        forward_backward(ids)
        sync(device)
        o0 = time.perf_counter()
        optimizer.step()
        sync(device)
        opt_s = time.perf_counter() - o0
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - t0, opt_s

    # A huge update_frequency: no topology change inside the timed hooked steps.
    sparsity_config = SparsityConfig(
        density=args.density, prune=args.prune, growth=args.growth, update_frequency=10**9, total_steps=10**9
    )
    sparsity = DynamicSparsity(model, sparsity_config, optimizer)
    n_sparse = sum(p.numel() for p in sparsity.params)
    n_total = sum(p.numel() for p in model.parameters())

    def hooked_step(ids: torch.Tensor) -> tuple[float, float]:
        sync(device)
        t0 = time.perf_counter()
        forward_backward(ids)
        sync(device)
        h0 = time.perf_counter()
        sparsity.before_optimizer_step()
        sync(device)
        hook = time.perf_counter() - h0
        optimizer.step()
        sync(device)
        h1 = time.perf_counter()
        sparsity.after_optimizer_step()
        sync(device)
        hook += time.perf_counter() - h1
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, hook

    plain_step(batches[0])
    hooked_step(batches[0])  # warm-up: allocations, optimizer state
    plain, opt_steps, hooked, hooks = [], [], [], []
    # interleave the variants so drift in machine load hits both alike
    for ids in tqdm(batches[1:], desc="steps (plain / hooked)"):
        total, opt_s = plain_step(ids)
        plain.append(total)
        opt_steps.append(opt_s)
        total, hook = hooked_step(ids)
        hooked.append(total)
        hooks.append(hook)

    updates = []
    for i in tqdm(range(args.updates), desc="mask updates"):
        forward_backward(batches[i % len(batches)])
        sync(device)
        t0 = time.perf_counter()
        sparsity.update_topology()  # what the hook does before every N-th step, grads in place
        sync(device)
        updates.append(time.perf_counter() - t0)
        optimizer.zero_grad(set_to_none=True)

    step_s = statistics.median(plain)
    hook_s = statistics.median(hooks)
    update_s = statistics.median(updates)
    log.info(
        f"device={device} size={args.size} H={args.ensemble_size} head_layers={args.head_layers} "
        f"batch={args.batch}x{args.seq_len} threads={torch.get_num_threads()}"
    )
    log.info(
        f"params: {n_total / 1e6:.1f}M, sparse: {n_sparse / 1e6:.1f}M in {len(sparsity.names)} tensors, "
        f"density {sparsity.density:.4f}"
    )
    tokens = args.batch * args.seq_len
    log.info(f"plain step          : {step_s:.3f} s (median of {len(plain)}; {tokens} tokens per optimizer step)")
    log.info(f"  of which AdamW    : {statistics.median(opt_steps):.3f} s")
    log.info(f"hooked step         : {statistics.median(hooked):.3f} s")
    log.info(
        f"hook overhead       : {hook_s * 1e3:.1f} ms = {100 * hook_s / step_s:.2f} % of a plain step (target < 2 %), "
        f"{100 * hook_s / statistics.median(opt_steps):.1f} % of AdamW's step"
    )
    # The hook and AdamW cost the same per optimizer step whatever the batch; forward/backward
    # grow with the tokens: the batch at which the hook falls under 2 %, on this machine.
    fb_s = step_s - statistics.median(opt_steps)
    need = tokens * max(0.0, hook_s / 0.02 - statistics.median(opt_steps)) / fb_s
    log.info(f"  < 2 % from about  : {int(need)} tokens per optimizer step (forward/backward scaled linearly)")
    log.info(f"step-time difference: {100 * (statistics.median(hooked) - step_s) / step_s:+.2f} % (noisier)")
    log.info(f"mask update         : {update_s:.3f} s = {update_s / step_s:.2f} plain steps (target < 1)")
    need = tokens * max(0.0, update_s - statistics.median(opt_steps)) / fb_s
    log.info(
        f"  < 1 step from about: {int(need)} tokens per optimizer step; "
        f"amortised over update_frequency=50: {update_s / 50 / step_s:.3f} steps per step"
    )
    log.info(f"last update         : pruned {sparsity.last_update.pruned}, grown {sparsity.last_update.grown}")
    return {
        "step": step_s,
        "optimizer_step": statistics.median(opt_steps),
        "hooked_step": statistics.median(hooked),
        "hook": hook_s,
        "hook_ratio": hook_s / step_s,
        "update": update_s,
        "update_ratio": update_s / step_s,
        "density": sparsity.density,
        "pruned": float(sparsity.last_update.pruned),
        "grown": float(sparsity.last_update.grown),
    }


if __name__ == "__main__":
    main()
