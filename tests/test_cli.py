"""nt-llm (nt_llm.cli): one command that dispatches to each tool's own main, and pretrain.py as its train."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from nt_llm import cli
from nt_llm.cli import train

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in cli.COMMANDS.items():
        assert f"  {name} " in out and command.summary in out
    for wanted in ("train", "export", "report", "prepare-data", "zero-shot", "reproduce"):  # the six
        assert wanted in cli.COMMANDS


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_shows_its_help_under_its_name(name: str, capsys: pytest.CaptureFixture) -> None:
    # Also loads what each command imports when it runs (its parser's defaults come from its library).
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: nt-llm {name}")


def test_the_command_line_loads_no_command_library_before_a_command_runs() -> None:
    # zero-shot --offline sets HF_DATASETS_OFFLINE, which datasets reads when imported: nothing may import it first.
    libraries = "('datasets', 'lm_eval', 'nt_llm.train')"
    code = f"import sys, nt_llm.cli; print(sorted(m for m in {libraries} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_no_command_or_an_unknown_one_exits_2_naming_the_choices(capsys: pytest.CaptureFixture) -> None:
    assert cli.main([]) == 2
    assert "usage: nt-llm COMMAND" in capsys.readouterr().err
    assert cli.main(["trian", "--recipe", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train, export, report" in err


def test_a_command_gets_its_arguments_and_its_name_in_usage(capsys: pytest.CaptureFixture) -> None:
    argv = list(sys.argv)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nt-llm train") and "--recipe RECIPE" in out and "--restart" in out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report"])  # report's own parser: at least one run folder
    assert exit_.value.code == 2
    assert "usage: nt-llm report" in capsys.readouterr().err
    assert sys.argv == argv  # restored for the caller


def test_pretrain_py_is_the_train_command() -> None:
    spec = importlib.util.spec_from_file_location("pretrain_script", REPO / "pretrain.py")
    pretrain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pretrain)
    assert pretrain.main is train.main and pretrain.parse_args is train.parse_args
    args = pretrain.parse_args(["--recipe", "r.yaml", "optim.lr=1e-3", "--resume", "latest"])
    assert (args.recipe, args.resume, args.overrides) == ("r.yaml", "latest", ["optim.lr=1e-3"])


def test_python_dash_m_nt_llm_runs_a_command_in_a_fresh_process(tmp_path: Path) -> None:
    # From another folder: the package, not the checkout, provides the commands.
    proc = subprocess.run(
        [sys.executable, "-m", "nt_llm", "train", "--recipe", str(tmp_path / "missing.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "missing.yaml" in proc.stderr


@pytest.mark.parametrize("outcome", ["finished", "non-finite"])
def test_train_takes_down_the_process_group_before_it_returns(outcome: str, monkeypatch, tmp_path: Path) -> None:
    # A multi-process run that exits with gloo's group still up can abort after it has finished (exit -6).
    import torch.distributed as dist

    import nt_llm.train

    def fake_train(recipe, **_):
        assert dist.is_initialized()  # the group is up while the run trains
        if outcome == "non-finite":
            raise nt_llm.train.NonFiniteLossError("loss is nan")
        return nt_llm.train.TrainResult(tmp_path, tmp_path / "checkpoints/step_1", 1, {})

    monkeypatch.setattr(nt_llm.train, "load_recipe", lambda path, overrides: path)
    monkeypatch.setattr(nt_llm.train, "train", fake_train)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        code = train.main(["--recipe", "recipe.yaml"])
    finally:
        initialized = dist.is_initialized()
        if initialized:
            dist.destroy_process_group()
    assert code == (0 if outcome == "finished" else train.EXIT_NON_FINITE)
    assert not initialized
