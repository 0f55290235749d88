"""Two-process training worker for tests/test_train_distributed.py (launched with torchrun, gloo on CPU).

    torchrun --standalone --nproc_per_node 2 tests/dist/train_worker.py RECIPE.yaml SUMMARY.json [--resume X]

Runs the real trainer, then inspects the live objects on every rank: world size and engine, weights identical
on every rank (gathered under ZeRO-3 and FSDP2), masks identical on every rank, masked-out weights exactly zero in
the module and (DeepSpeed) in the fp32 master copy, and each sparse tensor at its target count. Rank 0 writes the
summary.
"""

import argparse
import json

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from nt_llm.cli.train import leave_process_group
from nt_llm.train import load_recipe
from nt_llm.train.trainer import Trainer


def full_weight(param: torch.nn.Parameter) -> torch.Tensor:
    if hasattr(param, "ds_id"):  # ZeRO-3 partition: gather the whole tensor on every rank
        import deepspeed

        with deepspeed.zero.GatheredParameters([param]):
            return param.detach().clone()
    if isinstance(param, DTensor):  # FSDP2 shard: a collective, every rank in the same order
        return param.detach().full_tensor()
    return param.detach().clone()


def fp32_master(param: torch.nn.Parameter) -> torch.Tensor | None:
    from deepspeed.utils import safe_get_full_fp32_param

    return safe_get_full_fp32_param(param)


def same_on_every_rank(tensor: torch.Tensor) -> bool:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return all(torch.equal(gathered[0], t) for t in gathered[1:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("summary")
    parser.add_argument("--resume")
    args = parser.parse_args()

    trainer = Trainer(load_recipe(args.recipe))
    result = trainer.run(args.resume)
    accelerator = trainer.accelerator
    deepspeed = accelerator.state.deepspeed_plugin is not None

    module = accelerator.unwrap_model(trainer.model)
    weights = torch.cat([full_weight(p).float().flatten() for p in module.parameters()])
    checks = {"weights_identical": same_on_every_rank(weights)}
    sparsity = trainer.sparsity
    if sparsity is not None:
        masks = torch.cat([m.flatten().to(torch.uint8) for m in sparsity.masks.values()])
        checks["masks_identical"] = same_on_every_rank(masks)
        named = dict(module.named_parameters())
        zero_in_module, zero_in_master, at_target = True, True, True
        for name, mask in sparsity.masks.items():
            weight = full_weight(named[name]).reshape(mask.shape)
            zero_in_module &= bool((weight[~mask] == 0).all())
            at_target &= int(mask.sum()) == sparsity.targets[name] == int(weight.count_nonzero())
            if deepspeed:
                master = fp32_master(named[name]).reshape(mask.shape)
                zero_in_master &= bool((master[~mask] == 0).all())
        checks.update(zero_in_module=zero_in_module, zero_in_master=zero_in_master, at_target=at_target)

    if accelerator.is_main_process:
        summary = {
            "world_size": accelerator.num_processes,
            "distributed_type": accelerator.distributed_type.name,
            "zero_stage": accelerator.state.deepspeed_plugin.zero_stage if deepspeed else None,
            "fsdp_version": accelerator.state.fsdp_plugin.fsdp_version if accelerator.is_fsdp2 else None,
            "dst_engine": type(sparsity.engine).__name__ if sparsity is not None else None,
            "sharded_parameters": sum(isinstance(p, DTensor) for p in module.parameters()),
            "parameters": sum(1 for _ in module.parameters()),
            "config_keys": sorted(module.config.to_dict()),
            "step": result.step,
            "checkpoint": str(result.checkpoint),
            "metrics": result.metrics,
            "checks": checks,
        }
        with open(args.summary, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
    leave_process_group()
