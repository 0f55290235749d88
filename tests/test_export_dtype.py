"""nt-llm export --dtype: the weights and config.json's dtype follow it, the default keeps the checkpoint's dtype, and
a bf16 export loads with the folder's own code and gives the fp32 export's logits to bf16 precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.no_nt_llm import BLOCK_NT_LLM
from helpers.zero_shot import save_tiny_neurotrails
from safetensors import safe_open

from nt_llm import export as nt_export
from nt_llm.cli import export as export_cli


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare fp32 NeuroTrails folder (2 heads), as a checkpoint's model/ folder is."""
    return save_tiny_neurotrails(tmp_path_factory.mktemp("dtype_source"))


def _stored_dtypes(folder: Path) -> set[torch.dtype]:
    with safe_open(folder / "model.safetensors", framework="pt") as weights:
        return {weights.get_slice(name).get_dtype() for name in weights.keys()}


def _config_dtype(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["dtype"]


def test_default_keeps_the_checkpoints_dtype_and_bf16_casts(source: Path, tmp_path: Path) -> None:
    assert _stored_dtypes(source) == {"F32"}
    kept = nt_export.export(source, tmp_path / "kept")
    assert kept.dtype == "float32" and _config_dtype(kept.out) == "float32" and _stored_dtypes(kept.out) == {"F32"}
    bf16 = nt_export.export(source, tmp_path / "bf16", nt_export.ExportOptions(dtype="bf16"))
    assert bf16.dtype == "bfloat16" and _config_dtype(bf16.out) == "bfloat16" and _stored_dtypes(bf16.out) == {"BF16"}
    assert "Stored in bfloat16" in (bf16.out / "README.md").read_text()
    # And back: a bf16 folder exported with --dtype fp32 is fp32 again (the bf16 values, exactly).
    back = nt_export.export(bf16.out, tmp_path / "back", nt_export.ExportOptions(dtype="fp32"))
    assert _config_dtype(back.out) == "float32" and _stored_dtypes(back.out) == {"F32"}
    assert bf16.counts == back.counts  # the same nonzeros, whatever the dtype
    single = nt_export.export(source, tmp_path / "single", nt_export.ExportOptions(single_head=1, dtype="bf16"))
    assert _config_dtype(single.out) == "bfloat16" and _stored_dtypes(single.out) == {"BF16"}


_COMPARE_WITHOUT_NT_LLM = (
    BLOCK_NT_LLM
    + """
import torch
from transformers import AutoModelForCausalLM
fp32, bf16 = sys.argv[1:3]
reference = AutoModelForCausalLM.from_pretrained(fp32, trust_remote_code=True).eval()
model = AutoModelForCausalLM.from_pretrained(bf16, trust_remote_code=True).eval()
assert "nt_llm" not in sys.modules and not type(model).__module__.startswith("nt_llm"), type(model).__module__
# Loaded in the dtype config.json names, by default.
assert model.dtype == torch.bfloat16 and reference.dtype == torch.float32, (model.dtype, reference.dtype)
torch.manual_seed(0)
ids = torch.randint(4, model.config.vocab_size, (2, 12))
with torch.no_grad():
    want = reference(ids).logits
    got = model(ids).logits
assert got.dtype == torch.bfloat16, got.dtype
# bf16 keeps 8 bits of mantissa: the logits agree to within a few hundredths of the largest, not exactly.
torch.testing.assert_close(got.float(), want, rtol=0.0, atol=0.05 * want.abs().max().item())
agree = (got.float().argmax(-1) == want.argmax(-1)).float().mean().item()
assert agree > 0.9, agree
assert model.generate(ids[:, :4], max_new_tokens=3, do_sample=False).shape == (2, 7)
print("close", agree)
"""
)


def test_a_bf16_export_loads_with_remote_code_close_to_the_fp32_export(source: Path, tmp_path: Path) -> None:
    fp32 = nt_export.export(source, tmp_path / "fp32", nt_export.ExportOptions(dtype="fp32")).out
    bf16 = nt_export.export(source, tmp_path / "bf16", nt_export.ExportOptions(dtype="bf16")).out
    # A fresh process where nt_llm cannot be imported: the folder's own code, as on a machine without nt_llm.
    proc = subprocess.run(
        [sys.executable, "-c", _COMPARE_WITHOUT_NT_LLM, str(fp32), str(bf16)],
        env={**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "close" in proc.stdout


def test_bad_dtype_is_named_and_the_cli_takes_dtype(source: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(nt_export.ExportError, match="dtype must be one of \\['bf16', 'fp32'\\].*'fp16'"):
        nt_export.ExportOptions(dtype="fp16")
    assert export_cli.main([str(source), str(tmp_path / "out"), "--dtype", "bf16"]) == 0
    assert _config_dtype(tmp_path / "out") == "bfloat16"
    with pytest.raises(SystemExit):
        export_cli.main([str(source), str(tmp_path / "bad"), "--dtype", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
    help_text = export_cli.build_parser().format_help()
    assert "--dtype {bf16,fp32}" in help_text and "default: keep the checkpoint's dtype" in help_text
