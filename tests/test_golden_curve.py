"""The golden loss curve: the tiny NeuroTrails recipe, 20 steps on the embedded corpus, one CPU thread.

The recipe as it is (model, sparsity, data source, tokenizer, optimiser), with 4 x 64-token steps instead of
8 x 128 so that the test takes seconds, a mask update every 5 steps so that the DST updates are part of it, and a
small validation set.

A refactor that changes what training computes (the model's arithmetic, the DST masks, the data order, the
schedules) changes these numbers; one that only moves code does not. The curve is checked in
(``tests/golden/neurotrails_tiny.json``), like torchtitan's. Losses must match to ``LOSS_TOLERANCE`` (fp32 with
one thread is deterministic on one machine; the tolerance absorbs kernel differences between x86 CPUs), the
number of active weights exactly.

A change that is meant to change the numbers regenerates the file, and its commit says why:
``NT_LLM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_curve.py``.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from nt_llm.data import prepare as prep
from nt_llm.train import load_recipe, train
from nt_llm.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden") / "neurotrails_tiny.json"
LOSS_TOLERANCE = 1e-4
STEPS = 20


def _overrides(output_dir: Path) -> list[str]:
    return [
        f"run.output_dir={output_dir}",
        f"optim.max_steps={STEPS}",
        "optim.warmup_steps=5",
        "sparsity.update_frequency=5",
        f"eval.every={STEPS}",
        f"checkpoint.every={STEPS}",
        "checkpoint.keep_last=1",
        "data.batch_size=4",
        "data.seq_len=64",
        "optim.total_batch_size=4",
        "data.validation_tokens=2048",
        "logging.every=1",
        "logging.progress_bar=false",
        "logging.trackers=[none]",
    ]


def _curve(run_dir: Path) -> dict:
    events = read_metrics(run_dir / "metrics.jsonl")
    train_events = [e for e in events if e["event"] == "train"]
    final = [e for e in events if e["event"] == "eval"][-1]
    dst = [e for e in events if e["event"] == "dst"]
    return {
        "loss": [e["loss"] for e in train_events],
        "head_losses": [[e[f"head{h}_loss"] for h in range(3)] for e in train_events],
        "eval_ensemble_loss": final["ensemble_loss"],
        "dst_steps": [e["step"] for e in dst],
        "dst_pruned": [int(e["pruned"]) for e in dst],
    }


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_golden_loss_curve(tmp_path: Path, one_thread: None) -> None:
    if not prep.is_prepared(REPO / "data"):
        message = "the embedded corpus is not prepared in data/: run `make data`"
        if os.environ.get("NT_LLM_REQUIRE_EMBEDDED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    recipe = load_recipe(REPO / "recipes" / "neurotrails_tiny.yaml", _overrides(tmp_path / "run"))
    train(recipe)
    curve = _curve(tmp_path / "run")
    assert len(curve["loss"]) == STEPS and curve["dst_steps"] == [5, 10, 15, 20]

    if os.environ.get("NT_LLM_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(curve, indent=1) + "\n", encoding="utf-8")
        pytest.skip(f"NT_LLM_UPDATE_GOLDEN=1: {GOLDEN} regenerated, nothing compared")
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert curve["dst_steps"] == golden["dst_steps"]
    assert curve["dst_pruned"] == golden["dst_pruned"]
    torch.testing.assert_close(torch.tensor(curve["loss"]), torch.tensor(golden["loss"]), rtol=0, atol=LOSS_TOLERANCE)
    torch.testing.assert_close(
        torch.tensor(curve["head_losses"]), torch.tensor(golden["head_losses"]), rtol=0, atol=LOSS_TOLERANCE
    )
    assert abs(curve["eval_ensemble_loss"] - golden["eval_ensemble_loss"]) <= LOSS_TOLERANCE
