"""A machine with an exported folder and no nt_llm: code prepended to a child process's script so that
`import nt_llm` fails there, and the check that exported folders load and predict in such a process."""

import os
import subprocess
import sys
from pathlib import Path

import torch

BLOCK_NT_LLM = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "nt_llm" or name.startswith("nt_llm."):
            raise ImportError("nt_llm is not available in this process")
        return None
sys.meta_path.insert(0, _Block())
"""

CHILD_LOADS_EXPORTS = (
    BLOCK_NT_LLM
    + """
import json
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
ensemble, subset, single, ref_path = sys.argv[1:5]
ref = torch.load(ref_path)
ids = ref["ids"]
def load(folder, **kwargs):
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
with torch.no_grad():
    model = load(ensemble, trust_remote_code=True)
    assert not type(model).__module__.startswith("nt_llm"), type(model).__module__
    torch.testing.assert_close(model(ids).logits, ref["logits"], rtol=1e-5, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(ensemble, trust_remote_code=True)
    prompt = tokenizer("Doc 3: the market", return_tensors="pt").input_ids
    out = model.generate(prompt, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, prompt.shape[1] + 4), out.shape
    # Greedy decoding with the KV cache must pick what the full forward pass picks.
    full = model(out[:, :-1]).logits[0, prompt.shape[1] - 1:].argmax(-1)
    assert torch.equal(full, out[0, prompt.shape[1]:]), (full, out)
    # Batched generation pads with the exported pad id (EOS with the test tokenizer, a trained row): each row as if
    # generated alone.
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id == ref["eos"]
    tokenizer.padding_side = "left"
    texts = ["Doc 3: the market", "Doc 9"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    assert (batch.attention_mask == 0).any()
    greedy = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    together = model.generate(**batch, **greedy)[:, batch.input_ids.shape[1]:]
    for row, text in enumerate(texts):
        alone = tokenizer(text, return_tensors="pt")
        assert torch.equal(together[row], model.generate(**alone, **greedy)[0, alone.input_ids.shape[1]:]), text
    sub = load(subset, trust_remote_code=True)
    torch.testing.assert_close(sub(ids).logits, ref["subset"], rtol=1e-5, atol=1e-5)
    llama = load(single)  # no custom code
    assert type(llama).__name__ == "LlamaForCausalLM", type(llama)
    torch.testing.assert_close(llama(ids).logits, ref["single"], rtol=1e-5, atol=1e-5)
    llama.generate(ids[:, :4], max_new_tokens=2, do_sample=False)
assert "nt_llm" not in sys.modules
print("ok", type(model).__name__)
"""
)


def check_loads_without_nt_llm(tmp_path: Path, folders: list[Path], reference: dict[str, torch.Tensor]) -> None:
    """Run CHILD_LOADS_EXPORTS on [ensemble, subset, single head] folders against reference logits."""
    torch.save(reference, tmp_path / "ref.pt")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    child = subprocess.run(
        [sys.executable, "-c", CHILD_LOADS_EXPORTS, *map(str, folders), str(tmp_path / "ref.pt")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert "ok NeuroTrailsForCausalLM" in child.stdout
