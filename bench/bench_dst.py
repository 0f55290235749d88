"""DST cost relative to a training step, measured in the same run.

    python bench/bench_dst.py                        # the 130m NeuroTrails config (H=3, 8 head layers)
    python bench/bench_dst.py --size tiny --steps 2  # quick

Prints, for one process on the current device:
- the plain step on one micro-batch (forward + backward + AdamW step) in seconds, and the step at the
  paper's batch (--paper-batch sequences of --seq-len tokens per optimizer step) SCALED from it:
  forward/backward x (paper tokens / micro-batch tokens) + one AdamW step;
- the hook overhead per optimizer step (before_optimizer_step + after_optimizer_step, timed around
  the calls) as a fraction of the micro-batch step and of the paper-batch step;
- one mask update (prune + regrow of every sparse tensor, RigL's dense gradient included) as a
  ratio to the paper-batch step (target <= 0.1) and to the micro-batch step.
Then, unless --world-sizes is empty, the per-rank time of one mask update with the work split over
1 and 2 gloo processes (replicated tensors, as under DDP; --threads threads each) and their ratio
(target <= 0.6; 0.5 is a perfect split). With --rounds R the world sizes run in turn R times (1, 2, 1, 2, ...)
and each reports the median over rounds, so drift in the machine's speed hits both alike.
Targets (the issues'): hook overhead < 2 % of a step, one update <= 0.1 paper-batch step.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from nt_llm.benchmarking import host_memory, sync
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config
from nt_llm.sparse import DynamicSparsity, SparsityConfig

log = logging.getLogger("bench_dst")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="130m", help="model size from recipes/models")
    p.add_argument("--ensemble-size", type=int, default=3)
    p.add_argument("--head-layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=8, help="sequences per micro-batch (the timed step)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--paper-batch", type=int, default=512, help="sequences per optimizer step in the paper")
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant (after one warm-up)")
    p.add_argument("--updates", type=int, default=2, help="timed mask updates")
    p.add_argument("--density", type=float, default=0.9)
    p.add_argument("--prune", default="soft_magnitude")
    p.add_argument("--growth", default="gradient")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--world-sizes", default="1,2", help="comma-separated process counts for the split update ('' skips it)"
    )
    p.add_argument("--rounds", type=int, default=1, help="times the world sizes run in turn (medians over rounds)")
    p.add_argument(
        "--release-host-memory",
        action="store_true",
        help="glibc's default on the CPU (freed blocks over 32 MiB go back to the kernel), not the trainer's",
    )
    args = p.parse_args(argv)
    try:
        args.world_sizes = [int(w) for w in args.world_sizes.split(",") if w.strip()]
    except ValueError:
        p.error(f"--world-sizes must be comma-separated integers, got {args.world_sizes!r}")
    if any(w < 1 for w in args.world_sizes):
        p.error(f"--world-sizes must be >= 1, got {args.world_sizes}")
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    return args


def build(args: argparse.Namespace, device: torch.device) -> tuple[NeuroTrailsForCausalLM, torch.optim.Optimizer]:
    torch.manual_seed(0)
    config = build_config(args.size, "neurotrails", ensemble_size=args.ensemble_size, head_layers=args.head_layers)
    model = NeuroTrailsForCausalLM(config).to(device)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)


def sparsity_config(args: argparse.Namespace) -> SparsityConfig:
    # A huge update_frequency: no topology change inside the timed hooked steps.
    return SparsityConfig(
        density=args.density, prune=args.prune, growth=args.growth, update_frequency=10**9, total_steps=10**9
    )


def rank_update_times(rank: int, world: int, args: argparse.Namespace, port: int, out: str) -> None:
    """One rank of the split-update timing: same model and gradients on every rank, as after DDP's all-reduce."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        device = torch.device(args.device)
        host_memory(device, args.release_host_memory)
        model, optimizer = build(args, device)
        sparsity = DynamicSparsity(model, sparsity_config(args), optimizer)
        for i, p in enumerate(model.parameters()):
            g = torch.Generator(device=device).manual_seed(i)
            p.grad = torch.randn(p.shape, generator=g, device=device) * 1e-3
        optimizer.step()  # creates the Adam state that updates also clean
        times, cpu_times = [], []
        for _ in range(args.updates):
            dist.barrier()
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            sparsity.update_topology()
            sync(device)
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        shapes = sparsity.shapes
        updated = sparsity.last_owners  # the tensors the update scored, and by whom
        owned = sum(shapes[n].numel() for n, o in updated.items() if o == rank) / sum(
            shapes[n].numel() for n in updated
        )
        rows = [None] * world
        row = {"rank": rank, "update": statistics.median(times), "cpu": statistics.median(cpu_times), "owned": owned}
        dist.all_gather_object(rows, row)
        if rank == 0:
            Path(out).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def split_update_times(args: argparse.Namespace, world: int) -> list[dict]:
    """Per-rank median update time with the update split over `world` gloo processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.json"
        out = Path(tmp) / "rows.json"
        job.write_text(json.dumps({"world": world, "port": port, "out": str(out), "args": vars(args)}))
        # fresh interpreters running this file: works however this module was imported
        procs = [
            subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--rank-job", str(job), str(rank)])
            for rank in range(world)
        ]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"split-update ranks exited with {codes}")
        return json.loads(out.read_text())


def single_process(args: argparse.Namespace) -> dict[str, float]:
    """Step, hook and update times in this process; logs them and returns seconds and ratios."""
    device = torch.device(args.device)
    model, optimizer = build(args, device)
    config = model.config
    gen = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, config.vocab_size, (args.batch, args.seq_len), generator=gen).to(device)
        for _ in range(args.steps + 1)
    ]

    def forward_backward(ids: torch.Tensor) -> None:
        model(input_ids=ids, labels=ids, use_cache=False, return_logits=False).loss.backward()  # as the trainer

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

    sparsity = DynamicSparsity(model, sparsity_config(args), optimizer)
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
    opt_s = statistics.median(opt_steps)
    hook_s = statistics.median(hooks)
    update_s = statistics.median(updates)
    tokens = args.batch * args.seq_len
    paper_tokens = args.paper_batch * args.seq_len
    # Scaled, not measured: forward/backward grow linearly with the tokens, AdamW and the hook are
    # paid once per optimizer step whatever the batch.
    fb_s = step_s - opt_s
    paper_step_s = fb_s * paper_tokens / tokens + opt_s
    last = sparsity.last_update
    log.info(
        f"device={device} size={args.size} H={args.ensemble_size} head_layers={args.head_layers} "
        f"micro-batch={args.batch}x{args.seq_len} threads={torch.get_num_threads()}"
    )
    log.info(
        f"params: {n_total / 1e6:.1f}M, sparse: {n_sparse / 1e6:.1f}M in {len(sparsity.names)} tensors, "
        f"density {sparsity.density:.4f}"
    )
    log.info(f"micro-batch step    : {step_s:.3f} s measured (median of {len(plain)}; {tokens} tokens)")
    log.info(f"  of which AdamW    : {opt_s:.3f} s")
    log.info(
        f"paper-batch step    : {paper_step_s:.1f} s SCALED from the micro-batch step "
        f"(forward/backward x {paper_tokens / tokens:g} for {args.paper_batch}x{args.seq_len} tokens, + one AdamW step)"
    )
    log.info(f"hooked step         : {statistics.median(hooked):.3f} s (micro-batch)")
    log.info(
        f"hook overhead       : {hook_s * 1e3:.1f} ms per optimizer step = {100 * hook_s / paper_step_s:.3f} % of a "
        f"paper-batch step (target < 2 %), {100 * hook_s / step_s:.2f} % of a micro-batch step"
    )
    log.info(
        f"mask update         : {update_s:.3f} s = {update_s / paper_step_s:.4f} paper-batch steps (target <= 0.1), "
        f"{update_s / step_s:.2f} micro-batch steps; pruned {last.pruned}, grown {last.grown}"
    )
    row = {
        "step": step_s,
        "optimizer_step": opt_s,
        "paper_step": paper_step_s,
        "hooked_step": statistics.median(hooked),
        "hook": hook_s,
        "hook_ratio": hook_s / step_s,
        "hook_paper_ratio": hook_s / paper_step_s,
        "update": update_s,
        "update_ratio": update_s / step_s,
        "update_paper_ratio": update_s / paper_step_s,
        "density": sparsity.density,
        "pruned": float(last.pruned),
        "grown": float(last.grown),
    }
    return row


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark, logs it and returns its numbers (seconds and ratios)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    log.info("host_memory=%s", host_memory(torch.device(args.device), args.release_host_memory))
    row = single_process(args)  # its model is freed before the ranks build theirs
    # Wall time is what a run pays; CPU time is the per-rank work, and the fairer measure where
    # the ranks share (or are short of) cores.
    slowest: dict[int, list[float]] = {w: [] for w in args.world_sizes}
    slowest_cpu: dict[int, list[float]] = {w: [] for w in args.world_sizes}
    for round_ in range(args.rounds):
        for world in args.world_sizes:
            ranks = split_update_times(args, world)
            slowest[world].append(max(r["update"] for r in ranks))
            slowest_cpu[world].append(max(r["cpu"] for r in ranks))
            shares = ", ".join(
                f"rank {r['rank']}: {r['update']:.3f} s wall, {r['cpu']:.3f} s CPU, "
                f"{100 * r['owned']:.0f} % of the updated weights"
                for r in ranks
            )
            log.info(f"split update, world {world}, round {round_ + 1}: {slowest[world][-1]:.3f} s per rank ({shares})")
    per_world = {w: statistics.median(t) for w, t in slowest.items()}
    per_world_cpu = {w: statistics.median(t) for w, t in slowest_cpu.items()}
    for world in args.world_sizes:
        log.info(
            f"split update, world {world}: {per_world[world]:.3f} s wall, {per_world_cpu[world]:.3f} s CPU per rank "
            f"(the slowest rank; median of {args.rounds} round(s))"
        )
    row["world_update"] = per_world
    row["world_update_cpu"] = per_world_cpu
    if 1 in per_world and len(per_world) > 1:
        for world in per_world:
            if world != 1:
                ratio = per_world[world] / per_world[1]
                cpu_ratio = per_world_cpu[world] / per_world_cpu[1]
                row[f"world_ratio_{world}"] = ratio
                row[f"world_cpu_ratio_{world}"] = cpu_ratio
                log.info(
                    f"  world {world} / world 1: {ratio:.2f} wall, {cpu_ratio:.2f} CPU "
                    f"(target <= 0.6 for 2; {1 / world:.2f} is a perfect split)"
                )
    return row


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rank-job":
        job = json.loads(Path(sys.argv[2]).read_text())
        rank_update_times(int(sys.argv[3]), job["world"], argparse.Namespace(**job["args"]), job["port"], job["out"])
    else:
        main()
