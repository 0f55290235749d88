"""``model.compile``: a compiled run trains as the eager one does, keeps DST's masks exact, and its checkpoints are
the plain model's (an eager run resumes them).

The default run traces with dynamo and AOT autograd (backend ``aot_eager``: seconds); the slow test adds
inductor's code generation (a C++ compiler, about a minute on 2 loaded cores).
"""

import shutil
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from helpers.train_dist import assert_invariants, launch_trainer
from helpers.training import tiny_recipe
from safetensors.torch import load_file

from nt_llm.sparse.engines import unwrap_model
from nt_llm.train import RecipeError, recipe_from_dict
from nt_llm.train.metrics import read_metrics
from nt_llm.train.trainer import Trainer

# Four steps, a mask update every two (at steps 2 and 4), a checkpoint at step 2 to resume from.
SHORT = dict(optim={"max_steps": 4}, eval={"every": 4, "max_batches": 2}, checkpoint={"every": 2})


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    reset_accelerate()


def reset_accelerate() -> None:
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    torch._dynamo.reset()  # compiled code of one test does not serve the next


def run(tmp_path: Path, name: str, resume: str | None = None, **model) -> Trainer:
    """Train the short tiny recipe in ``tmp_path / name``; the trainer keeps dynamo's counters of its run."""
    recipe = tiny_recipe(tmp_path, **SHORT)
    recipe["run"]["output_dir"] = str(tmp_path / name)
    recipe["model"].update(model)
    trainer = Trainer(recipe_from_dict(recipe))
    trainer.run(resume)
    trainer.dynamo_counters = {k: dict(v) for k, v in torch._dynamo.utils.counters.items()}
    reset_accelerate()
    return trainer


def losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_metrics(run_dir / "metrics.jsonl") if e["event"] == "train"}


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_run_matches_eager_keeps_masks_exact_and_resumes_eagerly(tmp_path: Path, backend: str) -> None:
    eager = run(tmp_path, "eager")
    compiled = run(tmp_path, "compiled", compile=True, compile_backend=backend)
    # It did compile, the training forward and the evaluation one, each as one graph (no graph breaks).
    assert compiled.dynamo_counters["stats"]["unique_graphs"] >= 2
    assert not compiled.dynamo_counters.get("graph_break"), compiled.dynamo_counters["graph_break"]

    # Same losses as eager: aot_eager runs the same kernels; inductor fuses and reorders float sums (the tiny
    # model's losses then agree to about 1e-6; 1e-4 leaves room for the DST updates' ties).
    expected, got = losses(eager.output_dir), losses(compiled.output_dir)
    assert sorted(got) == [1, 2, 3, 4]
    assert got == pytest.approx(expected, rel=1e-4)

    # Every weight DST masked out is exactly zero after the last step, and the masks are those of eager.
    params = dict(unwrap_model(compiled.model).named_parameters())
    assert compiled.sparsity.masks.keys() and compiled.sparsity.last_update.step == 4
    for name, mask in compiled.sparsity.masks.items():
        assert not params[name][~mask].any(), name
        assert torch.equal(mask, eager.sparsity.masks[name]), name

    # The checkpoint is the plain model's: no "_orig_mod." names; an eager run resumes it and continues as the
    # compiled run did.
    checkpoint = compiled.output_dir / "checkpoints" / "step_2"
    weights = load_file(checkpoint / "model" / "model.safetensors")
    eager_weights = load_file(eager.output_dir / "checkpoints" / "step_2" / "model" / "model.safetensors")
    assert weights.keys() == eager_weights.keys()
    assert not any("_orig_mod" in k for k in weights)
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(checkpoint, resumed_dir / "checkpoints" / "step_2")
    resumed = run(tmp_path, "resumed", resume="latest")
    assert sorted(losses(resumed.output_dir)) == [3, 4]
    assert losses(resumed.output_dir) == pytest.approx({s: got[s] for s in (3, 4)}, rel=1e-4)


def test_unknown_compile_backend_is_named(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="model.compile_backend: .*nope"):
        run(tmp_path, "bad", compile=True, compile_backend="nope")


@pytest.mark.slow  # two processes, each compiling: about a minute on 2 loaded cores
def test_compiled_ddp_keeps_the_invariants_on_both_ranks(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, data={"batch_size": 2}, model={"compile": True, "compile_backend": "aot_eager"})
    assert_invariants(launch_trainer(tmp_path, recipe, {}), "MULTI_CPU")
