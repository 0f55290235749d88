"""nt_llm.report (and nt-llm report, nt_llm.cli.report): the comparison table and curves of finished runs, from their
metrics.jsonl."""

import json
import logging
import subprocess
import sys
from pathlib import Path

from nt_llm import cli, report
from nt_llm.cli import report as report_cli


def fake_run(root: Path, name: str, losses: list[float], heads: int, density: float = 1.0) -> Path:
    run = root / name
    run.mkdir(parents=True)
    events = [{"event": "train", "step": 1, "loss": 9.0}]
    for i, loss in enumerate(losses, start=1):
        event = {
            "event": "eval",
            "step": 10 * i,
            "tokens": 1000 * i,
            "ensemble_loss": loss,
            "ensemble_ppl": 2.718281828**loss,
            "ensemble_gain": 0.01 * (heads - 1),
            "density": density,
        }
        for h in range(heads):
            event[f"head{h}_loss"] = loss + 0.01 * (h + 1)
            event[f"head{h}_ppl"] = 2.718281828 ** event[f"head{h}_loss"]
        if heads > 1:
            event["disagreement"] = 0.3
        events.append(event)
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def test_table_compares_with_the_last_run_and_plots(tmp_path, caplog) -> None:
    nt = fake_run(tmp_path, "neurotrails_cpu", [5.0, 4.0], heads=3, density=0.9)
    dense = fake_run(tmp_path, "dense_cpu", [5.1, 4.1], heads=1)
    table = report.comparison_table([nt, dense])
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "vs dense_cpu" in table.splitlines()[0]
    # exp(4.0) / exp(4.1) - 1 = -9.5%
    assert "| -9.5% |" in rows["neurotrails_cpu"] and "| +0.0% |" in rows["dense_cpu"]
    assert "| 0.900 |" in rows["neurotrails_cpu"] and "| - |" in rows["dense_cpu"]
    caplog.set_level(logging.INFO, logger="nt_llm.cli.report")
    assert report_cli.main([str(nt), str(dense), "--plot", str(tmp_path / "plots" / "loss.png")]) == 0
    assert (tmp_path / "plots" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "validation curves:" in caplog.text


def test_a_folder_without_metrics_exits_2(tmp_path, caplog) -> None:
    assert report_cli.main([str(tmp_path)]) == 2
    assert "has no metrics.jsonl" in caplog.text
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"event": "train", "step": 1}) + "\n")
    assert report_cli.main([str(tmp_path)]) == 2
    assert "holds no evaluation yet" in caplog.text


def test_the_table_goes_to_stdout_and_the_logs_to_stderr(tmp_path) -> None:
    nt = fake_run(tmp_path, "neurotrails_cpu", [5.0, 4.0], heads=3, density=0.9)
    dense = fake_run(tmp_path, "dense_cpu", [5.1, 4.1], heads=1)
    plot = tmp_path / "loss.png"
    # The installed command's own process: its logging set up as a user's `nt-llm report ... > table.md` gets it.
    command = [sys.executable, "-m", "nt_llm", "report", str(nt), str(dense), "--plot", str(plot)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == report.comparison_table([nt, dense]) + "\n"
    assert f"validation curves: {plot}" in done.stderr and "| run |" not in done.stderr
    assert plot.is_file()


def test_plot_without_matplotlib_exits_2_naming_the_extra(tmp_path, monkeypatch, capsys, caplog) -> None:
    nt = fake_run(tmp_path, "neurotrails_cpu", [5.0, 4.0], heads=3, density=0.9)
    dense = fake_run(tmp_path, "dense_cpu", [5.1, 4.1], heads=1)
    for module in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules: `import` raises ImportError
    plot = tmp_path / "loss.png"
    assert cli.main(["report", str(nt), str(dense), "--plot", str(plot)]) == 2
    assert "--plot needs matplotlib" in caplog.text and "pip install 'nt_llm[plot]'" in caplog.text
    # Refused before any output: no table on stdout as if the command had succeeded, no file.
    assert capsys.readouterr().out == "" and not plot.exists()
    # Without --plot the report needs no matplotlib.
    assert cli.main(["report", str(nt), str(dense)]) == 0
    assert capsys.readouterr().out == report.comparison_table([nt, dense]) + "\n"
