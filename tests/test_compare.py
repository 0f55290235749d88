"""`nt-llm compare`: rows of finished studies side by side, paired by seed, refused where not comparable."""

import json
import logging
import math
import statistics
from pathlib import Path

import pytest
from helpers.training import tiny_recipe

from nt_llm.cli import compare as compare_cli
from nt_llm.stats import Interval
from nt_llm.study.compare import compare, parse_spec

REPO = Path(__file__).resolve().parents[1]


def _study(
    root: Path, label: str, ppl_by_seed: dict[int, float], steps: int = 10, full: dict | None = None, **data: object
) -> Path:
    """A finished study's --out as reproduce writes it: results.json's runs and one record per run (its recipe
    ``full`` with the seed set, or a recipe reduced to the fields compare reads)."""
    (root / "records").mkdir(parents=True)
    runs = []
    for seed, ppl in ppl_by_seed.items():
        name = f"{label}_s{seed}"
        runs.append(
            {"seed": seed, "run_dir": str(root / "runs" / name), "ensemble_ppl": ppl, "tokens": steps * 64,
             "params_nonzero": 1e6, "train_flops": 1e12}
        )  # fmt: skip
        recipe = {"optim": {"max_steps": steps}, "data": {"tokenizer": "t", "seq_len": 16, "seed": seed, **data}}
        if full is not None:
            recipe = {**full, "data": {**full["data"], "seed": seed, **data}}
        (root / "records" / f"{name}.json").write_text(json.dumps({"recipe": recipe, "measured": {}}))
    (root / "results.json").write_text(json.dumps({"runs": {label: runs}}))
    return root


def test_rows_of_two_studies_are_paired_by_the_seeds_they_share(tmp_path) -> None:
    a = _study(tmp_path / "a", "neurotrails", {0: 10.0, 1: 12.0, 2: 11.0, 3: 50.0}, batch_size=8)
    b = _study(tmp_path / "b", "dense", {0: 11.0, 1: 14.0, 2: 12.0}, steps=20, batch_size=32)  # order-only field
    text = compare([f"{a}:neurotrails=NT", f"{b}:dense"])
    lines = text.splitlines()
    assert lines[2].startswith(f"| NT | {a} | 0,1,2,3 | 10 | 640 | 20.75 ± ")
    assert lines[3].startswith(f"| dense (b) | {b} | 0,1,2 | 20 | 1,280 | 12.33 ± 1.53 | 11.00 / 14.00 / 12.00 |")
    # Seeds 0-2 only: differences -1, -2, -1; mean -1.33, sd 0.577, t(2) = 4.303 -> half-width 1.434.
    assert "| NT | - | -1.33 [-2.77, +0.10] |" in lines
    assert "| dense (b) | +1.33 [-0.10, +2.77] | - |" in lines


def test_rows_evaluated_on_other_validation_data_are_refused_by_field(tmp_path) -> None:
    a = _study(tmp_path / "a", "neurotrails", {0: 10.0, 1: 12.0})
    b = _study(tmp_path / "b", "dense", {0: 11.0, 1: 14.0}, validation_tokens=999)
    with pytest.raises(ValueError, match=r"dense \(b\) seed 0 evaluated on other validation data.*validation_tokens"):
        compare([f"{a}:neurotrails", f"{b}:dense"])


def test_a_record_written_before_a_defaulted_field_existed_still_compares(tmp_path) -> None:
    """Records keep recipes as they were written: one that lacks a field with a default (an older study's) names
    the same validation data as one that spells the default out."""
    recipe = tiny_recipe(tmp_path)
    del recipe["run"]["output_dir"]  # as studies record it
    assert "text_field" not in recipe["data"]
    a = _study(tmp_path / "a", "neurotrails", {0: 10.0, 1: 12.0}, full=recipe)
    b = _study(tmp_path / "b", "dense", {0: 11.0, 1: 14.0}, full=recipe, text_field="text")  # the default
    assert "| dense (b) | +1.50 [" in compare([f"{a}:neurotrails", f"{b}:dense"])
    c = _study(tmp_path / "c", "dense", {0: 11.0, 1: 14.0}, full=recipe, text_field="body")  # other text
    with pytest.raises(ValueError, match="data.text_field differ"):
        compare([f"{a}:neurotrails", f"{c}:dense"])


def test_bad_rows_exit_2_naming_the_problem(tmp_path, capsys, caplog) -> None:
    a = _study(tmp_path / "a", "neurotrails", {0: 10.0})
    with caplog.at_level(logging.ERROR):
        assert compare_cli.main([f"{a}:dense", f"{a}:neurotrails"]) == 2
    assert "has no row 'dense'; its rows: neurotrails" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert compare_cli.main([f"{tmp_path / 'missing'}:dense", f"{a}:neurotrails"]) == 2
        assert compare_cli.main([f"{a}:neurotrails"]) == 2
        assert compare_cli.main([f"{a}:neurotrails", f"{a}:neurotrails"]) == 2
    assert "missing/results.json: no such file" in caplog.text
    assert "at least two rows" in caplog.text and "two rows share a name" in caplog.text
    assert capsys.readouterr().out == ""  # nothing half-printed on stdout
    with pytest.raises(ValueError, match="STUDY_DIR:LABEL"):
        parse_spec("results/only_a_folder")
    assert parse_spec("results/x:dense=dense 600") == (Path("results/x"), "dense", "dense 600")


def test_interval_text_is_the_tables_format() -> None:
    assert Interval(-1.2345, -2.5, 0.049, 3).text() == "-1.23 [-2.50, +0.05]"
    assert Interval(4.0, 4.0, 4.0, 1).text() == "+4.00"


@pytest.mark.parametrize(
    ("rows", "cell"),
    [
        # README, 'The paper's setup on a GPU': NeuroTrails against dense trained on its tokens (H200, 60m).
        (["results/gpu_paper_setup_60m:neurotrails", "results/gpu_paper_setup_60m_dense556:dense"],
         "-1.94 [-2.74, -1.14]"),
        # README, 'The tokens-matched dense control': 6-block heads at density 0.5 against dense at 600 steps.
        (["results/paper_setup_h6_d05:neurotrails", "results/paper_setup_dense600:dense"], "+25.65 [+14.07, +37.24]"),
        # README, the same: 2-block heads at density 0.5 against dense at 600 steps and against 6-block heads.
        (["results/paper_setup_h2_d05:neurotrails", "results/paper_setup_dense600:dense"], "+62.79 [+55.18, +70.40]"),
        (["results/paper_setup_h2_d05:neurotrails", "results/paper_setup_h6_d05:neurotrails"],
         "+37.14 [+32.89, +41.38]"),
        # README, 'The tokens-matched control at the horizon': NeuroTrails at 2,400 steps against dense at 2,400.
        (["results/paper_setup_horizon:neurotrails", "results/paper_setup_horizon_dense2400:dense"],
         "+5.18 [+3.09, +7.27]"),
    ],
)  # fmt: skip
def test_the_readmes_tokens_matched_intervals_come_from_the_committed_records(rows, cell) -> None:
    text = compare([str(REPO / row) for row in rows])
    assert f"| neurotrails ({Path(rows[0].split(':')[0]).name}) | - | {cell} |" in text.splitlines()


@pytest.mark.parametrize(
    ("base", "tokens", "cell"),
    [("dense", 16_384_000, "-4.66 [-5.37, -3.94]"), ("full_ensemble", 16_384_000, "-0.77 [-0.83, -0.71]"),
     ("full_ensemble", 13_926_400, "-0.23 [-0.36, -0.10]"), ("full_ensemble", 12_288_000, "+0.26 [+0.15, +0.38]")],
)  # fmt: skip
def test_the_readmes_horizon_curve_intervals_come_from_the_committed_record(base, tokens, cell) -> None:
    # README, 'The 4x horizon at 60m': NeuroTrails against each baseline at the same tokens, read off the curves.
    record = json.loads((REPO / "results/gpu_paper_setup_60m_horizon/results.json").read_text(encoding="utf-8"))
    point = next(p for p in record["curve_comparisons"]["neurotrails"][base] if p["tokens"] == tokens)
    assert Interval(point["mean"], point["low"], point["high"], point["n"]).text() == cell
    assert cell in " ".join((REPO / "README.md").read_text(encoding="utf-8").split())


def test_the_readmes_cpu_horizon_table_comes_from_the_committed_record() -> None:
    # README, 'NeuroTrails at the CPU's 4x horizon': NeuroTrails' final row, its row read off the curves at the
    # baselines' final tokens, and the gap at half those tokens, from the three-seed group's record.
    record = json.loads((REPO / "results/paper_setup_horizon/results.json").read_text(encoding="utf-8"))
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    runs = sorted(record["runs"]["neurotrails"], key=lambda run: run["seed"])
    assert [run["seed"] for run in runs] == [0, 1, 2]

    def interval(point: dict) -> str:
        return Interval(point["mean"], point["low"], point["high"], point["n"]).text()

    final = record["comparisons"]["neurotrails"]
    finals = " / ".join(f"{run['ensemble_ppl']:.2f}" for run in runs)
    assert f"| {finals} | {interval(final['dense'])} | {interval(final['full_ensemble'])} |" in readme
    baseline_tokens = record["runs"]["dense"][0]["tokens"]
    at_baseline = [
        math.exp(next(p["val_loss"] for p in run["curve"] if p["tokens"] == baseline_tokens)) for run in runs
    ]
    curves = record["curve_comparisons"]["neurotrails"]
    gaps = {base: next(p for p in points if p["tokens"] == baseline_tokens) for base, points in curves.items()}
    row = (
        f"| {statistics.mean(at_baseline):.2f} ± {statistics.stdev(at_baseline):.2f} | "
        + " / ".join(f"{ppl:.2f}" for ppl in at_baseline)
        + f" | {interval(gaps['dense'])} | {interval(gaps['full_ensemble'])} |"
    )
    assert row in readme
    halfway = next(p for p in curves["dense"] if p["tokens"] == baseline_tokens // 2)
    assert f"same reading ({halfway['mean']:+.1f} [{halfway['low']:+.1f}, {halfway['high']:+.1f}])" in readme
