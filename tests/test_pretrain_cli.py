"""pretrain.py and the run folder: nothing saved is overwritten or mixed, bad inputs exit 2 naming the problem,
and with a progress bar the run's INFO log goes to RUN/train.log instead of the terminal."""

import importlib.util
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.training import reset_accelerate, tiny_recipe

from nt_llm.checkpoint import Checkpoint, CheckpointError, RunDir
from nt_llm.train import recipe_from_dict, train
from nt_llm.train.metrics import LOG_FILE, TERMINAL, RunLog, read_metrics

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pretrain", REPO / "pretrain.py")
pretrain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pretrain)


def fake_checkpoint(run: Path, step: int) -> Path:
    path = run / "checkpoints" / f"step_{step}"
    path.mkdir(parents=True)
    (path / "checkpoint.json").write_text(json.dumps({"format_version": 1, "files": [], "step": step}))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_recipe(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def train_steps(run: Path) -> list[int]:
    return [e["step"] for e in read_metrics(run / "metrics.jsonl") if e["event"] == "train"]


# ---- which starts a run folder allows (no training) ------------------------------------------------------


def test_a_fresh_folder_starts_and_latest_without_checkpoints_starts_from_scratch(tmp_path: Path) -> None:
    assert RunDir(tmp_path / "new").plan_start(None) is None
    assert RunDir(tmp_path / "new").plan_start("latest") is None
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "recipe.yaml").write_text("run: {}\n")  # a start that never trained
    assert RunDir(tmp_path / "failed").plan_start(None) is None


def test_a_folder_holding_a_run_is_refused_without_resume_or_restart(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fake_checkpoint(run, 4)
    with pytest.raises(CheckpointError, match=r"holds a run \(checkpoints/step_4\).*--resume latest.*run\.output_dir"):
        RunDir(run).plan_start(None)
    assert RunDir(run).plan_start(None, restart=True) is None
    assert RunDir(run).plan_start("latest") == Checkpoint(run / "checkpoints" / "step_4")
    with pytest.raises(CheckpointError, match="--restart"):
        RunDir(run).plan_start("latest", restart=True)

    metrics_only = tmp_path / "metrics_only"  # trained, stopped before its first checkpoint
    metrics_only.mkdir()
    (metrics_only / "metrics.jsonl").write_text('{"event": "train", "step": 1}\n')
    with pytest.raises(CheckpointError, match="metrics.jsonl"):
        RunDir(metrics_only).plan_start(None)
    with pytest.raises(CheckpointError, match=r"--resume latest: .*no checkpoint.*--restart"):
        RunDir(metrics_only).plan_start("latest")


def test_resumes_that_would_overwrite_or_mix_checkpoints_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    early, _ = fake_checkpoint(run, 4), fake_checkpoint(run, 8)
    with pytest.raises(CheckpointError, match=r"later checkpoints \(step_8\).*overwrite"):
        RunDir(run).plan_start(str(early))
    assert RunDir(run).plan_start(str(run / "checkpoints" / "step_8")) == Checkpoint(run / "checkpoints" / "step_8")

    other = fake_checkpoint(tmp_path / "other", 2)
    with pytest.raises(CheckpointError, match=r"holds a run of its own .*mix"):
        RunDir(run).plan_start(str(other))
    assert RunDir(tmp_path / "fresh").plan_start(str(other)) == Checkpoint(other)


# ---- real runs ----------------------------------------------------------------------------------------


def test_a_rerun_is_refused_untouched_and_restart_moves_the_old_run_aside(tmp_path: Path) -> None:
    train(recipe_from_dict(tiny_recipe(tmp_path)))
    run = tmp_path / "run"
    before = snapshot(run)
    assert {"recipe.yaml", "metrics.jsonl", LOG_FILE, "checkpoints/step_6/checkpoint.json"} <= set(before)

    reset_accelerate()
    with pytest.raises(CheckpointError, match="--resume latest"):
        train(recipe_from_dict(tiny_recipe(tmp_path)))
    assert snapshot(run) == before

    reset_accelerate()
    other = tiny_recipe(tmp_path, model={"ensemble_size": 2})  # refused at the resume check, after the build
    with pytest.raises(CheckpointError, match="model.ensemble_size"):
        train(recipe_from_dict(other), resume="latest")
    assert snapshot(run) == before  # the run's recipe.yaml is not rewritten by a start that is refused

    reset_accelerate()
    train(recipe_from_dict(tiny_recipe(tmp_path)), restart=True)
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.previous-")]
    assert len(moved) == 1 and snapshot(moved[0]) == before
    assert train_steps(run) == [1, 2, 3, 4, 5, 6]


def test_overrides_after_resume_latest_are_accepted(tmp_path: Path) -> None:
    args = pretrain.parse_args(["--recipe", "R", "--resume", "latest", "optim.lr=1e-3", "data.batch_size=4"])
    assert (args.recipe, args.resume, args.overrides, args.restart) == (
        "R",
        "latest",
        ["optim.lr=1e-3", "data.batch_size=4"],
        False,
    )
    with pytest.raises(SystemExit) as refused:
        pretrain.parse_args(["--recipe", "R", "--resume", "latest", "--restart"])
    assert refused.value.code == 2

    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    assert pretrain.main(["--recipe", str(path)]) == 0
    reset_accelerate()
    assert pretrain.main(["--recipe", str(path), "--resume", "latest", "optim.max_steps=8", "eval.every=4"]) == 0
    assert train_steps(tmp_path / "run") == [1, 2, 3, 4, 5, 6, 7, 8]


def _exits_2_naming(argv: list[str], caplog: pytest.LogCaptureFixture, *named: str) -> None:
    with caplog.at_level(logging.ERROR, logger="pretrain"):
        assert pretrain.main(argv) == 2
    message = " ".join(r.getMessage() for r in caplog.records if r.name == "pretrain")
    for text in named:
        assert text in message, message


def test_malformed_yaml_exits_2_naming_file_and_line(tmp_path: Path, caplog) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("run:\n  name: x\n  output_dir: [runs\nmodel: {}\n")
    _exits_2_naming(["--recipe", str(path)], caplog, str(path), "not valid YAML at line 4")


def test_non_finite_override_exits_2_naming_the_key(tmp_path: Path, caplog) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    _exits_2_naming(["--recipe", str(path), "optim.lr=.inf"], caplog, "optim.lr: expected a finite number")


def test_an_empty_training_file_exits_2_naming_it(tmp_path: Path, caplog) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, data={"train_files": [str(empty)]}))
    _exits_2_naming(["--recipe", str(path)], caplog, "train_files", str(empty), "empty (0 bytes)")
    assert not (tmp_path / "run").exists()


def test_a_missing_tokenizer_folder_exits_2_naming_it(tmp_path: Path, caplog) -> None:
    missing = tmp_path / "no_tokenizer"
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, data={"tokenizer": str(missing)}))
    _exits_2_naming(["--recipe", str(path)], caplog, "data.tokenizer", str(missing))
    assert not (tmp_path / "run").exists()


# ---- where the log goes -------------------------------------------------------------------------------


def test_run_log_holds_records_until_the_folder_may_be_written(tmp_path: Path, capsys) -> None:
    root, log = logging.getLogger(), logging.getLogger("nt_llm.test_run_log")
    terminal = logging.StreamHandler(sys.stderr)  # as pretrain.py's logging.basicConfig makes it
    previous_level = root.level
    root.addHandler(terminal)
    root.setLevel(logging.INFO)
    try:
        with RunLog(quiet_terminal=True) as run_log:
            log.info("held until open")
            log.warning("a warning")
            run_log.open(tmp_path / LOG_FILE)
            log.info("after open")
            log.info("the final table", extra=TERMINAL)
        with pytest.raises(RuntimeError), RunLog(quiet_terminal=True):
            log.info("a refused start")
            raise RuntimeError("refused before open")
        log.info("after the run")
    finally:
        root.removeHandler(terminal)
        root.setLevel(previous_level)
    written = (tmp_path / LOG_FILE).read_text()
    assert all(text in written for text in ("held until open", "a warning", "after open", "the final table"))
    assert "a refused start" not in written
    shown = capsys.readouterr().err
    assert "a warning" in shown and "the final table" in shown and "after the run" in shown
    assert "held until open" not in shown and "after open" not in shown and "a refused start" not in shown


def test_with_a_progress_bar_the_info_log_goes_to_train_log_not_the_terminal(tmp_path: Path) -> None:
    recipe = tiny_recipe(
        tmp_path, optim={"max_steps": 4}, eval={"every": 2}, checkpoint={"every": 2}, logging={"progress_bar": True}
    )
    path = write_recipe(tmp_path, recipe)
    command = [sys.executable, str(REPO / "pretrain.py"), "--recipe", str(path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    written = (tmp_path / "run" / LOG_FILE).read_text()
    terminal = first.stdout + first.stderr
    for chatter in (
        "resolved recipe",
        "saved checkpoint",
        "accelerate.checkpointing",
        "Saving current state",
        "nt_llm.sparse.dst",
        "Setting accelerator to CPU",
        "Writing model shards",
    ):
        assert chatter not in terminal, chatter
    for info in ("resolved recipe", "saved checkpoint", "accelerate.checkpointing", "nt_llm.sparse.dst"):
        assert info in written, info
    assert re.search(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO nt_llm\.train\.trainer: saved checkpoint", written, re.MULTILINE
    )
    if importlib.util.find_spec("deepspeed") is not None:  # DeepSpeed warns when accelerate imports it
        assert "Setting accelerator to CPU" in written
    assert "4/4" in first.stderr and "| ensemble (averaged logits) |" in first.stderr

    # Without a progress bar the terminal keeps every record; the file is appended to.
    resumed = subprocess.run(
        command + ["--resume", "latest", "optim.max_steps=6", "logging.progress_bar=false"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "saved checkpoint" in resumed.stderr and "resumed from" in resumed.stderr
    written = (tmp_path / "run" / LOG_FILE).read_text()
    assert written.count("final evaluation at step") == 2 and "resumed from" in written
