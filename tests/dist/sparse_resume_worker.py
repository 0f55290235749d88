"""Two-process save -> load -> continue for DST under accelerate, launched by tests/test_sparse_distributed.py.

    torchrun --nproc_per_node 2 tests/dist/sparse_resume_worker.py ENGINE OUT_DIR PHASE
    PHASE straight: train all steps, saving an accelerate checkpoint (DST state registered) mid-way
    PHASE resume:   fresh processes load that checkpoint and train the remaining steps

Rank 0 writes OUT_DIR/PHASE.pt with the final masks and full weights, for the test to compare.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from sparse_worker import ACCUM, STEPS, build, full_value, loss_fn, micro_batch, sparsity_config

from nt_llm.cli.train import leave_process_group
from nt_llm.sparse import DynamicSparsity

# Updates happen after steps 2, 4, 6, 8: stopping after 5 resumes between two updates.
RESUME_AT = 5


def train(accelerator, model, optimizer, sparsity: DynamicSparsity, steps: range, rank: int) -> None:
    for step in steps:
        for micro in range(ACCUM):
            with accelerator.accumulate(model):
                accelerator.backward(loss_fn(model, micro_batch(step, micro, rank)))
                if accelerator.sync_gradients:
                    sparsity.before_optimizer_step()
                    optimizer.step()
                    sparsity.after_optimizer_step(optimizer.step_was_skipped)
                optimizer.zero_grad()


def main() -> None:
    engine, out_dir, phase = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    accelerator, model, optimizer = build(engine)
    rank = dist.get_rank()
    sparsity = DynamicSparsity(model, sparsity_config(), optimizer)
    accelerator.register_for_checkpointing(sparsity)
    checkpoint = out_dir / "mid"
    if phase == "straight":
        train(accelerator, model, optimizer, sparsity, range(RESUME_AT), rank)
        accelerator.save_state(str(checkpoint))
        accelerator.wait_for_everyone()
    elif phase == "resume":
        accelerator.load_state(str(checkpoint))
        assert sparsity.step == RESUME_AT, f"restored DST step {sparsity.step}, expected {RESUME_AT}"
    else:
        raise ValueError(f"PHASE must be straight or resume, got {phase!r}")
    train(accelerator, model, optimizer, sparsity, range(RESUME_AT, STEPS), rank)
    assert sparsity.step == STEPS

    inner = accelerator.unwrap_model(model)
    weights = {n: full_value(p, "weight").cpu() for n, p in inner.named_parameters()}
    if rank == 0:
        result = {
            "masks": {n: m.cpu() for n, m in sparsity.masks.items()},
            "weights": weights,
            "last_update": sparsity.last_update.step,
        }
        torch.save(result, out_dir / f"{phase}.pt")
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
    leave_process_group()
