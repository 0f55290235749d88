"""nt_llm.checkpoint: the run folder's layout, atomic checkpoint writes, the manifest, masks and metrics reading
(no training here: tests/test_train.py trains and resumes through it)."""

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nt_llm.checkpoint import (
    MANIFEST,
    Checkpoint,
    CheckpointError,
    RunDir,
    apply_masks,
    complete_checkpoints,
    locate,
)

RECIPE = {"data": {"seq_len": 16}, "sparsity": {"density": 0.5}}


def write_checkpoint(run: RunDir, step: int, masks: dict[str, torch.Tensor] | None = None) -> Checkpoint:
    """What the trainer writes, in miniature: a model file, the data position, the masks, then the manifest."""
    pending = run.begin_checkpoint(step)
    pending.create()
    pending.model_dir.mkdir()
    (pending.model_dir / "config.json").write_text("{}")
    pending.save_data_state(0, {"position": step})
    if masks is not None:
        pending.save_masks(masks)
    recipe = RECIPE if masks is not None else {**RECIPE, "sparsity": None}
    return pending.finalize({"tokens": 100 * step, "world_size": 1, "recipe": recipe, "eval": {"ensemble_loss": 1.0}})


def test_a_finalized_checkpoint_is_complete_and_reads_back(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    masks = {"heads.0.lm_head.weight": torch.tensor([[True, False], [False, True]])}
    checkpoint = write_checkpoint(run, 3, masks)
    assert checkpoint == run.checkpoint(3) and checkpoint.path == tmp_path / "run" / "checkpoints" / "step_3"
    assert not list(run.checkpoints_dir.glob(".tmp-*"))  # renamed into place
    opened = Checkpoint.open(checkpoint.path)
    assert (opened.step, opened.tokens, opened.seq_len, opened.sparse) == (3, 300, 16, True)
    assert opened.manifest["format_version"] == 2 and opened.eval == {"ensemble_loss": 1.0}
    assert set(opened.manifest["files"]) == {"model/config.json", "data_rank0.pt", "masks.safetensors"}
    assert opened.run == run
    assert torch.load(opened.data_state_file(0)) == {"position": 3}
    read = opened.masks()
    assert read.keys() == masks.keys() and read["heads.0.lm_head.weight"].dtype == torch.bool
    assert torch.equal(read["heads.0.lm_head.weight"], masks["heads.0.lm_head.weight"])
    assert write_checkpoint(run, 6).masks() == {}  # dense


def test_writing_the_same_step_again_replaces_it(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    write_checkpoint(run, 3)
    again = run.begin_checkpoint(3)
    again.create()
    (again.path / "marker").write_text("second")
    again.finalize({"tokens": 1})
    assert [c.path.name for c in run.checkpoints()] == ["step_3"]
    assert (run.checkpoint(3).path / "marker").read_text() == "second" and run.checkpoint(3).tokens == 1
    assert not [p.name for p in run.checkpoints_dir.iterdir() if p.name.startswith(".")]


def test_torn_unreadable_and_incomplete_checkpoints_are_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    checkpoint = write_checkpoint(run, 3)
    (checkpoint.path / MANIFEST).unlink()
    assert run.latest() is None and complete_checkpoints(run.path) == []
    with pytest.raises(CheckpointError, match="torn"):
        Checkpoint.open(checkpoint.path)
    (checkpoint.path / MANIFEST).write_text('{"format_version": 2, "files": [')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Checkpoint.open(checkpoint.path)
    (checkpoint.path / MANIFEST).write_text(json.dumps({"format_version": 2, "files": ["model/weights"]}))
    with pytest.raises(CheckpointError, match=r"incomplete: missing \['model/weights'\]"):
        Checkpoint.open(checkpoint.path)
    (checkpoint.path / MANIFEST).write_text(json.dumps({"format_version": 9, "files": []}))
    with pytest.raises(CheckpointError, match="format 9 is not one this nt_llm reads"):
        Checkpoint.open(checkpoint.path)


def test_a_format_1_checkpoint_resumes_but_its_masks_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "run" / "checkpoints" / "step_2"
    path.mkdir(parents=True)
    (path / MANIFEST).write_text(json.dumps({"format_version": 1, "files": [], "step": 2, "recipe": RECIPE}))
    old = Checkpoint.open(path)
    assert old.step == 2
    with pytest.raises(CheckpointError, match=r"older nt_llm \(checkpoint format 1\).*masks.safetensors"):
        old.masks()


def test_masks_must_be_bool_and_match_the_weights(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(RunDir(tmp_path / "run"), 2, {"w": torch.ones(2, 2, dtype=torch.bool)})
    save_file({"w": torch.ones(2, 2)}, checkpoint.masks_file)
    with pytest.raises(CheckpointError, match=r"bool tensors; \['w'\]"):
        checkpoint.masks()
    state = {"w": torch.tensor([[1.0, 2.0], [3.0, 0.0]])}
    assert apply_masks(state, {"w": torch.tensor([[True, False], [False, False]])}) == 2  # 2.0 and 3.0
    assert state["w"].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(CheckpointError, match="'v'.*do not have"):
        apply_masks(state, {"v": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(CheckpointError, match=r"shape \(3,\), the weight \(2, 2\)"):
        apply_masks(state, {"w": torch.ones(3, dtype=torch.bool)})


def test_prune_keeps_the_newest_and_removes_interrupted_writes(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    for step in (10, 2, 4, 8):  # numeric order, not the names' order
        write_checkpoint(run, step)
    run.begin_checkpoint(12).create()  # a write cut short
    (run.checkpoints_dir / "step_11").mkdir()  # no manifest: never counted
    assert [c.step for c in run.checkpoints()] == [2, 4, 8, 10] and run.latest() == run.checkpoint(10)
    run.prune(keep_last=2)
    assert [c.step for c in run.checkpoints()] == [8, 10]
    assert not (run.checkpoints_dir / ".tmp-step_12").exists() and (run.checkpoints_dir / "step_11").is_dir()


def test_locate_names_checkpoints_runs_and_neither(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    write_checkpoint(run, 2)
    write_checkpoint(run, 4)
    assert locate(run.path) == run.checkpoint(4) and locate(run.checkpoint(2).path) == run.checkpoint(2)
    assert locate(tmp_path) is None  # a folder holding a run folder is not one
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="has no complete checkpoint"):
        locate(tmp_path / "empty")
    (tmp_path / "step_7").mkdir()
    with pytest.raises(CheckpointError, match="torn"):
        locate(tmp_path / "step_7")


def write_metrics(run: RunDir, rows: list[dict], tail: str = "") -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    run.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_metrics_rows_by_event_and_the_final_evaluation(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="has no metrics.jsonl"):
        run.metrics()
    write_metrics(run, [{"event": "train", "step": 1, "loss": 5.0}])
    with pytest.raises(ValueError, match="holds no evaluation yet"):
        run.final_eval()
    rows = [
        {"event": "train", "step": 1, "loss": 5.0},
        {"event": "eval", "step": 1, "ensemble_loss": 4.5},
        {"event": "dst", "step": 2, "density": 0.5},
        {"event": "train", "step": 2, "loss": 4.0},
        {"event": "eval", "step": 2, "ensemble_loss": 3.5},
    ]
    write_metrics(run, rows)
    assert run.metrics() == rows
    assert [r["step"] for r in run.metrics("train")] == [1, 2]
    assert run.final_eval() == rows[-1] and run.evaluations() == [rows[1], rows[4]]


def test_metrics_of_a_resumed_run_drop_the_abandoned_steps(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    first = [{"event": "train", "step": s, "loss": 10.0 - s} for s in (1, 2, 3, 4, 5)]
    first.insert(3, {"event": "eval", "step": 3, "ensemble_loss": 7.0})
    # Resumed from the checkpoint at step 3: steps 4 and 5 are logged again, with other values.
    resumed = [{"event": "train", "step": s, "loss": 20.0 - s} for s in (4, 5, 6)]
    write_metrics(run, first + resumed)
    assert [(r["event"], r["step"], r["loss"]) for r in run.metrics("train")] == [
        ("train", 1, 9.0),
        ("train", 2, 8.0),
        ("train", 3, 7.0),
        ("train", 4, 16.0),
        ("train", 5, 15.0),
        ("train", 6, 14.0),
    ]
    assert run.final_eval()["step"] == 3
    # Resumed where it had stopped (same step again, not lower): the repeated row replaces the first.
    write_metrics(run, first[:3] + [{"event": "train", "step": 3, "loss": 0.5}])
    assert [r["loss"] for r in run.metrics("train")] == [9.0, 8.0, 0.5]


def test_a_resume_keeps_what_the_stopped_run_logged_at_its_checkpoint_step(tmp_path: Path) -> None:
    # As a study stopped by a time limit logs it: evaluated and checkpointed at step 4, trained on to step 6,
    # then resumed from the checkpoint at step 4 (its start row), which trains steps 5 and 6 again.
    run = RunDir(tmp_path / "run")
    stopped = [{"event": "start", "step": 0}]
    stopped += [{"event": "train", "step": s, "loss": 10.0 - s} for s in (2, 4)]
    stopped += [{"event": "dst", "step": 4, "density": 0.9}, {"event": "eval", "step": 4, "ensemble_loss": 6.0}]
    stopped += [{"event": "train", "step": s, "loss": 10.0 - s} for s in (5, 6)]
    resumed = [{"event": "start", "step": 4}]
    resumed += [{"event": "train", "step": s, "loss": 20.0 - s} for s in (5, 6)]
    resumed += [{"event": "eval", "step": 6, "ensemble_loss": 5.0}]
    write_metrics(run, stopped + resumed)
    assert [(r["step"], r["ensemble_loss"]) for r in run.evaluations()] == [(4, 6.0), (6, 5.0)]
    assert [(r["step"], r["loss"]) for r in run.metrics("train")] == [(2, 8.0), (4, 6.0), (5, 15.0), (6, 14.0)]
    assert [r["step"] for r in run.metrics("dst")] == [4]
    assert [r["step"] for r in run.metrics("start")] == [0, 4]
    # Resumed twice from the same checkpoint: one start row at that step, the later one.
    write_metrics(run, stopped + resumed + [{"event": "start", "step": 4, "again": True}])
    assert run.metrics("start")[-1] == {"event": "start", "step": 4, "again": True}
    assert [r["step"] for r in run.evaluations()] == [4]


def test_a_last_line_cut_short_is_skipped_but_a_broken_middle_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = RunDir(tmp_path / "run")
    write_metrics(run, [{"event": "train", "step": 1}], tail='{"event": "tra')
    with caplog.at_level(logging.WARNING):
        assert run.metrics() == [{"event": "train", "step": 1}]
    assert "cut short" in caplog.text
    run.metrics_file.write_text('{"event": "train", "step": 1}\nnot json\n{"event": "train", "step": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        run.metrics()
    run.metrics_file.write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="line 1 is not an event with a step"):
        run.metrics()


def test_the_run_recipe_and_what_a_new_start_would_replace(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="has no recipe.yaml"):
        run.recipe()
    assert run.previous_run() == []
    write_checkpoint(run, 2)
    write_metrics(run, [{"event": "train", "step": 1}])
    run.recipe_file.write_text("run:\n  seed: 3\n")
    assert run.recipe() == {"run": {"seed": 3}}
    assert run.previous_run() == ["checkpoints/step_2", "metrics.jsonl"]
    moved = run.set_aside()
    assert moved.name.startswith("run.previous-") and not run.path.exists() and (moved / "metrics.jsonl").is_file()
