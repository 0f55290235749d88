"""save_pretrained / from_pretrained, in this process and in fresh ones (with and without nt_llm)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from helpers.configs import TINY_GQA_FIELDS as TINY_LLAMA
from helpers.no_nt_llm import BLOCK_NT_LLM
from transformers import AutoConfig, AutoModelForCausalLM

import nt_llm  # noqa: F401  (registers the Auto classes)
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM

TINY = {**TINY_LLAMA, "ensemble_size": 3, "head_layers": 2}


def saved_model(tmp_path: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    model = NeuroTrailsForCausalLM(NeuroTrailsConfig(**TINY)).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    input_ids = torch.randint(0, TINY["vocab_size"], (2, 7))
    with torch.no_grad():
        logits = model(input_ids).logits
    torch.save({"input_ids": input_ids, "logits": logits}, tmp_path / "expected.pt")
    return folder, input_ids, logits


def run_child(code: str, tmp_path: Path) -> str:
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_saved_folder_carries_its_code(tmp_path: Path) -> None:
    folder, _, _ = saved_model(tmp_path)
    config = (folder / "config.json").read_text()
    assert '"model_type": "neurotrails"' in config
    assert "modeling_neurotrails.NeuroTrailsForCausalLM" in config  # auto_map
    assert (folder / "modeling_neurotrails.py").is_file()
    assert (folder / "configuration_neurotrails.py").is_file()


def test_round_trip_in_process_restores_weights_and_rotary_buffers(tmp_path: Path) -> None:
    folder, input_ids, logits = saved_model(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert isinstance(loaded, NeuroTrailsForCausalLM)
    assert isinstance(AutoConfig.from_pretrained(folder), NeuroTrailsConfig)
    fresh = NeuroTrailsForCausalLM(NeuroTrailsConfig(**TINY))
    torch.testing.assert_close(loaded.rotary_emb.inv_freq, fresh.rotary_emb.inv_freq, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, logits)


def test_a_folder_saved_before_the_one_head_path_loads_and_resaves_without_its_old_keys(tmp_path: Path) -> None:
    # Until December 2026 config.json carried how heads executed and two training-only loss options; the weight
    # layout (heads.{h}.layers.{j}...) is unchanged.
    folder, input_ids, logits = saved_model(tmp_path)
    config_file = folder / "config.json"
    legacy = {"head_execution": "batched", "loss_reduction": "sum", "loss_chunk_size": 512}
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **legacy}))
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert not any(hasattr(loaded.config, key) for key in legacy)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, logits)
    loaded.save_pretrained(tmp_path / "resaved")
    assert not set(legacy) & set(json.loads((tmp_path / "resaved" / "config.json").read_text()))


CHILD_CHECK = """
import torch
from transformers import AutoModelForCausalLM
expected = torch.load("expected.pt")
model = AutoModelForCausalLM.from_pretrained("model", trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    torch.testing.assert_close(model(expected["input_ids"]).logits, expected["logits"])
out = model.generate(expected["input_ids"], attention_mask=torch.ones_like(expected["input_ids"]),
                     max_new_tokens=3, do_sample=False, pad_token_id=0)
assert out.shape == (2, 10), out.shape
print("child ok")
"""


def test_fresh_process_without_nt_llm_loads_with_trust_remote_code(tmp_path: Path) -> None:
    saved_model(tmp_path)
    assert "child ok" in run_child(BLOCK_NT_LLM + CHILD_CHECK, tmp_path)


def test_fresh_process_really_cannot_import_nt_llm(tmp_path: Path) -> None:
    # Guards the test above: if the block failed, that test would pass through nt_llm's own classes.
    code = BLOCK_NT_LLM + "\ntry:\n    import nt_llm\nexcept ImportError:\n    print('blocked')\n"
    assert "blocked" in run_child(code, tmp_path)
