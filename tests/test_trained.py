"""nt_llm.trained.open_trained: the one way export, evaluate and zero-shot open MODEL (a run folder, a step_<N>
checkpoint, a model folder), its one error type for every bad input, and zero-shot on a run folder."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.training import tiny_recipe
from helpers.zero_shot import save_tiny_llama, write_fixture_benchmarks

from nt_llm import export as nt_export
from nt_llm.cli import evaluate as evaluate_cli
from nt_llm.cli import export as export_cli
from nt_llm.cli import zero_shot as zero_shot_cli
from nt_llm.train import train
from nt_llm.train.recipe import recipe_from_dict
from nt_llm.trained import TrainedModel, TrainedModelError, open_trained
from nt_llm.zeroshot import run as zero_shot
from nt_llm.zeroshot import tasks as prepare_tasks


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny NeuroTrails run (3 heads, half the heads' weights masked) with checkpoints at steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("trained_run")
    train(recipe_from_dict(tiny_recipe(tmp, optim={"max_steps": 4}, eval={"every": 2}, checkpoint={"every": 2})))
    return tmp / "run"


def test_a_run_a_checkpoint_and_a_folder_open_as_one_typed_object(run_dir: Path, tmp_path: Path) -> None:
    from_run = open_trained(run_dir)
    step_4 = run_dir / "checkpoints" / "step_4"
    assert isinstance(from_run, TrainedModel) and from_run.path == run_dir
    assert from_run.checkpoint is not None and from_run.checkpoint.path == step_4  # the newest checkpoint
    assert from_run.model_dir == step_4 / "model" and from_run.step == 4 and from_run.is_neurotrails
    assert from_run.config == json.loads((step_4 / "model" / "config.json").read_text())
    assert from_run.context == 16  # the training seq_len, not the size's longer maximum
    assert from_run.config["max_position_embeddings"] > 16
    masks = from_run.masks()
    assert masks and all(m.dtype.is_floating_point is False for m in masks.values())
    step_2 = open_trained(run_dir / "checkpoints" / "step_2")
    assert step_2.step == 2 and step_2.model_dir == run_dir / "checkpoints" / "step_2" / "model"

    exported = nt_export.export(run_dir, tmp_path / "export").out
    folder = open_trained(exported)
    assert folder.checkpoint is None and folder.model_dir == exported and folder.step is None
    assert folder.masks() == {} and folder.context == 16  # an export's context is its training seq_len
    llama = open_trained(save_tiny_llama(tmp_path / "llama"))
    assert not llama.is_neurotrails and llama.model_type == "llama"
    with pytest.raises(TrainedModelError, match="is not a NeuroTrails model .*'llama'") as info:
        llama.require_neurotrails()
    assert info.value.path == tmp_path / "llama"


def _bad_inputs(run_dir: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each bad MODEL and what its error must say (besides the path)."""
    empty_run = tmp_path / "empty_run"
    (empty_run / "checkpoints").mkdir(parents=True)
    torn = shutil.copytree(run_dir / "checkpoints" / "step_2", tmp_path / "torn" / "step_2")
    (torn / "checkpoint.json").unlink()
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"\0")
    broken_config = tmp_path / "broken_config"
    broken_config.mkdir()
    (broken_config / "config.json").write_text("{not json")
    list_config = tmp_path / "list_config"
    list_config.mkdir()
    (list_config / "config.json").write_text("[1, 2]")
    no_model = shutil.copytree(run_dir / "checkpoints" / "step_2", tmp_path / "old" / "step_2")
    (no_model / "model" / "config.json").unlink()  # as an older trainer wrote them: a manifest without it
    manifest = json.loads((no_model / "checkpoint.json").read_text())
    manifest["files"] = [name for name in manifest["files"] if name != "model/config.json"]
    (no_model / "checkpoint.json").write_text(json.dumps(manifest))
    return {
        "missing": (tmp_path / "nowhere", "does not exist"),
        "file": (a_file, "is a file"),
        "empty run folder": (empty_run, "has no complete checkpoint"),
        "torn checkpoint": (torn, "torn"),
        "not a model folder": (not_a_model, "is not a NeuroTrails checkpoint or model folder (config.json missing)"),
        "config not JSON": (broken_config, "is not a readable model config"),
        "config not an object": (list_config, "a JSON object expected, got list"),
        "checkpoint without model/config.json": (no_model, "has no model/config.json"),
    }


def test_every_bad_input_is_one_error_naming_the_path_and_the_problem(run_dir: Path, tmp_path: Path) -> None:
    for case, (path, problem) in _bad_inputs(run_dir, tmp_path).items():
        with pytest.raises(TrainedModelError) as info:
            open_trained(path)
        message = str(info.value)
        assert problem in message and str(path) in message, (case, message)
        assert str(info.value.path) in message, case
        assert isinstance(info.value, ValueError)  # what callers that catch bad input already catch


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The tools' mains add handlers to the root logger (zero-shot's configure_logging); take them off again."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_export_evaluate_and_zero_shot_refuse_them_alike_with_exit_2(
    run_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "text.txt"
    text.write_text("Some text to evaluate.\n\nAnother paragraph of it.\n")
    tasks_dir = tmp_path / "no_tasks"  # never reached: the model is refused first
    for case, (path, problem) in _bad_inputs(run_dir, tmp_path / "inputs").items():
        with pytest.raises(TrainedModelError) as info:
            nt_export.export(path, tmp_path / "out")
        assert problem in str(info.value), case
        for tool, argv in (
            ("nt_llm.cli.export", [str(path), str(tmp_path / "out")]),
            ("nt_llm.cli.evaluate", [str(path), str(text)]),
            ("nt_llm.cli.zero_shot", ["--model", str(path), "--offline", "--tasks-dir", str(tasks_dir)]),
        ):
            main = {
                "nt_llm.cli.export": export_cli.main,
                "nt_llm.cli.evaluate": evaluate_cli.main,
                "nt_llm.cli.zero_shot": zero_shot_cli.main,
            }[tool]
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger=tool):
                assert main(argv) == 2, (case, tool)
            assert problem in caplog.text and str(path) in caplog.text, (case, tool, caplog.text)
        assert not (tmp_path / "out").exists() and not tasks_dir.exists()
    capsys.readouterr()


@pytest.mark.usefixtures("root_logging")
def test_zero_shot_on_a_run_folder_scores_its_newest_checkpoint_as_exported(run_dir: Path, tmp_path: Path) -> None:
    tasks_dir = tmp_path / "tasks"
    prepare_tasks.prepare(tasks_dir, source=write_fixture_benchmarks(tmp_path / "hf_datasets"), include_mmlu=False)
    # The training context is 16 tokens; the fixture's answers need more (lm-eval refuses those it cannot fit).
    settings = zero_shot.ZeroShotSettings(
        tasks=["piqa", "arc_easy"], offline=True, tasks_dir=tasks_dir, limit=2, batch_size=2, max_length=64
    )
    from_run = zero_shot.evaluate_folder(run_dir, settings)
    exported = nt_export.export(run_dir, tmp_path / "export").out
    from_export = zero_shot.evaluate_folder(exported, settings)
    for task in ("nt_piqa", "nt_arc_easy"):
        assert from_run["results"][task]["acc,none"] == from_export["results"][task]["acc,none"]
        assert from_run["results"][task]["acc_norm,none"] == from_export["results"][task]["acc_norm,none"]
    assert from_run[zero_shot.RESULTS_KEY]["model"] == str((run_dir / "checkpoints" / "step_4").resolve())
    assert zero_shot.output_name(open_trained(run_dir)) == "run_step_4"
    assert zero_shot.output_name(open_trained(exported)) == "export"

    # The command line takes the run folder too, naming its results after the run and step; the temporary export
    # is gone afterwards and the run is untouched.
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    code = zero_shot_cli.main(
        [
            *("--model", str(run_dir), "--offline", "--tasks-dir", str(tasks_dir), "--tasks", "piqa"),
            *("--limit", "2", "--max-length", "64", "--output", str(tmp_path / "res" / "run.json")),
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "res" / "run.json").read_text())
    assert results["results"]["nt_piqa"]["acc,none"] == from_run["results"]["nt_piqa"]["acc,none"]
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
