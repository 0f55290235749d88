"""Training end to end in one process: every method, exact resume, failure handling, recipe validation."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from helpers.training import tiny_recipe
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import nt_llm  # noqa: F401  (Auto classes)
from nt_llm.checkpoint import CheckpointError, complete_checkpoints
from nt_llm.data import build_tokenizer
from nt_llm.flops import training_flops_per_token
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM
from nt_llm.train import NonFiniteLossError, RecipeError, load_recipe, recipe_from_dict, train
from nt_llm.train import trainer as trainer_module
from nt_llm.train.metrics import read_metrics, throughput_metrics
from nt_llm.train.trainer import Trainer, build_optimizer, model_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each training builds its own Accelerator; accelerate keeps process-wide singletons between them."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_metrics(run_dir / "metrics.jsonl") if e["event"] == kind]


@pytest.mark.parametrize("method", ["neurotrails", "treenet", "dense", "full_ensemble"])
def test_each_method_trains_evaluates_and_checkpoints(tmp_path: Path, method: str) -> None:
    result = train(recipe_from_dict(tiny_recipe(tmp_path, method)))
    run = tmp_path / "run"
    heads = 1 if method == "dense" else 3

    train_events = events(run, "train")
    assert [e["step"] for e in train_events] == [1, 2, 3, 4, 5, 6]
    assert train_events[-1]["loss"] < train_events[0]["loss"]
    assert [e["step"] for e in events(run, "eval")] == [3, 6]
    assert result.step == 6 and result.checkpoint == run / "checkpoints" / "step_6"
    assert all(f"head{h}_ppl" in result.metrics for h in range(heads))
    assert 1 < result.metrics["ensemble_ppl"] < 1000
    assert [p.name for p in complete_checkpoints(run)] == ["step_3", "step_6"]

    model = AutoModelForCausalLM.from_pretrained(result.checkpoint / "model")
    assert isinstance(model, NeuroTrailsForCausalLM)
    assert model.config.ensemble_size == heads
    assert model.config.share_embeddings == (method != "full_ensemble")
    assert (result.checkpoint / "model" / "tokenizer.json").is_file()

    # Speed in every train line: achieved TFLOP/s from the analytic count of the model that was trained. One
    # process: per device equals the total. No CUDA: no MFU (there is no measured peak to divide by).
    flops = training_flops_per_token(NeuroTrailsConfig.from_pretrained(result.checkpoint / "model"), 16)
    for e in train_events:
        assert e["tokens_per_s"] > 0
        assert e["tflops"] == pytest.approx(flops * e["tokens_per_s"] / 1e12, rel=1e-9)
        assert e["tflops_per_device"] == e["tflops"] and "mfu" not in e


def test_throughput_metrics_divide_by_devices_and_the_measured_peak() -> None:
    values = throughput_metrics(tokens_per_s=2000.0, flops_per_token=3e9, devices=4, matmul_peak=5e12)
    assert values["tflops"] == pytest.approx(6.0) and values["tflops_per_device"] == pytest.approx(1.5)
    assert values["mfu"] == pytest.approx(0.3)
    assert "mfu" not in throughput_metrics(2000.0, 3e9, 1)


@pytest.mark.parametrize(
    "implementation,device,fused,foreach",
    [
        ("auto", "cpu", True, None),
        ("auto", "cuda", True, None),
        ("auto", "meta", None, True),
        ("for_loop", "cpu", None, False),
    ],
)
def test_adamw_kernel_follows_optim_implementation(implementation, device, fused, foreach) -> None:
    recipe = recipe_from_dict({"model": {"method": "dense"}, "optim": {"implementation": implementation}})
    model = torch.nn.Linear(4, 4)
    optimizer = build_optimizer(model, recipe, torch.device(device))
    assert optimizer.defaults["fused"] is fused and optimizer.defaults["foreach"] is foreach
    assert [g["weight_decay"] for g in optimizer.param_groups] == [recipe.optim.weight_decay, 0.0]


def test_fused_adamw_on_a_device_without_it_is_named() -> None:
    recipe = recipe_from_dict({"model": {"method": "dense"}, "optim": {"implementation": "fused"}})
    with pytest.raises(RecipeError, match="optim.implementation: torch has no fused AdamW for meta"):
        build_optimizer(torch.nn.Linear(4, 4), recipe, torch.device("meta"))


@pytest.mark.parametrize("keep", [True, False])
def test_a_cpu_run_keeps_freed_host_memory_unless_told_not_to(tmp_path: Path, monkeypatch, keep: bool) -> None:
    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(1) or True)
    Trainer(recipe_from_dict(tiny_recipe(tmp_path, run={"keep_freed_host_memory": keep})))
    assert calls == ([1] if keep else [])


def test_bf16_and_chunked_loss_train(tmp_path: Path, monkeypatch) -> None:
    # bf16 on the CPU is autocast (accelerate wraps the model's forward): the linear layers compute in bf16.
    linear_forward, dtypes = torch.nn.Linear.forward, set()

    def recording(self, x):
        out = linear_forward(self, x)
        dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", recording)
    recipe = tiny_recipe(tmp_path, optim={"precision": "bf16"}, model={"loss_chunk_size": 16})
    result = train(recipe_from_dict(recipe))
    assert dtypes == {torch.bfloat16}
    losses = [e["loss"] for e in events(tmp_path / "run", "train")]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert result.metrics["ensemble_ppl"] < 1000


def test_neurotrails_checkpoint_holds_exactly_the_target_nonzeros(tmp_path: Path) -> None:
    result = train(recipe_from_dict(tiny_recipe(tmp_path)))
    weights = load_file(result.checkpoint / "model" / "model.safetensors")
    sparse = {k: v for k, v in weights.items() if k.startswith("heads.") and "proj" in k or "lm_head" in k}
    dense = {k: v for k, v in weights.items() if k.startswith("backbone.") and "proj" in k}
    nonzero = sum(int(v.count_nonzero()) for v in sparse.values())
    total = sum(v.numel() for v in sparse.values())
    assert abs(nonzero / total - 0.5) < 0.01
    assert all(int(v.count_nonzero()) == v.numel() for v in dense.values())
    dst_events = events(tmp_path / "run", "dst")
    assert [e["step"] for e in dst_events] == [2, 4, 6]
    assert all(e["pruned"] == e["grown"] for e in dst_events)
    assert dst_events[0]["pruned"] > dst_events[1]["pruned"] > 0  # the prune rate decays (cosine, to 0 at the end)


def test_resume_gives_the_same_losses_and_weights_as_not_stopping(tmp_path: Path) -> None:
    straight = train(recipe_from_dict(tiny_recipe(tmp_path)))
    # Resume a copy of the mid-run checkpoint in a new run folder: nothing carries over but the checkpoint.
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight.output_dir / "checkpoints" / "step_3", resumed_dir / "checkpoints" / "step_3")
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    recipe = tiny_recipe(tmp_path, run={"output_dir": str(resumed_dir)})
    resumed = train(recipe_from_dict(recipe), resume="latest")

    def losses(run: Path) -> dict[int, float]:
        return {e["step"]: e["loss"] for e in events(run, "train") if e["step"] > 3}

    assert losses(resumed.output_dir) == losses(straight.output_dir)
    assert sorted(losses(resumed.output_dir)) == [4, 5, 6]
    assert resumed.metrics["ensemble_loss"] == straight.metrics["ensemble_loss"]
    a = load_file(straight.checkpoint / "model" / "model.safetensors")
    b = load_file(resumed.checkpoint / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    real_forward = NeuroTrailsForCausalLM.forward
    calls = []

    def poisoned(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        if self.training:
            calls.append(1)
            if len(calls) > 7:  # optimizer step 4 (two micro-batches per step)
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(NeuroTrailsForCausalLM, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 4"):
        train(recipe_from_dict(tiny_recipe(tmp_path)))
    kept = complete_checkpoints(tmp_path / "run")
    assert [p.name for p in kept] == ["step_3"]
    weights = load_file(kept[0] / "model" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_torn_and_incompatible_checkpoints_are_refused(tmp_path: Path) -> None:
    first = train(recipe_from_dict(tiny_recipe(tmp_path)))
    torn = first.output_dir / "checkpoints" / "step_3"
    (torn / "checkpoint.json").unlink()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    with pytest.raises(CheckpointError, match="torn"):
        train(recipe_from_dict(tiny_recipe(tmp_path)), resume=str(torn))

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    other = tiny_recipe(tmp_path, model={"ensemble_size": 2})
    with pytest.raises(CheckpointError, match="model.ensemble_size"):
        train(recipe_from_dict(other), resume=str(first.checkpoint))


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path: Path) -> None:
    import yaml

    recipe = tiny_recipe(tmp_path, optim={"max_steps": 400, "warmup_steps": 1}, checkpoint={"every": 1000})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "pretrain.py"), "--recipe", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.is_file() and metrics.read_text().count('"train"') >= 2):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, output[-3000:]
    saved = complete_checkpoints(tmp_path / "run")
    assert len(saved) == 1
    logged = max(e["step"] for e in events(tmp_path / "run", "train"))
    assert saved[0].name == f"step_{logged}" and logged < 400


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["optim.lrr=1"], "optim.lrr"),
        (["optimizer.lr=1"], "optimizer"),
        (["optim.lr=-1"], "optim.lr"),
        (["data.seq_len=1"], "seq_len"),
        (["sparsity.density=1.5"], "density"),
        (["sparsity.total_steps=5"], "sparsity.total_steps"),
        (["model.method=moe"], "model.method"),
        (["sparsity=null"], "sparsity"),
        (["optim.lr"], "section.key=value"),
        (["checkpoint.push_to_hub=a/b/c"], "checkpoint.push_to_hub"),
        (["optim.implementation=apex"], "optim.implementation"),
        (["model.compile_mode=fastest"], "model.compile_mode"),
        (["model.method=dense", "model.ensemble_size=3"], "model.ensemble_size"),
    ],
)
def test_bad_recipes_name_the_key(overrides: list[str], named: str) -> None:
    with pytest.raises(RecipeError, match=named.replace(".", r"\.")):
        load_recipe(REPO / "recipes" / "neurotrails_tiny.yaml", overrides)


def test_impossible_model_and_batch_are_named_before_training(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"model\.head_layers \(4\) must be at most the 3 layers"):
        train(recipe_from_dict(tiny_recipe(tmp_path, model={"head_layers": 3 + 1})))
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    with pytest.raises(RecipeError, match="total_batch_size"):
        train(recipe_from_dict(tiny_recipe(tmp_path, optim={"total_batch_size": 6})))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("method", ["dense", "full_ensemble"])
def test_a_head_depth_the_method_would_drop_is_refused(tmp_path: Path, method: str) -> None:
    """Dense and full ensemble take the whole depth: a smaller head_layers would be ignored, not trained."""
    with pytest.raises(RecipeError, match=rf"model\.head_layers \(2\): method '{method}' takes the whole depth"):
        train(recipe_from_dict(tiny_recipe(tmp_path, method, model={"head_layers": 2})))
    assert not (tmp_path / "run" / "checkpoints").exists()
    # The whole depth itself is what the method builds anyway: accepted.
    recipe = recipe_from_dict(tiny_recipe(tmp_path, method, model={"head_layers": 3}))
    assert model_config(recipe, build_tokenizer(recipe.data)).head_layers == 3


@pytest.mark.parametrize("method", ["neurotrails", "treenet"])
def test_heads_as_deep_as_the_size_share_only_the_embedding(tmp_path: Path, method: str) -> None:
    """The deepest point of the paper's head-depth sweep: no shared block, the embedding still shared."""
    recipe = tiny_recipe(
        tmp_path, method, model={"head_layers": 3}, optim={"max_steps": 2}, eval={"every": 2}, checkpoint={"every": 2}
    )
    result = train(recipe_from_dict(recipe))
    model = AutoModelForCausalLM.from_pretrained(result.checkpoint / "model")
    assert model.config.num_shared_layers == 0 and len(model.backbone) == 0
    assert model.config.share_embeddings and model.config.head_layers == model.config.num_hidden_layers == 3
    assert result.metrics["ensemble_ppl"] < 1000


def test_every_shipped_recipe_is_valid() -> None:
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {
        "neurotrails_tiny",
        "neurotrails_130m",
        "neurotrails_350m",
        "dense_130m",
        "dense_350m",
        "treenet_130m",
        "treenet_350m",
        "full_ensemble_130m",
        "full_ensemble_350m",
        "dense_tiny",
    }
    for path in recipes:
        load_recipe(path)


def test_cli_reports_a_bad_key_and_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "pretrain.py"),
            "--recipe",
            str(REPO / "recipes" / "neurotrails_tiny.yaml"),
            "optim.learning_rate=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "optim.learning_rate" in result.stderr


def test_resuming_with_another_hub_dataset_or_mix_is_refused_by_key() -> None:
    def meta_of(data: dict) -> dict:
        return {"world_size": 1, "recipe": dense_on(data).to_dict()}

    def dense_on(data: dict) -> Any:
        return recipe_from_dict({"model": {"method": "dense"}, "data": data})

    saved = meta_of({"source": "hub", "hub": {"path": "org/corpus-a"}})
    with pytest.raises(CheckpointError, match="data.hub.path"):
        trainer_module.check_compatible(saved, dense_on({"source": "hub", "hub": {"path": "org/corpus-b"}}), 1)
    mix = {"source": "mix", "mix": {"a": {"path": "org/a", "weight": 1.0}, "b": {"path": "org/b", "weight": 1.0}}}
    reweighted = {**mix, "mix": {**mix["mix"], "b": {"path": "org/b", "weight": 3.0}}}
    with pytest.raises(CheckpointError, match="data.mix.b.weight"):
        trainer_module.check_compatible(meta_of(mix), dense_on(reweighted), 1)
    trainer_module.check_compatible(meta_of(mix), dense_on(mix), 1)  # the same mix resumes
