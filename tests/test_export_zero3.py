"""Export from a checkpoint written by 2-process DeepSpeed ZeRO-3 training (gloo, CPU), launched for real.

Needs the deepspeed extra (installed by `make install`); one torchrun training of 4 steps, about 15 s.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_export import CHILD_LOADS_EXPORTS, SEQ_LEN, tiny_recipe

from nt_llm import export as nt_export
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM

REPO_ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
# Small tensors partitioned too (threshold 0), and the full weights gathered at save: without the latter,
# accelerator.get_state_dict refuses under ZeRO-3 and the checkpoint's model/ folder cannot be written.
DS_CONFIG = {
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                          "stage3_gather_16bit_weights_on_model_save": True},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def zero3_step(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("zero3")
    recipe = tiny_recipe(tmp, tmp / "run", batch_size=2)  # 2 sequences x 2 processes = total_batch_size 4
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp / "ds.json").write_text(json.dumps(DS_CONFIG))
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}  # it would switch DeepSpeed off
    env.update(ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_CONFIG_FILE=str(tmp / "ds.json"))
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(REPO_ROOT / "pretrain.py"), "--recipe", str(tmp / "recipe.yaml")]
    proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"ZeRO-3 training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return tmp / "run" / "checkpoints" / "step_4"


def _zero_shards(step: Path) -> list[Path]:
    return sorted((step / "state" / "pytorch_model").glob("zero_pp_rank_*_mp_rank_00_model_states.pt"))


def test_checkpoint_really_is_two_process_zero3(zero3_step: Path) -> None:
    manifest = json.loads((zero3_step / "checkpoint.json").read_text())
    assert manifest["world_size"] == 2
    shards = _zero_shards(zero3_step)
    assert len(shards) == 2
    engine = torch.load(shards[0], map_location="cpu", weights_only=False)
    assert engine["ds_config"]["zero_optimization"]["stage"] == 3 and engine["dp_world_size"] == 2


def test_zero3_export_matches_the_sharded_weights_and_loads_without_nt_llm(zero3_step: Path,
                                                                         tmp_path: Path) -> None:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ensemble = nt_export.export(zero3_step, tmp_path / "ensemble")
    assert ensemble.masked_nonzero == 0
    exported = load_file(ensemble.out / "model.safetensors")
    # The engine's own fp32 master weights, consolidated from the two ranks' shards: the training model.
    master = get_fp32_state_dict_from_zero_checkpoint(str(zero3_step / "state"))
    assert set(master) == set(exported)
    for name, weight in exported.items():
        assert torch.equal(weight, master[name].to(weight.dtype)), name
    for name, mask in nt_export.load_masks(zero3_step).items():
        assert not exported[name][~mask].any(), name

    config = NeuroTrailsConfig.from_pretrained(zero3_step / "model")
    trained = NeuroTrailsForCausalLM(config).eval()
    trained.load_state_dict(master)
    ids = torch.randint(3, config.vocab_size, (2, SEQ_LEN))
    with torch.no_grad():
        out = trained(ids, output_head_logits=True)
    subset = nt_export.export(zero3_step, tmp_path / "subset", nt_export.ExportOptions(heads=(0, 2)))
    single = nt_export.export(zero3_step, tmp_path / "single", nt_export.ExportOptions(single_head=2))
    torch.save({"ids": ids, "logits": out.logits, "subset": out.head_logits[[0, 2]].mean(0),
                "single": out.head_logits[2]}, tmp_path / "ref.pt")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    child = subprocess.run([sys.executable, "-c", CHILD_LOADS_EXPORTS, str(ensemble.out), str(subset.out), str(single.out),
                            str(tmp_path / "ref.pt")], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "ok NeuroTrailsForCausalLM" in child.stdout
