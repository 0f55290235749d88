"""Two-process DST worker, launched by tests/test_sparse_distributed.py through torchrun (gloo, CPU).

    torchrun --nproc_per_node 2 tests/dist/sparse_worker.py ENGINE OUT_DIR
    ENGINE: ddp | zero1 | zero2 | zero3 | zero3_persistent | zero2_bf16 | zero3_bf16 | fsdp2

Trains a tiny model with DynamicSparsity and asserts, after every real optimizer step: masked-out
weights are exactly zero in the module and (DeepSpeed) in the fp32 master copy; every tensor holds
its target count; masks are identical on every rank (all-gathered); every update is split over
both ranks (each gathers full tensors only for the ones it owns) and gives exactly the masks a
single-process update computes from the same full weights, gradients and seed; at the first update
RigL's dense gradient is the global one (checked against a single-process reference on all ranks' data).
At the end a checkpoint is saved and its weights are checked too. Rank 0 writes a JSON summary.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from nt_llm.cli.train import leave_process_group
from nt_llm.sparse import DynamicSparsity, LocalEngine, SparsityConfig

VOCAB, HIDDEN, STEPS, ACCUM, MICRO_BATCH = 32, 16, 8, 2, 2


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.blocks = nn.ModuleList(nn.Linear(HIDDEN, HIDDEN) for _ in range(2))
        self.head = nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.head(h)


def loss_fn(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))


def micro_batch(step: int, micro: int, rank: int) -> torch.Tensor:
    """Every rank can rebuild every rank's data (for the reference gradient)."""
    g = torch.Generator().manual_seed(1000 * step + 10 * micro + rank)
    return torch.randint(0, VOCAB, (MICRO_BATCH, 9), generator=g)


def sparsity_config() -> SparsityConfig:
    return SparsityConfig(
        density=0.4,
        include=("blocks.*.weight", "head.weight"),
        prune="soft_magnitude",
        growth="gradient",
        update_frequency=2,
        total_steps=STEPS + 4,
        prune_rate=0.3,
        seed=0,
    )


def build(engine: str):
    torch.manual_seed(0)
    model = Stack()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    if engine == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        return None, model, optimizer

    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    kwargs = {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")], "gradient_accumulation_steps": ACCUM}
    if engine.startswith("zero"):
        ds_config = {
            "train_micro_batch_size_per_gpu": MICRO_BATCH,
            "gradient_accumulation_steps": ACCUM,
            # zero3 partitions even tiny tensors; zero3_persistent keeps DeepSpeed's default
            # threshold, under which these small weights stay whole in every module
            "zero_optimization": {"stage": int(engine[4])}
            | ({"stage3_param_persistence_threshold": 0} if engine in ("zero3", "zero3_bf16") else {}),
            "gradient_clipping": 0.0,
        }
        if engine.endswith("bf16"):
            ds_config["bf16"] = {"enabled": True}
            kwargs["mixed_precision"] = "bf16"
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds_config)
    accelerator = Accelerator(**kwargs)
    expected = "DEEPSPEED" if engine.startswith("zero") else "MULTI_CPU"
    got = accelerator.distributed_type
    assert got.name == expected, f"accelerate runs {got}, expected {expected}"
    assert accelerator.num_processes == 2, f"accelerate sees {accelerator.num_processes} processes"
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


class SingleProcessEngine(LocalEngine):
    """The local engine as one process sees it, inside a distributed run: the reference update."""

    @property
    def rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1


def full_value(p: nn.Parameter, kind: str) -> torch.Tensor | None:
    """The full fp32 weight (DeepSpeed: master) or reduced gradient, by the engines' own collectives."""
    if hasattr(p, "ds_id") or hasattr(p, "_hp_mapping"):
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad

        value = safe_get_full_fp32_param(p) if kind == "weight" else safe_get_full_grad(p)
        shape = p.ds_shape if hasattr(p, "ds_shape") else p.shape
        return None if value is None else value.detach().float().clone().reshape(shape)
    value = p if kind == "weight" else p.grad
    if value is None:
        return None
    value = value.detach()
    return (value.full_tensor() if hasattr(value, "full_tensor") else value).float().clone()


def reference_update(
    before: dict, weights: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], step: int
) -> DynamicSparsity:
    """A single-process update from the same state, full weights and gradients."""
    model = Stack()
    reference = DynamicSparsity(model, sparsity_config(), engine=SingleProcessEngine(model))
    reference.load_state_dict(before)
    # after construction, which zeroes the weights outside its initial masks
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, weight in weights.items():
            named[name].copy_(weight)
    for name, grad in grads.items():
        named[name].grad = grad.clone()
    reference.update_topology(step)
    return reference


def full_weights(sparsity: DynamicSparsity) -> dict[str, torch.Tensor]:
    """Module weights as the forward sees them (gathered under ZeRO-3 / FSDP2)."""
    out = {}
    for name, p in zip(sparsity.names, sparsity.params, strict=True):
        if hasattr(p, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([p]):
                out[name] = p.detach().clone()
        elif hasattr(p, "full_tensor"):
            out[name] = p.detach().full_tensor()
        else:
            out[name] = p.detach().clone()
    return out


def check_invariants(sparsity: DynamicSparsity, engine: str, optimizer_state: bool = True) -> None:
    world = dist.get_world_size()
    for name, weight in full_weights(sparsity).items():
        mask = sparsity.masks[name]
        assert torch.count_nonzero(weight[~mask]) == 0, f"{engine}: module weight {name} nonzero where masked"
    if engine.startswith("zero"):
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        for name, p in zip(sparsity.names, sparsity.params, strict=True):
            mask = sparsity.masks[name]
            master = safe_get_full_fp32_param(p).reshape(mask.shape)
            assert torch.count_nonzero(master[~mask]) == 0, f"{engine}: fp32 master of {name} nonzero where masked"
            assert torch.count_nonzero(master[mask]) > 0, f"{engine}: fp32 master of {name} is all zero"
            for key in ("exp_avg", "exp_avg_sq") if optimizer_state else ():
                state = safe_get_full_optimizer_state(p, key).reshape(mask.shape)
                assert torch.count_nonzero(state[~mask]) == 0, f"{engine}: {key} of {name} nonzero where masked"
    for name, mask in sparsity.masks.items():
        assert int(mask.sum()) == sparsity.targets[name], f"{engine}: {name} has {int(mask.sum())} active"
        gathered = [torch.empty_like(mask, dtype=torch.uint8) for _ in range(world)]
        dist.all_gather(gathered, mask.to(torch.uint8))
        assert all(torch.equal(g, gathered[0]) for g in gathered), f"{engine}: masks of {name} differ across ranks"


def reference_grads(weights: dict[str, torch.Tensor], step: int, world: int) -> dict[str, torch.Tensor]:
    """Gradient of the mean loss over every rank's micro-batches of `step`, in one process."""
    model = Stack()
    model.load_state_dict(weights)
    losses = [loss_fn(model, micro_batch(step, m, r)) for r in range(world) for m in range(ACCUM)]
    torch.stack(losses).mean().backward()
    return {n: p.grad for n, p in model.named_parameters()}


def main() -> None:
    engine, out_dir = sys.argv[1], Path(sys.argv[2])
    accelerator, model, optimizer = build(engine)
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2, f"expected 2 processes, got {world}"
    sparsity = DynamicSparsity(model, sparsity_config(), optimizer)
    expected_engine = {"ddp": "LocalEngine", "fsdp2": "FSDP2Engine"}.get(engine, "ZeroEngine")
    assert type(sparsity.engine).__name__ == expected_engine, type(sparsity.engine).__name__
    owners = sorted(set(sparsity.last_owners.values()))
    assert owners == [0, 1], f"{engine}: the initial draw is not split over both ranks: owners {owners}"
    inner = model if accelerator is None else accelerator.unwrap_model(model)

    # Each rank gets full tensors only for the ones it owns.
    real_gather = sparsity.engine.gather_full

    def owner_only_gather(params, owners, kind):
        got = real_gather(params, owners, kind)
        owned = {i for i, o in enumerate(owners) if o == rank}
        assert set(got) == owned, f"{engine}: rank {rank} got {kind}s {sorted(got)}, owns {sorted(owned)}"
        return got

    sparsity.engine.gather_full = owner_only_gather

    # Every update must equal a single-process one on the same full values; the first one's
    # dense grads and all weights are kept for the global-gradient check below.
    captured: dict[str, dict[str, torch.Tensor]] = {}
    real_update = sparsity.update_topology
    checked_updates = []

    def checked_update(step=None):
        weights = {n: full_value(p, "weight") for n, p in inner.named_parameters()}
        grads = {n: full_value(p, "grad") for n, p in zip(sparsity.names, sparsity.params, strict=True)}
        before = sparsity.state_dict()
        stats = real_update(step)
        reference = reference_update(before, weights, grads, stats.step)
        for name, mask in sparsity.masks.items():
            assert torch.equal(mask.cpu(), reference.masks[name]), f"{engine}: {name} differs from one process"
        assert (stats.pruned, stats.grown) == (reference.last_update.pruned, reference.last_update.grown)
        checked_updates.append(stats.step)
        if "grads" not in captured:
            captured["weights"], captured["grads"] = weights, grads
        return stats

    sparsity.update_topology = checked_update
    check_invariants(sparsity, engine, optimizer_state=False)  # DeepSpeed creates it at the first step

    updates = []
    for step in range(STEPS):
        for micro in range(ACCUM):
            ids = micro_batch(step, micro, rank)
            if accelerator is None:  # raw FSDP2: accumulate by hand
                (loss_fn(model, ids) / ACCUM).backward()
                continue
            with accelerator.accumulate(model):
                accelerator.backward(loss_fn(model, ids))
                if accelerator.sync_gradients:
                    sparsity.before_optimizer_step()
                    optimizer.step()
                    sparsity.after_optimizer_step(optimizer.step_was_skipped)
                optimizer.zero_grad()
        if accelerator is None:
            sparsity.before_optimizer_step()
            optimizer.step()
            sparsity.after_optimizer_step()
            optimizer.zero_grad()
        assert sparsity.step == step + 1, f"{engine}: DST counted {sparsity.step} steps, expected {step + 1}"
        if sparsity.last_update.step == sparsity.step:
            last = sparsity.last_update
            updates.append({"step": last.step, "pruned": last.pruned, "grown": last.grown})
        check_invariants(sparsity, engine)

    # RigL used the global dense gradient (mean over both ranks and both micro-batches of step 2).
    reference = reference_grads(captured["weights"], step=1, world=world)
    for name, grad in captured["grads"].items():
        # bf16 runs the forward in bf16: the fp32 reference then only agrees roughly
        tol = {"rtol": 5e-2, "atol": 2e-3} if engine.endswith("bf16") else {"rtol": 1e-4, "atol": 1e-6}
        torch.testing.assert_close(grad, reference[name], **tol, msg=lambda m, name=name: f"{engine} {name}: {m}")

    checked_checkpoint = False
    if accelerator is not None:
        accelerator.register_for_checkpointing(sparsity)
        ckpt = out_dir / "ckpt"
        accelerator.save_state(str(ckpt))
        accelerator.wait_for_everyone()
        if rank == 0:
            for saved in load_saved_weights(ckpt, engine):
                for name, mask in sparsity.masks.items():
                    value = saved[name].reshape(mask.shape)
                    assert torch.count_nonzero(value[~mask]) == 0, f"{engine}: checkpoint {name}"
                    assert torch.count_nonzero(value[mask]) > 0
            dst_state = torch.load(ckpt / "custom_checkpoint_0.pkl", weights_only=False)
            for name, mask in sparsity.masks.items():
                assert torch.equal(dst_state["masks"][name], mask.cpu())
            checked_checkpoint = True
        accelerator.wait_for_everyone()

    if rank == 0:
        summary = {
            "engine": engine,
            "world_size": world,
            "steps": sparsity.step,
            "updates": updates,
            "density": sparsity.density,
            # final topology, to compare engines: active flat indices per tensor
            "active": {n: m.reshape(-1).nonzero().squeeze(1).tolist() for n, m in sparsity.masks.items()},
            "rigl_grads_checked": sorted(captured["grads"]),
            "single_process_checked": checked_updates,
            "checked_checkpoint": checked_checkpoint,
        }
        (out_dir / "summary.json").write_text(json.dumps(summary))
    dist.barrier()


def load_saved_weights(ckpt: Path, engine: str) -> list[dict[str, torch.Tensor]]:
    """Every copy of the weights a checkpoint holds: the module file, DeepSpeed's fp32 master
    (merged partitions) and, under ZeRO-1/2, the module weights DeepSpeed saves beside it."""
    if engine.startswith("zero"):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        copies = [get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="pytorch_model")]
        if not engine.startswith("zero3"):
            module_file = ckpt / "pytorch_model" / "mp_rank_00_model_states.pt"
            copies.append(torch.load(module_file, weights_only=False)["module"])
        return copies
    from safetensors.torch import load_file

    return [load_file(str(ckpt / "model.safetensors"))]


if __name__ == "__main__":
    main()
    leave_process_group()
