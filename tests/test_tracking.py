"""Experiment trackers: TensorBoard for real (its event files read back against metrics.jsonl, a resume continuing
the same run), wandb's init arguments as a pure function, the logging recipe keys, the progress bar's loss."""

from pathlib import Path

import pytest
from helpers.training import reset_accelerate, tiny_recipe
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from nt_llm.checkpoint import Checkpoint
from nt_llm.train import RecipeError, recipe_from_dict, train
from nt_llm.train import metrics as metrics_module
from nt_llm.train.metrics import (
    progress_postfix,
    read_metrics,
    resolve_trackers,
    tensorboard_dir,
    tracker_init_kwargs,
)
from nt_llm.train.recipe import LoggingRecipe

PROJECT = "nt_test"


def tracked_recipe(tmp_path: Path, **sections: dict) -> dict:
    logging = {"trackers": ["tensorboard"], "project": PROJECT, **sections.pop("logging", {})}
    return tiny_recipe(tmp_path, logging=logging, **sections)


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every scalar in the event files of ``log_dir`` (all of them, in file order)."""
    events = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})  # 0: keep every point, not a sample
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def jsonl_scalars(run: Path) -> dict[str, dict[int, float]]:
    """The same shape from metrics.jsonl: what MetricsLog forwards to the trackers (its numbers, by event/key)."""
    scalars: dict[str, dict[int, float]] = {}
    for record in read_metrics(run / "metrics.jsonl"):
        for key, value in record.items():
            if key not in ("event", "step") and isinstance(value, (int, float)):
                scalars.setdefault(f"{record['event']}/{key}", {})[record["step"]] = float(value)
    return scalars


def assert_same_scalars(logged: dict[str, dict[int, float]], expected: dict[str, dict[int, float]]) -> None:
    assert sorted(logged) == sorted(expected)
    for tag, points in expected.items():
        assert sorted(logged[tag]) == sorted(points), tag
        for step, value in points.items():
            assert logged[tag][step] == pytest.approx(value, rel=1e-6, abs=1e-30), (tag, step)  # float32 there


def event_files(root: Path) -> list[Path]:
    return sorted(root.rglob("events.out.tfevents.*"))


def test_tensorboard_holds_the_scalars_of_metrics_jsonl_and_the_bar_the_mean_head_loss(tmp_path, capsys) -> None:
    recipe = tracked_recipe(tmp_path, logging={"progress_bar": True})
    result = train(recipe_from_dict(recipe))
    run = result.output_dir

    log_dir = tensorboard_dir(run, PROJECT)
    assert log_dir == run / PROJECT and event_files(log_dir)
    expected = jsonl_scalars(run)
    assert {"train/loss", "train/head0_loss", "eval/ensemble_loss", "dst/density"} <= set(expected)
    assert_same_scalars(tensorboard_scalars(log_dir), expected)
    assert sorted(expected["train/loss"]) == [1, 2, 3, 4, 5, 6]

    # The bar shows the mean of the heads' losses (the logged loss is their sum, three times as large).
    last = [e for e in read_metrics(run / "metrics.jsonl") if e["event"] == "train"][-1]
    head_mean = sum(last[f"head{h}_loss"] for h in range(3)) / 3
    assert last["loss"] == pytest.approx(3 * head_mean, rel=1e-5)
    shown = capsys.readouterr().err
    assert f"loss/head={head_mean:.3f}" in shown and "loss=" not in shown


def test_a_resumed_run_continues_the_same_tensorboard_run_and_tracker_id(tmp_path) -> None:
    first = train(recipe_from_dict(tracked_recipe(tmp_path, optim={"max_steps": 3})))
    reset_accelerate()
    resumed = train(recipe_from_dict(tracked_recipe(tmp_path, optim={"max_steps": 6})), resume="latest")
    run = resumed.output_dir
    assert run == first.output_dir

    # One log dir, written by both starts: an event file each (and accelerate's hparams in folders below it).
    log_dir = tensorboard_dir(run, PROJECT)
    assert all(log_dir in path.parents for path in event_files(run))
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 2
    # The steps continue: each logged once, 1..6, the same numbers as metrics.jsonl.
    scalars = tensorboard_scalars(log_dir)
    assert sorted(scalars["train/loss"]) == [1, 2, 3, 4, 5, 6]
    assert_same_scalars(scalars, jsonl_scalars(run))

    # The tracker run id is written at the first start and carried on by the resume.
    ids = [Checkpoint.open(run / "checkpoints" / f"step_{s}").manifest["tracker_run_id"] for s in (3, 6)]
    assert ids[0] == ids[1] and len(ids[0]) == 8


def test_wandb_gets_the_run_name_tags_and_the_id_to_resume() -> None:
    options = LoggingRecipe(project="paper", tags=["cpu", "rigl"])
    kwargs = tracker_init_kwargs(["tensorboard", "wandb"], options, "neurotrails_cpu", "0a1b2c3d", Path("runs/nt"))
    assert kwargs == {
        "wandb": {
            "name": "neurotrails_cpu",
            "tags": ["cpu", "rigl"],
            "id": "0a1b2c3d",
            "resume": "allow",
            "dir": "runs/nt",
        }
    }
    named = tracker_init_kwargs(["wandb"], LoggingRecipe(run_name="seed 1"), "neurotrails_cpu", "x", Path("r"))
    assert named["wandb"]["name"] == "seed 1"
    # TensorBoard needs no arguments: its log dir is <run folder>/<project>, the same on every resume.
    assert tracker_init_kwargs(["tensorboard"], options, "neurotrails_cpu", "0a1b2c3d", Path("runs/nt")) == {}


def test_trackers_named_must_exist_and_be_installed(monkeypatch) -> None:
    assert resolve_trackers(["none"]) == []
    assert resolve_trackers(["auto"]) == ["tensorboard"]  # installed by the dev extra
    with pytest.raises(RecipeError, match=r"logging.trackers: unknown tracker 'tensorbord'"):
        resolve_trackers(["tensorbord"])
    monkeypatch.setattr(metrics_module, "get_available_trackers", lambda: [])
    with pytest.raises(RecipeError, match=r"wandb is not installed \(pip install 'nt_llm\[tracking\]'\)"):
        resolve_trackers(["wandb"])


def test_logging_recipe_keys_and_their_defaults(tmp_path) -> None:
    defaults = recipe_from_dict({"model": {"method": "dense"}}).logging
    assert (defaults.project, defaults.run_name, defaults.tags) == ("nt_llm", None, [])
    one_tag = recipe_from_dict({"model": {"method": "dense"}, "logging": {"tags": "paper", "project": "p"}}).logging
    assert one_tag.tags == ["paper"] and one_tag.project == "p"
    for values, message in (
        ({"project": ""}, "logging.project must be non-empty"),
        ({"run_name": ""}, "logging.run_name must be non-empty or null"),
        ({"tags": ["a", ""]}, "logging.tags must be non-empty strings"),
        ({"tags": [1]}, r"logging.tags\[0\]: expected a string"),
    ):
        with pytest.raises(RecipeError, match=message):
            recipe_from_dict({"model": {"method": "dense"}, "logging": values})


def test_the_progress_bar_shows_the_mean_head_loss() -> None:
    speed = {"tokens_per_s": 1234.4, "tflops": 0.01234}
    # The training loss of three heads is their sum: 19.963 would read as a diverged run.
    assert progress_postfix([19.963, 6.654, 6.655, 6.654], speed) == {
        "loss/head": "6.654",
        "tok_s": "1234",
        "tflops": "0.0123",
    }
    assert progress_postfix([5.0, 5.0], speed)["loss/head"] == "5.000"  # one model: its loss
