"""What `make demo` runs until training lands: build the tiny NeuroTrails model, take optimizer steps on
random tokens, save it as a Hugging Face folder and load it back with trust_remote_code."""

import logging
import tempfile

import torch
from transformers import AutoModelForCausalLM

from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config

log = logging.getLogger("nt_llm.smoke")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    model = NeuroTrailsForCausalLM(build_config("tiny", "neurotrails", vocab_size=512))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens = torch.randint(0, 512, (8, 64))
    for step in range(5):
        out = model(tokens, labels=tokens)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        log.info("step %d  loss %.3f  per head %s", step, out.loss.item(), [round(v, 3) for v in out.head_losses.tolist()])
    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            same = torch.allclose(model(tokens).logits, loaded(tokens).logits)
    log.info("saved and reloaded with trust_remote_code: logits equal = %s", same)
    if not same:
        raise SystemExit("reloaded model differs")


if __name__ == "__main__":
    main()
