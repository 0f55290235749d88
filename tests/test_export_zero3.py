"""Export from a checkpoint written by 2-process DeepSpeed ZeRO-3 training (gloo, CPU), launched for real with the
trainer tests' launcher: one torchrun training of 6 steps (about 20 s), which is also the default run's check of the
trainer under ZeRO-3 (its invariants on both ranks, as tests/test_train_distributed.py checks every stage).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.no_nt_llm import check_loads_without_nt_llm
from helpers.train_dist import assert_deepspeed_run, deepspeed_env, launch_trainer
from helpers.training import SEQ_LEN, tiny_recipe
from safetensors.torch import load_file

from nt_llm import export as nt_export
from nt_llm.checkpoint import Checkpoint
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM


@pytest.fixture(scope="module")
def zero3_step(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("zero3")
    summary = launch_trainer(tmp, tiny_recipe(tmp, data={"batch_size": 2}), deepspeed_env(tmp, 3))
    # The default run's trainer under ZeRO-3 (tests/test_train_distributed.py runs every stage, slow).
    assert_deepspeed_run(summary, tmp / "run", 3)
    return Path(summary["checkpoint"])


def test_checkpoint_holds_two_zero3_shards(zero3_step: Path) -> None:
    assert json.loads((zero3_step / "checkpoint.json").read_text())["world_size"] == 2
    shards = sorted((zero3_step / "state" / "pytorch_model").glob("zero_pp_rank_*_mp_rank_00_model_states.pt"))
    assert len(shards) == 2


def test_zero3_export_matches_the_sharded_weights_and_loads_without_nt_llm(zero3_step: Path, tmp_path: Path) -> None:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ensemble = nt_export.export(zero3_step, tmp_path / "ensemble")
    assert ensemble.masked_nonzero == 0
    # How heads execute and training-only loss options are not part of an exported model.
    config = json.loads((ensemble.out / "config.json").read_text())
    assert not {"head_execution", "loss_reduction", "loss_chunk_size"} & set(config)
    exported = load_file(ensemble.out / "model.safetensors")
    # The engine's own fp32 master weights, consolidated from the two ranks' shards: the training model.
    master = get_fp32_state_dict_from_zero_checkpoint(str(zero3_step / "state"))
    assert set(master) == set(exported)
    for name, weight in exported.items():
        assert torch.equal(weight, master[name].to(weight.dtype)), name
    for name, mask in Checkpoint(zero3_step).masks().items():
        assert not exported[name][~mask].any(), name

    config = NeuroTrailsConfig.from_pretrained(zero3_step / "model")
    trained = NeuroTrailsForCausalLM(config).eval()
    trained.load_state_dict(master)
    ids = torch.randint(3, config.vocab_size, (2, SEQ_LEN))
    with torch.no_grad():
        out = trained(ids, output_head_logits=True)
    subset = nt_export.export(zero3_step, tmp_path / "subset", nt_export.ExportOptions(heads=(0, 2)))
    single = nt_export.export(zero3_step, tmp_path / "single", nt_export.ExportOptions(single_head=2))
    reference = {
        "ids": ids,
        "logits": out.logits,
        "subset": out.head_logits[[0, 2]].mean(0),
        "single": out.head_logits[2],
        "eos": config.eos_token_id,
    }
    check_loads_without_nt_llm(tmp_path, [ensemble.out, subset.out, single.out], reference)
