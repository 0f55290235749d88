"""nt-llm reproduce / sweep / ablate (nt_llm.study) end to end on a tiny local config (a few steps per run)."""

import argparse
import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import yaml
from helpers.configs import tiny_size_file
from helpers.training import tiny_recipe

from nt_llm.modeling.modeling_neurotrails import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config, load_size
from nt_llm.sparse.config import NEUROTRAILS_ALL, NEUROTRAILS_HEADS
from nt_llm.sparse.dst import select_parameters
from nt_llm.study import ablate, goldilocks, reproduce, sweep
from nt_llm.train.recipe import Recipe, load_recipe, save_recipe

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_flags(tmp_path: Path) -> list[str]:
    """Flags that train each run for 4 steps on local shards with a 400-piece tokenizer, hidden 32."""
    data = tiny_recipe(tmp_path)["data"]
    data_file = tmp_path / "data.yaml"
    data_file.write_text(yaml.safe_dump(data))
    return [
        "--size",
        tiny_size_file(tmp_path),
        "--data",
        str(data_file),
        "--steps",
        "4",
        "--batch",
        "4",
        "--seq-len",
        "16",
        "--eval-every",
        "2",
        "--validation-tokens",
        "256",
        "--threads",
        "1",
        "--out",
        str(tmp_path / "out"),
        "--seeds",
        "0",
        "--lr",
        "1e-2",
        "--jobs",
        "1",
        "--precision",
        "no",
    ]


def check_outputs(out: Path, labels: list[str]) -> list[dict]:
    assert (out / "loss.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "diversity.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "paired_difference.png").read_bytes()[:8] == PNG_MAGIC
    table = (out / "results.md").read_text()
    results = json.loads((out / "results.json").read_text())
    rows = {row["label"]: row for row in results["rows"]}
    assert list(rows) == labels
    for label, row in rows.items():
        assert f"| {label} |" in table
        assert row["tokens"] == 4 * 4 * 16
        # Four steps barely move a 400-piece model: its perplexity stays finite and near the vocabulary size.
        assert 1 < row["ensemble_ppl"]["mean"] < 2000
        assert all(1 < head["mean"] < 2000 for head in row["head_ppl"])
        assert 0 < row["params_nonzero"] <= row["params_total"]
        assert row["train_flops"] > 3 * row["inference_flops_per_token"] * row["tokens"] * 0.99
        assert 0 <= row["disagreement"]["mean"] <= 1
        curve = results["runs"][label][0]["curve"]
        assert [point["tokens"] for point in curve] == [2 * 64, 4 * 64]
        assert all(math.isfinite(point["val_loss"]) for point in curve)
    return list(rows.values())


def test_reproduce_writes_table_and_plots(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=reproduce.log.name)
    assert reproduce.main(tiny_flags(tmp_path) + ["--methods", "dense,neurotrails", "--density", "0.5"]) == 0
    rows = {row["label"]: row for row in check_outputs(tmp_path / "out", ["dense", "neurotrails"])}
    dense, neurotrails = rows["dense"], rows["neurotrails"]
    assert len(dense["head_ppl"]) == 1 and len(neurotrails["head_ppl"]) == 3
    assert dense["disagreement"]["mean"] == 0
    # Density 0.5 heads: clearly fewer nonzero weights than parameters (the dense model only lacks its pad row).
    assert neurotrails["params_nonzero"] < 0.8 * neurotrails["params_total"]
    assert dense["params_nonzero"] > 0.99 * dense["params_total"]
    # A second call reuses the finished runs (their records) instead of retraining them.
    caplog.clear()
    assert reproduce.main(tiny_flags(tmp_path) + ["--methods", "dense"]) == 0
    assert "dense_s0: recorded earlier" in caplog.text
    # Another budget is another run: refused while the finished one is there, retrained (not appended to) on
    # --rerun.
    caplog.clear()
    flags = tiny_flags(tmp_path)
    flags[flags.index("--steps") + 1] = "2"
    assert reproduce.main(flags + ["--methods", "dense"]) == 2
    assert "holds runs ['dense_s0'] trained with another recipe" in caplog.text
    assert (tmp_path / "out" / "runs" / "dense_s0" / "checkpoints" / "step_4").is_dir()
    caplog.clear()
    assert reproduce.main(flags + ["--methods", "dense", "--rerun"]) == 0
    assert "reusing" not in caplog.text
    (row,) = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert row["tokens"] == 2 * 4 * 16
    assert [
        p["tokens"] for p in json.loads((tmp_path / "out" / "results.json").read_text())["runs"]["dense"][0]["curve"]
    ] == [2 * 64]


@pytest.mark.slow
def test_reproduce_trains_every_method(tmp_path):
    assert reproduce.main(tiny_flags(tmp_path) + ["--density", "0.5"]) == 0
    rows = {row["label"]: row for row in check_outputs(tmp_path / "out", list(reproduce.METHODS))}
    dense, treenet, neurotrails, full = (rows[m] for m in reproduce.METHODS)
    assert len(full["head_ppl"]) == 3
    # Same shape; NeuroTrails at density 0.5 keeps fewer nonzero weights and so counts fewer FLOPs.
    assert neurotrails["params_total"] == treenet["params_total"]
    assert neurotrails["params_nonzero"] < 0.8 * treenet["params_nonzero"]
    assert neurotrails["inference_flops_per_token"] < treenet["inference_flops_per_token"]
    assert full["params_total"] > treenet["params_total"] > dense["params_total"]


def check_goldilocks(out: Path, rows: list[dict], points: dict[str, tuple[int, float]]) -> dict:
    """The sweep's grid outputs in ``out``: goldilocks.png, and "grid" in results.json holding each row's values at
    its (head layers, density) ``points[label]``; returns results.json."""
    assert (out / "goldilocks.png").read_bytes()[:8] == PNG_MAGIC
    results = json.loads((out / "results.json").read_text())
    cells = {(cell["head_layers"], cell["density"]): cell for cell in results["grid"]}
    assert len(results["grid"]) == len(cells) == len(points)
    for row in rows:
        cell = cells[points[row["label"]]]
        assert cell["ensemble_ppl"] == row["ensemble_ppl"] and cell["disagreement"] == row["disagreement"]
        assert cell["n"] == row["seeds"]
    assert "## Goldilocks grid" in (out / "results.md").read_text()
    return results


def test_sweep_writes_one_row_per_grid_point(tmp_path):
    assert sweep.main(tiny_flags(tmp_path) + ["--head-layers", "1", "--density", "0.5"]) == 0
    (row,) = check_outputs(tmp_path / "out", ["h1_d0.5"])
    assert row["params_nonzero"] < 0.8 * row["params_total"]
    assert "reference" not in check_goldilocks(tmp_path / "out", [row], {"h1_d0.5": (1, 0.5)})


@pytest.mark.slow
def test_sweep_grid_draws_the_goldilocks_figure_against_a_reference_study(tmp_path):
    """The grid end to end, with --reference a reproduce study of the same budget: its dense model and full
    ensemble are the figure's reference lines and results.json's "reference"."""
    reference = tmp_path / "reference"
    flags = tiny_flags(tmp_path)
    flags[flags.index("--out") + 1] = str(reference)
    assert reproduce.main(flags + ["--methods", "dense,full_ensemble"]) == 0
    flags = tiny_flags(tmp_path) + ["--head-layers", "1,2", "--density", "0.5,1", "--reference", str(reference)]
    assert sweep.main(flags) == 0
    points = {"h1_d0.5": (1, 0.5), "h1_d1": (1, 1.0), "h2_d0.5": (2, 0.5), "h2_d1": (2, 1.0)}
    rows = check_outputs(tmp_path / "out", list(points))
    by_label = {row["label"]: row for row in rows}
    assert by_label["h1_d1"]["params_nonzero"] == by_label["h1_d1"]["params_total"]
    assert by_label["h2_d0.5"]["params_nonzero"] < by_label["h2_d1"]["params_nonzero"]
    results = check_goldilocks(tmp_path / "out", rows, points)
    studied = {row["label"]: row for row in json.loads((reference / "results.json").read_text())["rows"]}
    for label in ("dense", "full_ensemble"):
        assert results["reference"][label] == {"ensemble_ppl": studied[label]["ensemble_ppl"], "seeds": 1}
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| head layers | density 0.5 | density 1 (TreeNet) |" in table
    h2 = by_label["h2_d0.5"]
    assert f"| 2 | {h2['ensemble_ppl']['mean']:.2f} ({h2['disagreement']['mean']:.3f}) |" in table
    assert f"dense {studied['dense']['ensemble_ppl']['mean']:.2f} (1 seed)" in table


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--methods", "dense,moe"], "unknown ['moe']"),
        (["--density", "1.5"], "--density must be in (0, 1]"),
        (["--setup", "paper", "--revert", "init,depth"], "--revert: unknown ['depth']"),
        (["--revert", "init"], "pass --setup paper"),
    ],
)
def test_reproduce_rejects_bad_input(tmp_path, caplog, flags, message):
    assert reproduce.main(["--out", str(tmp_path / "out"), *flags]) == 2
    assert message in caplog.text


def test_sweep_rejects_bad_grid(tmp_path, caplog):
    assert sweep.main(["--out", str(tmp_path / "out"), "--head-layers", "0"]) == 2
    assert "--head-layers must be >= 1" in caplog.text


def reference_study(study: Path, labels: tuple[str, ...] = ("dense", "full_ensemble"), **fields) -> None:
    """A finished reproduce study's results.json in ``study``: rows ``labels`` of two seeds that trained 256 tokens
    (4 steps x 4 x 16), in nt_llm's setup unless ``fields`` say otherwise."""
    runs = {
        "dense": [synthetic_run(0, [5.0, 4.8], tokens=[128, 256]), synthetic_run(1, [5.1, 4.9], tokens=[128, 256])],
        "full_ensemble": [synthetic_run(s, [5.0, 4.6 + s / 10], tokens=[128, 256], heads=3) for s in (0, 1)],
    }
    rows = [reproduce.summarise(label, runs[label]) for label in labels]
    study.mkdir(parents=True, exist_ok=True)
    (study / "results.json").write_text(json.dumps({"setup": "nt_llm", "reverted": [], "rows": rows, **fields}))


@pytest.mark.parametrize(
    "labels, fields, flags, message",
    [
        (None, {}, [], "is not a finished study's results.json"),
        (("dense",), {}, [], "has no full_ensemble row (it has ['dense'])"),
        (("dense", "full_ensemble"), {}, ["--steps", "8"], "dense row trained 256 tokens, this sweep trains 512"),
        (("dense", "full_ensemble"), {}, ["--setup", "paper"], "trained setup nt_llm with reverted [], this sweep"),
        (
            ("dense", "full_ensemble"),
            {"setup": "paper", "reverted": ["scope"]},
            ["--setup", "paper", "--revert", "init"],
            "trained setup paper with reverted ['scope'], this sweep --setup paper with --revert ['init']",
        ),
    ],
)
def test_sweep_refuses_a_reference_it_cannot_draw_before_anything_trains(
    tmp_path, caplog, labels, fields, flags, message
):
    reference = tmp_path / "reference"
    if labels is None:
        reference.mkdir()
    else:
        reference_study(reference, labels, **fields)
    out = tmp_path / "out"
    budget = ["--steps", "4", "--batch", "4", "--seq-len", "16", "--lr", "1e-2"]
    assert sweep.main(["--out", str(out), *budget, "--reference", str(reference), *flags]) == 2
    assert "--reference: " in caplog.text and message in caplog.text
    assert not out.exists()  # refused before the study made its folder: no run (and no lr sweep) trained


def test_ablate_trains_named_and_custom_variants(tmp_path):
    flags = tiny_flags(tmp_path) + [
        "--variants",
        "uniform,static",
        "--no-baselines",
        "--variant",
        "slow:sparsity.update_frequency=4,sparsity.prune_rate=0.1",
    ]
    assert ablate.main(flags) == 0
    rows = check_outputs(tmp_path / "out", ["nt_uniform", "nt_static", "nt_slow"])
    assert all(len(row["head_ppl"]) == 3 and row["params_nonzero"] < row["params_total"] for row in rows)
    recipe = yaml.safe_load((tmp_path / "out" / "runs" / "nt_slow_s0.yaml").read_text())
    assert (recipe["sparsity"]["update_frequency"], recipe["sparsity"]["prune_rate"]) == (4, 0.1)
    assert (
        yaml.safe_load((tmp_path / "out" / "runs" / "nt_uniform_s0.yaml").read_text())["sparsity"]["distribution"]
        == "uniform"
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--variants", "uniform,bogus"], "unknown ['bogus']"),
        (["--variant", "x:optim.lr"], "must look like section.key=value"),
        (["--lr", "fast"], "--lr must be a number, 'auto' or 'per-method'"),
    ],
)
def test_ablate_rejects_bad_input(tmp_path, caplog, capsys, flags, message):
    try:
        code = ablate.main(["--out", str(tmp_path / "out"), *flags])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    assert message in caplog.text + capsys.readouterr().err


def test_runs_dir_reuses_another_studys_finished_runs(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=reproduce.log.name)
    assert reproduce.main(tiny_flags(tmp_path) + ["--methods", "dense"]) == 0
    flags = tiny_flags(tmp_path)
    flags[flags.index("--out") + 1] = str(tmp_path / "ablation")
    caplog.clear()
    assert (
        ablate.main(flags + ["--runs-dir", str(tmp_path / "out" / "runs"), "--variants", "static", "--no-baselines"])
        == 0
    )
    assert "reusing" not in caplog.text  # a variant of its own is trained
    # The baselines are the reproduction's own runs, NeuroTrails at its density included.
    nt = next(s for s in ablate.variant_specs({}, [0], 0.5, baselines=True) if s.method == "neurotrails")
    assert (nt.label, nt.density, nt.overrides) == ("neurotrails", 0.5, ())
    caplog.clear()
    assert reproduce.main(flags + ["--runs-dir", str(tmp_path / "out" / "runs"), "--methods", "dense"]) == 0
    assert "dense_s0: finished earlier, reusing" in caplog.text
    assert json.loads((tmp_path / "ablation" / "results.json").read_text())["rows"][0]["label"] == "dense"


def test_records_stand_for_runs_whose_folders_are_gone(tmp_path, caplog):
    """A study committed with its records resumes on another machine without its run folders; a record of
    another recipe, or a torn one, is never taken for the run."""
    caplog.set_level(logging.INFO, logger=reproduce.log.name)
    flags = tiny_flags(tmp_path) + ["--methods", "dense"]
    assert reproduce.main(flags) == 0
    out = tmp_path / "out"
    first = json.loads((out / "results.json").read_text())["rows"][0]
    shutil.rmtree(out / "runs")
    caplog.clear()
    assert reproduce.main(flags) == 0
    assert "dense_s0: recorded earlier" in caplog.text and not (out / "runs" / "dense_s0").exists()
    assert json.loads((out / "results.json").read_text())["rows"][0] == first
    other = flags.copy()
    other[other.index("--lr") + 1] = "5e-3"
    args = _parse(other)
    spec = reproduce.RunSpec("dense", "dense", None, 1.0, 0)
    assert reproduce.recorded(spec, args, 5e-3, 4) is None  # another learning rate: trained, not reused
    (out / "records" / "dense_s0.json").write_text('{"recipe": ')
    with pytest.raises(ValueError, match=r"dense_s0.json: not a readable run record"):
        reproduce.recorded(spec, args, 1e-2, 4)


@pytest.mark.slow
def test_paper_setup_with_per_method_rates_and_one_difference_reverted(tmp_path, caplog):
    """--setup paper: the paper's init for every method, all 2-D weights sparse and 1/density the steps for
    NeuroTrails; --lr per-method: each row's best of a sweep on the first seed, whose run is reused."""
    caplog.set_level(logging.INFO, logger=reproduce.log.name)
    flags = tiny_flags(tmp_path)
    flags[flags.index("--lr") + 1] = "per-method"
    flags += ["--setup", "paper", "--methods", "dense,neurotrails", "--density", "0.5", "--lr-candidates", "5e-3,2e-2"]
    assert reproduce.main(flags + ["--seeds", "0,1"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["lr"]) == {"dense", "neurotrails"} and set(results["lr"].values()) <= {5e-3, 2e-2}
    assert (results["setup"], results["reverted"], results["precision"]) == ("paper", [], "no")
    runs = tmp_path / "out" / "runs"
    nt_rate = results["lr"]["neurotrails"]
    nt = yaml.safe_load((runs / f"neurotrails_lr{nt_rate:g}_s1.yaml").read_text())
    dense = yaml.safe_load((runs / f"dense_lr{results['lr']['dense']:g}_s1.yaml").read_text())
    assert nt["model"]["embedding_init_std"] == dense["model"]["embedding_init_std"] == pytest.approx(0.4**0.5)
    assert nt["sparsity"]["include"] == list(NEUROTRAILS_ALL)
    assert (nt["optim"]["max_steps"], dense["optim"]["max_steps"]) == (8, 4)  # 4 steps / density 0.5
    assert nt["eval"]["every"] == dense["eval"]["every"] == 2  # the same cadence over the longer run
    assert "| neurotrails |" in (tmp_path / "out" / "results.md").read_text()
    # The sweep's first-seed run at the chosen rate is the row's seed 0: trained once (2 rows x 2 rates + 2 seeds 1).
    assert sorted(p.name for p in runs.glob("*.yaml")) == sorted(
        [f"{m}_lr{lr:g}_s0.yaml" for m in ("dense", "neurotrails") for lr in (5e-3, 2e-2)]
        + [f"dense_lr{results['lr']['dense']:g}_s1.yaml", f"neurotrails_lr{nt_rate:g}_s1.yaml"]
    )


def test_the_paper_setup_and_one_difference_reverted(tmp_path) -> None:
    """The fast form of the slow test above: the recipes --setup paper writes, and --revert."""
    args = _parse(tiny_flags(tmp_path) + ["--setup", "paper"])
    nt = reproduce.RunSpec("neurotrails", "neurotrails", None, 0.5, 0, lr=1e-2)
    dense = reproduce.RunSpec("dense", "dense", None, 1.0, 0)
    paper_nt = reproduce.build_recipe(nt, args, tmp_path / "x", None, 4)
    paper_dense = reproduce.build_recipe(dense, args, tmp_path / "y", 2e-3, 4)
    assert isinstance(paper_nt, Recipe) and isinstance(paper_dense, Recipe)
    init_std = [r.model.config["embedding_init_std"] for r in (paper_nt, paper_dense)]
    assert init_std == [0.4**0.5, 0.4**0.5]
    assert paper_nt.sparsity.include == NEUROTRAILS_ALL
    assert (paper_nt.optim.max_steps, paper_dense.optim.max_steps) == (8, 4)
    assert (paper_nt.optim.lr, paper_dense.optim.lr) == (1e-2, 2e-3)  # the run's own rate first
    # One difference back to nt_llm's setting: the scope (the init and the schedule stay the paper's).
    reverted = reproduce.build_recipe(
        nt, reproduce.argparse.Namespace(**{**vars(args), "revert": ["scope"]}), tmp_path, None, 4
    )
    assert reverted.sparsity.include == NEUROTRAILS_HEADS and reverted.optim.max_steps == 8
    assert reverted.model.config["embedding_init_std"] == pytest.approx(0.4**0.5)


def test_the_longest_runs_start_first(tmp_path) -> None:
    """A map's cells in the paper's schedule train 1/density the steps: the sparsest and deepest start first."""
    grid = sweep.grid_specs([2, 6], [0.5, 0.9], [0])
    paper = [s.label for s in reproduce.training_order(grid, _parse(tiny_flags(tmp_path) + ["--setup", "paper"]), 4)]
    assert paper == ["h6_d0.5", "h2_d0.5", "h6_d0.9", "h2_d0.9"]
    # nt_llm's schedule gives every run the same steps: the method's step cost orders them.
    specs = reproduce.method_specs(["dense", "full_ensemble", "neurotrails"], [0], None, 0.9)
    order = [s.method for s in reproduce.training_order(specs, _parse(tiny_flags(tmp_path)), 4)]
    assert order == ["full_ensemble", "neurotrails", "dense"]


def test_the_report_title_names_the_longer_schedule_only_where_it_ran(tmp_path) -> None:
    paper = _parse(tiny_flags(tmp_path) + ["--setup", "paper"])
    assert reproduce.budget(paper) == "4 steps x 4 x 16 tokens (sparse ensembles: 1/density of the steps)"
    reverted = _parse(tiny_flags(tmp_path) + ["--setup", "paper", "--revert", "longer"])
    assert reproduce.budget(reverted) == reproduce.budget(_parse(tiny_flags(tmp_path))) == "4 steps x 4 x 16 tokens"


def test_match_tokens_gives_every_row_the_sparse_runs_steps_and_says_so(tmp_path, caplog) -> None:
    args = _parse(tiny_flags(tmp_path) + ["--setup", "paper"])
    args.density = 0.5
    specs = reproduce.method_specs(list(reproduce.METHODS), [0], None, args.density)
    assert {s.label: reproduce.run_steps(s, args, 300) for s in specs} == {
        "dense": 300, "treenet": 300, "neurotrails": 600, "full_ensemble": 300
    }  # fmt: skip
    neurotrails = next(s for s in specs if s.label == "neurotrails")
    unmatched = reproduce.build_recipe(neurotrails, args, tmp_path / "x", 2e-3, 300)
    args.match_tokens = True
    assert {reproduce.run_steps(s, args, 300) for s in specs} == {600}
    # NeuroTrails' own run is the same recipe either way: a matched study reuses it (--reuse) and retrains the rest.
    assert reproduce.build_recipe(neurotrails, args, tmp_path / "x", 2e-3, 300) == unmatched
    dense = next(s for s in specs if s.label == "dense")
    assert reproduce.build_recipe(dense, args, tmp_path / "x", 2e-3, 300).optim.max_steps == 600
    assert reproduce.budget(args).endswith("(every run, tokens matched: 1/density of the steps)")
    # Without the paper's longer schedule there is nothing to match: refused before anything trains.
    for extra in ([], ["--setup", "paper", "--revert", "longer"]):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert reproduce.main(tiny_flags(tmp_path) + extra + ["--match-tokens", "--out", str(tmp_path / "o")]) == 2
        assert "--match-tokens gives every row" in caplog.text
    assert not (tmp_path / "o" / "runs").exists()


def test_the_report_names_the_gpu_where_the_runs_found_one(monkeypatch) -> None:
    """The trainer trains on CUDA wherever accelerate sees it: the report must say so, not name the host CPU."""
    import torch

    assert reproduce._hardware_text() == reproduce._cpu_text()  # the test machine has no CUDA device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU 9000")
    text = reproduce._hardware_text()
    assert text.startswith("Test GPU 9000 (CUDA ") and f"torch {torch.__version__}" in text
    assert reproduce._cpu_text() not in text


def test_heads_init_copies_goes_into_the_sparse_ensembles_recipes_and_nothing_else_changes(tmp_path) -> None:
    """--heads-init copies: model.heads_init in every sparse ensemble's recipe (copied dense members would stay
    identical), the baselines' recipes untouched so their recorded runs are reused; without the flag nothing changes."""
    copies = _parse(tiny_flags(tmp_path) + ["--heads-init", "copies"])
    default = _parse(tiny_flags(tmp_path))
    assert default.heads_init == "independent"
    copied_labels = []
    for spec in reproduce.method_specs(list(reproduce.METHODS), [0], None, 0.5):
        copied = reproduce.build_recipe(spec, copies, tmp_path / "x", 2e-3, 4)
        plain = reproduce.build_recipe(spec, default, tmp_path / "x", 2e-3, 4)
        assert "heads_init" not in plain.model.config and "heads_init" not in plain.to_dict()["model"]
        copied_dict = copied.to_dict()
        if "heads_init" in copied.model.config:
            assert copied.model.config["heads_init"] == "copies"
            copied_labels.append(spec.label)
            del copied_dict["model"]["heads_init"]
        assert copied_dict == plain.to_dict()  # the one difference, or none
    assert copied_labels == ["neurotrails"]
    assert "copies of head 0" in reproduce._setup_text(copies)
    assert "copies of head 0" not in reproduce._setup_text(default)
    with pytest.raises(SystemExit):
        _parse(tiny_flags(tmp_path) + ["--heads-init", "clones"])


def synthetic_run(seed: int, losses: list[float], tokens: list[int] | None = None, heads: int = 1) -> dict:
    """What collect() gives for one run, with the validation curve ``losses`` at ``tokens`` (default 100, 200, ...)."""
    tokens = tokens or [100 * (i + 1) for i in range(len(losses))]
    return {
        "seed": seed,
        "run_dir": f"runs/x_s{seed}",
        "tokens": tokens[-1],
        "ensemble_ppl": math.exp(losses[-1]),
        "ensemble_loss": losses[-1],
        "head_ppl": [math.exp(losses[-1])] * heads,
        "disagreement": 0.1 if heads > 1 else 0.0,
        "pairwise_kl": 0.01 if heads > 1 else 0.0,
        "ensemble_gain": 0.02 if heads > 1 else 0.0,
        "params_total": 1000,
        "params_nonzero": 900,
        "train_flops": 1e9,
        "inference_flops_per_token": 1e5,
        "tokens_per_s": None,
        "curve": [
            {"tokens": t, "val_loss": loss, "disagreement": 0.0, "pairwise_kl": 0.0, "ensemble_gain": 0.0}
            for t, loss in zip(tokens, losses, strict=True)
        ],
    }


SYNTHETIC_RESULTS = {
    "dense": [synthetic_run(0, [2.0, 1.5]), synthetic_run(1, [2.1, 1.6]), synthetic_run(2, [2.2, 1.7])],
    "full_ensemble": [synthetic_run(0, [1.9, 1.4], heads=3), synthetic_run(1, [2.0, 1.5], heads=3)],
    # Trains longer (a third evaluation, which no reference has) and has a seed (7) no reference has.
    "neurotrails": [
        synthetic_run(0, [1.8, 1.3, 1.2], heads=3),
        synthetic_run(1, [1.9, 1.5, 1.3], heads=3),
        synthetic_run(7, [1.0, 1.0, 1.0], heads=3),
    ],
    # One seed, paired with dense only, and evaluated at other token counts except 200.
    "treenet": [synthetic_run(2, [2.0, 1.5], tokens=[150, 200], heads=3)],
    "orphan": [synthetic_run(9, [2.0, 1.5])],  # no seed any reference has: no comparison at all
}


def test_curve_comparisons_pair_seeds_at_the_same_token_counts() -> None:
    from nt_llm.stats import t_quantile_975

    diffs = reproduce.curve_comparisons(SYNTHETIC_RESULTS)
    assert set(diffs) == {"dense", "full_ensemble", "neurotrails", "treenet"}
    assert set(diffs["dense"]) == {"full_ensemble"} and set(diffs["full_ensemble"]) == {"dense"}
    nt_dense = diffs["neurotrails"]["dense"]
    assert [p["tokens"] for p in nt_dense] == [100, 200]  # 300: no reference run got there
    # Seeds 0 and 1 (seed 7 has no partner): per-seed differences of exp(loss), their mean and t-interval.
    for point, index in zip(nt_dense, (0, 1), strict=True):
        nt = [SYNTHETIC_RESULTS["neurotrails"][s]["curve"][index]["val_loss"] for s in (0, 1)]
        dense = [SYNTHETIC_RESULTS["dense"][s]["curve"][index]["val_loss"] for s in (0, 1)]
        per_seed = [math.exp(a) - math.exp(b) for a, b in zip(nt, dense, strict=True)]
        mean = sum(per_seed) / 2
        half = t_quantile_975(1) * abs(per_seed[0] - per_seed[1]) / 2  # stdev of two values / sqrt(2)
        assert point["n"] == 2
        assert point["mean"] == pytest.approx(mean)
        assert (point["low"], point["high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
    # One seed: the difference itself, no interval.
    (point,) = diffs["treenet"]["dense"]
    assert point["tokens"] == 200 and point["n"] == 1
    assert point["mean"] == pytest.approx(math.exp(1.5) - math.exp(1.7)) == point["low"] == point["high"]
    assert "full_ensemble" not in diffs["treenet"]
    # The final point's paired difference is the table's.
    table = reproduce.paired_comparisons(
        {label: runs for label, runs in SYNTHETIC_RESULTS.items() if label in ("dense", "full_ensemble")},
        reproduce.COMPARED_WITH,
    )
    assert diffs["full_ensemble"]["dense"][-1]["mean"] == pytest.approx(table["full_ensemble"]["dense"]["mean"])


def test_the_study_writes_the_paired_difference_plot_and_its_numbers(tmp_path, monkeypatch) -> None:
    args = _parse(tiny_flags(tmp_path) + ["--lr", "2e-3", "--heads-init", "copies"])
    monkeypatch.setattr(reproduce, "train_all", lambda *a, **k: None)
    # Rows the table can pair too (its comparisons need every row to share a seed with each reference).
    results = {label: SYNTHETIC_RESULTS[label] for label in ("dense", "full_ensemble", "neurotrails")}
    monkeypatch.setattr(reproduce, "collect", lambda *a, **k: results)
    reproduce.run_all([], args, "Synthetic")
    out = tmp_path / "out"
    for name in ("loss.png", "diversity.png", "paired_difference.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    written = json.loads((out / "results.json").read_text())
    assert written["curve_comparisons"] == json.loads(json.dumps(reproduce.curve_comparisons(results)))
    assert [p["tokens"] for p in written["curve_comparisons"]["neurotrails"]["full_ensemble"]] == [100, 200]
    assert written["heads_init"] == "copies"
    assert "copies of head 0" in (out / "results.md").read_text()
    # Without any reference row the plot is still written (its panels say there is nothing to pair).
    reproduce.plot_curves({"orphan": SYNTHETIC_RESULTS["orphan"]}, tmp_path)
    assert (tmp_path / "paired_difference.png").read_bytes()[:8] == PNG_MAGIC


def test_mean_curves_match_seeds_by_tokens_when_one_lacks_a_point() -> None:
    curve = [{"tokens": t, "val_loss": loss} for t, loss in ((100, 5.0), (200, 4.0), (300, 3.0))]
    missing = [point for point in curve if point["tokens"] != 200]
    xs, means, stds = reproduce.mean_curve([{"curve": curve}, {"curve": missing}], "val_loss")
    assert xs == [100, 300] and means == [5.0, 3.0] and stds == [0.0, 0.0]


def synthetic_grid() -> tuple[list[reproduce.RunSpec], dict[str, list[dict]]]:
    """A 2 x 2 grid with two seeds, as collect() gives it: seed s of (layers, density) ends at loss
    4 + layers / 10 - density / 5 + s / 20, with disagreement 0.1 (synthetic_run's)."""
    specs = sweep.grid_specs([1, 2], [0.5, 1.0], [0, 1])
    runs: dict[str, list[dict]] = {}
    for spec in specs:
        loss = 4 + spec.head_layers / 10 - spec.density / 5 + spec.seed / 20
        runs.setdefault(spec.label, []).append(synthetic_run(spec.seed, [loss + 1, loss], heads=3))
    return specs, runs


def test_goldilocks_grid_summary_from_synthetic_rows() -> None:
    specs, runs = synthetic_grid()
    rows = [reproduce.summarise(label, label_runs) for label, label_runs in runs.items()]
    grid = goldilocks.grid_summary(specs, rows)
    assert [(c["head_layers"], c["density"]) for c in grid] == [(1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
    by_label = {row["label"]: row for row in rows}
    for cell in grid:
        row = by_label[f"h{cell['head_layers']}_d{cell['density']:g}"]
        assert cell == {
            "head_layers": cell["head_layers"],
            "density": cell["density"],
            "ensemble_ppl": row["ensemble_ppl"],
            "disagreement": row["disagreement"],
            "n": 2,
        }
        losses = [4 + cell["head_layers"] / 10 - cell["density"] / 5 + s / 20 for s in (0, 1)]
        assert cell["ensemble_ppl"]["mean"] == pytest.approx(sum(math.exp(loss) for loss in losses) / 2)
        assert cell["ensemble_ppl"]["std"] > 0
    study = Path("study")
    reference = goldilocks.Reference(study, {"dense": rows[0], "full_ensemble": rows[1]})
    table = goldilocks.grid_markdown(grid, reference).splitlines()
    assert "mean over 2 seeds" in table[2]
    assert table[4:6] == ["| head layers | density 0.5 | density 1 (TreeNet) |", "| --- | --- | --- |"]
    h1_half, h1_full = (by_label[label] for label in ("h1_d0.5", "h1_d1"))
    assert table[6] == (
        f"| 1 | {h1_half['ensemble_ppl']['mean']:.2f} (0.100) | {h1_full['ensemble_ppl']['mean']:.2f} (0.100) |"
    )
    assert table[-1].startswith(f"Reference from `{study}`: dense {rows[0]['ensemble_ppl']['mean']:.2f} ± ")
    assert "(2 seeds)" in table[-1]


def test_the_sweep_adds_the_grid_and_the_reference_to_its_outputs(tmp_path, monkeypatch) -> None:
    """The sweep's report after run_all, without training: the grid in results.md / results.json, goldilocks.png, and
    the reference rows as the reference study has them."""
    specs, runs = synthetic_grid()
    monkeypatch.setattr(reproduce, "train_all", lambda *a, **k: None)
    monkeypatch.setattr(reproduce, "collect", lambda *a, **k: runs)
    reference = tmp_path / "reference"
    reference_study(reference)
    flags = tiny_flags(tmp_path) + ["--head-layers", "1,2", "--density", "0.5,1", "--seeds", "0,1"]
    assert sweep.main(flags + ["--reference", str(reference)]) == 0
    out = tmp_path / "out"
    points = {spec.label: (spec.head_layers, spec.density) for spec in specs}
    rows = [reproduce.summarise(label, label_runs) for label, label_runs in runs.items()]
    results = check_goldilocks(out, rows, points)
    studied = {row["label"]: row for row in json.loads((reference / "results.json").read_text())["rows"]}
    assert results["reference"] == {
        "study": str(reference),
        **{label: {"ensemble_ppl": studied[label]["ensemble_ppl"], "seeds": 2} for label in studied},
    }
    assert results["rows"] == rows  # reproduce's own outputs are as they were
    assert f"Reference from `{reference}`" in (out / "results.md").read_text()


def test_per_method_rates_take_each_rows_best_first_seed_run(tmp_path, monkeypatch) -> None:
    args = _parse(tiny_flags(tmp_path) + ["--lr-candidates", "1e-3,2e-3", "--seeds", "0,1"])
    losses = {
        "dense_lr0.001_s0": 5.0,
        "dense_lr0.002_s0": 4.0,
        "neurotrails_lr0.001_s0": 4.5,
        "neurotrails_lr0.002_s0": 4.6,
    }
    trained = []
    monkeypatch.setattr(reproduce, "train_all", lambda specs, *rest: trained.extend(s.name for s in specs))
    monkeypatch.setattr(reproduce, "outcome", lambda spec, *rest: {"ensemble_loss": losses[spec.name]})
    args.out.mkdir(parents=True)  # run_all makes it before the sweep
    specs = reproduce.method_specs(["dense", "neurotrails"], [0, 1], None, 0.9)
    chosen, rates, table = reproduce.per_method_learning_rates(specs, args, tmp_path / "runs")
    assert sorted(trained) == sorted(losses)  # the sweep: each row's first seed at every candidate
    assert rates == {"dense": 2e-3, "neurotrails": 1e-3}
    assert {s.name for s in chosen} == {
        "dense_lr0.002_s0",
        "dense_lr0.002_s1",
        "neurotrails_lr0.001_s0",
        "neurotrails_lr0.001_s1",
    }
    assert "**54.60**" in table and (args.out / "lr_sweep.md").read_text().count("| neurotrails |") == 1


def test_lr_from_trains_each_row_at_the_reference_rate_and_reuses_its_identical_runs(tmp_path, caplog):
    """--lr-from: a variant of a per-method study (one difference reverted) keeps that study's rates, takes over
    the runs it recorded with the very same recipe, and trains the ones the variant changes."""
    caplog.set_level(logging.INFO, logger=reproduce.log.name)
    flags = tiny_flags(tmp_path)
    del flags[flags.index("--lr") : flags.index("--lr") + 2]
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "results.json").write_text(json.dumps({"lr": {"dense": 5e-3, "neurotrails": 1e-3}}))
    first = tmp_path / "first"
    assert reproduce.main(flags + ["--methods", "dense", "--lr-from", str(reference), "--out", str(first)]) == 0
    written = json.loads((first / "results.json").read_text())
    assert written["lr"] == {"dense": 5e-3}
    assert (first / "records" / "dense_lr0.005_s0.json").is_file()
    assert "from " + str(reference) in (first / "results.md").read_text()
    caplog.clear()
    same = tmp_path / "same"
    assert reproduce.main(flags + ["--methods", "dense", "--lr-from", str(first), "--out", str(same)]) == 0
    assert f"dense_lr0.005_s0: the same run is recorded in {first}" in caplog.text
    assert not (same / "runs" / "dense_lr0.005_s0").exists()
    assert (same / "records" / "dense_lr0.005_s0.json").read_bytes() == (
        first / "records" / "dense_lr0.005_s0.json"
    ).read_bytes()
    assert json.loads((same / "results.json").read_text())["rows"] == written["rows"]
    caplog.clear()
    changed = tmp_path / "changed"
    flags += ["--setup", "paper", "--out", str(changed)]
    assert reproduce.main(flags + ["--methods", "dense", "--lr-from", str(first)]) == 0
    assert "reusing" not in caplog.text  # the paper's init changes the dense run: trained again, at 5e-3
    assert yaml.safe_load((changed / "runs" / "dense_lr0.005_s0.yaml").read_text())["optim"]["lr"] == 5e-3


def test_reuse_takes_over_a_run_another_study_recorded_under_its_own_name(tmp_path, caplog):
    """--reuse: a study names its runs its own way (the sweep by cell); a record with the very same recipe under
    another run name is taken over, with this run's name and where it came from; a changed recipe is trained."""
    caplog.set_level(logging.INFO, logger=reproduce.log.name)
    flags = tiny_flags(tmp_path) + ["--methods", "dense"]
    flags[flags.index("--lr") + 1] = "5e-3"
    other = tmp_path / "other"
    assert reproduce.main(flags + ["--out", str(other)]) == 0
    # As another study would have named it.
    record = json.loads((other / "records" / "dense_s0.json").read_text())
    record["recipe"]["run"]["name"] = "h6_d1_s0"
    (other / "records" / "dense_s0.json").unlink()
    (other / "records" / "h6_d1_s0.json").write_text(json.dumps(record))
    caplog.clear()
    mine = tmp_path / "mine"
    assert reproduce.main(flags + ["--reuse", str(other), "--out", str(mine)]) == 0
    assert "dense_s0: the same run is recorded in" in caplog.text and "h6_d1_s0.json" in caplog.text
    assert not (mine / "runs" / "dense_s0").exists()
    taken = json.loads((mine / "records" / "dense_s0.json").read_text())
    assert taken["measured"] == record["measured"] and taken["recipe"]["run"]["name"] == "dense_s0"
    assert taken["reused_from"].endswith("h6_d1_s0.json")
    caplog.clear()
    changed = tmp_path / "changed"
    flags[flags.index("--lr") + 1] = "4e-3"
    assert reproduce.main(flags + ["--reuse", str(other), "--out", str(changed)]) == 0
    assert "reusing" not in caplog.text and (changed / "runs" / "dense_s0").is_dir()
    caplog.clear()
    assert reproduce.main(flags + ["--reuse", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "--reuse: ['" in caplog.text and "nowhere'] hold no records/ folder" in caplog.text


@pytest.mark.parametrize(
    "results, flags, message",
    [
        ({"lr": {"dense": 5e-3}}, ["--lr", "1e-2"], "pass it without --lr 1e-2"),
        ({"lr": {"dense": 5e-3}}, ["--methods", "dense,treenet"], "has no rate for ['treenet']"),
        ({"lr": 2e-3}, [], "not a --lr per-method study's"),
        (None, [], "is not a finished study's results.json"),
    ],
)
def test_lr_from_refuses_what_it_cannot_follow(tmp_path, caplog, results, flags, message):
    reference = tmp_path / "reference"
    reference.mkdir()
    if results is not None:
        (reference / "results.json").write_text(json.dumps(results))
    defaults = ["--methods", "dense", "--out", str(tmp_path / "out"), "--lr-from", str(reference)]
    assert reproduce.main(defaults + flags) == 2
    assert message in caplog.text
    assert not (tmp_path / "out" / "runs").exists()  # refused before anything trained


def test_a_run_stopped_part_way_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    args = _parse(tiny_flags(tmp_path))
    spec = reproduce.RunSpec("dense", "dense", None, 1.0, 0)
    runs = tmp_path / "runs"
    (runs / spec.name).mkdir(parents=True)
    save_recipe(reproduce.build_recipe(spec, args, runs / spec.name, 1e-2, 4), runs / f"{spec.name}.yaml")
    (runs / f"{spec.name}.log").write_text("the first part\n")
    commands = []
    monkeypatch.setattr(reproduce.RunDir, "latest", lambda self: reproduce.argparse.Namespace(step=2))
    monkeypatch.setattr(reproduce.subprocess, "run", lambda command, **kw: commands.append(command) or _Done())
    recorded = []
    monkeypatch.setattr(reproduce, "write_record", lambda spec, *rest: recorded.append(spec.name))
    reproduce.train_run(spec, args, 1e-2, 4, runs)
    assert recorded == [spec.name]  # a finished run leaves its record
    assert commands[0][-2:] == ["--resume", "latest"]
    assert (runs / f"{spec.name}.log").read_text().startswith("the first part")  # appended, not replaced
    assert (runs / spec.name).is_dir()


class _Done:
    returncode = 0


def _parse(flags: list[str]):
    parser = reproduce.argparse.ArgumentParser()
    reproduce.add_common_arguments(parser)
    return parser.parse_known_args(flags)[0]  # the study's own flags (--methods, ...) are not common ones


# What the study's untyped build (before December 2026: a dict written with yaml.safe_dump) recorded for
# `nt-llm reproduce --setup paper --steps 300 --seeds 0,1 --lr 2e-3`, NeuroTrails at density 0.9, seed 1: written
# out literally, so that the typed build is held to the records and run folders that studies keep.
UNTYPED_PAPER_NT_S1 = {
    "run": {"name": "neurotrails_s1", "seed": 1},
    "model": {"size": "cpu-4m", "method": "neurotrails", "embedding_init_std": 0.6324555320336759, "ensemble_size": 3},
    "sparsity": {
        "density": 0.9,
        "distribution": "erk",
        "prune": "soft_magnitude",
        "temperature": 3.0,
        "growth": "gradient",
        "prune_rate": 0.5,
        "prune_rate_decay": "cosine",
        "update_frequency": 25,
        "seed": 1,
        "include": [
            "heads.*.layers.*.self_attn.*_proj.weight",
            "heads.*.layers.*.mlp.*_proj.weight",
            "heads.*.lm_head.weight",
            "backbone.*.self_attn.*_proj.weight",
            "backbone.*.mlp.*_proj.weight",
            "*embed_tokens.weight",
        ],
    },
    "data": {
        "source": "embedded",
        "data_dir": "data",
        "tokenizer": "embedded-4k",
        "seq_len": 256,
        "mode": "pack",
        "batch_size": 8,
        "shuffle_buffer": 10000,
        "seed": 1,
        "validation_tokens": 49152,
    },
    "optim": {
        "lr": 0.002,
        "weight_decay": 0.0,
        "max_steps": 333,
        "warmup_steps": 33,
        "min_lr_ratio": 0.1,
        "total_batch_size": 8,
        "grad_clip": 0.0,
        "precision": "auto",
    },
    "eval": {"every": 60, "max_batches": None},
    "checkpoint": {"every": 60, "keep_last": 1},
    "logging": {"every": 12, "progress_bar": False, "trackers": ["none"]},
}
# And for `nt-llm ablate --steps 150 --lr 2e-3 --seeds 0 --ensemble-size 2`, a variant of its own at lr 4e-3 with 2
# head layers, density 0.5: `--variant fast:sparsity.update_frequency=5,sparsity.prune_rate=0.2`.
UNTYPED_VARIANT = {
    "run": {"name": "nt_fast_lr0.004_s0", "seed": 0},
    "model": {"size": "cpu-4m", "method": "neurotrails", "ensemble_size": 2, "head_layers": 2},
    "sparsity": {
        "density": 0.5,
        "distribution": "erk",
        "prune": "soft_magnitude",
        "temperature": 3.0,
        "growth": "gradient",
        "prune_rate": 0.2,
        "prune_rate_decay": "cosine",
        "update_frequency": 5,
        "seed": 0,
    },
    "data": {**UNTYPED_PAPER_NT_S1["data"], "seed": 0},
    "optim": {**UNTYPED_PAPER_NT_S1["optim"], "lr": 0.004, "max_steps": 150, "warmup_steps": 15},
    "eval": {"every": 30, "max_batches": None},
    "checkpoint": {"every": 30, "keep_last": 1},
    "logging": {"every": 6, "progress_bar": False, "trackers": ["none"]},
}


def test_records_and_run_folders_of_the_untyped_recipes_still_match(tmp_path, monkeypatch, caplog) -> None:
    """A record (and a run folder's recipe file) written by the study's untyped build stands for the run the typed
    build makes from the same flags: they resolve to the same recipe."""
    caplog.set_level(logging.INFO, logger=reproduce.log.name)
    out = tmp_path / "out"
    args = _parse(["--setup", "paper", "--steps", "300", "--seeds", "0,1", "--lr", "2e-3", "--out", str(out)])
    spec = next(s for s in reproduce.method_specs(["neurotrails"], [0, 1], None, 0.9) if s.seed == 1)
    assert spec.name == "neurotrails_s1"
    typed = reproduce._recorded_recipe(spec, args, 2e-3, 300)
    assert reproduce._resolved(typed) == reproduce._resolved(UNTYPED_PAPER_NT_S1)

    # The record, as the untyped study wrote it, is this run's.
    measured = {"ensemble_loss": 4.2}
    (out / "records").mkdir(parents=True)
    (out / "records" / "neurotrails_s1.json").write_text(
        json.dumps({"recipe": UNTYPED_PAPER_NT_S1, "measured": measured})
    )
    assert reproduce.recorded(spec, args, 2e-3, 300) == measured
    assert reproduce.recorded(spec, args, 4e-3, 300) is None  # and not another learning rate's

    # A finished run folder whose recipe file the untyped study wrote: no conflict, reused rather than retrained.
    runs = tmp_path / "runs"
    runs.mkdir()
    written = json.loads(json.dumps(UNTYPED_PAPER_NT_S1))
    written["run"]["output_dir"] = str(runs / spec.name)
    (runs / f"{spec.name}.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    monkeypatch.setattr(reproduce.RunDir, "latest", lambda self: reproduce.argparse.Namespace(step=333))
    monkeypatch.setattr(reproduce.subprocess, "run", lambda *a, **kw: pytest.fail("the run was trained again"))
    monkeypatch.setattr(reproduce, "write_record", lambda *a: None)
    args.rerun = False
    (out / "records" / "neurotrails_s1.json").unlink()
    reproduce.check_no_conflicts([spec], args, 2e-3, 300, runs)
    reproduce.train_run(spec, args, 2e-3, 300, runs)
    assert "neurotrails_s1: finished earlier, reusing" in caplog.text

    # An ablation's own variant, its overrides now read by the recipe module's parser.
    args = _parse(["--steps", "150", "--lr", "2e-3", "--seeds", "0", "--ensemble-size", "2", "--out", str(out)])
    name, overrides = ablate.parse_variant("fast:sparsity.update_frequency=5,sparsity.prune_rate=0.2")
    variant = reproduce.RunSpec(f"nt_{name}", "neurotrails", 2, 0.5, 0, overrides=overrides, lr=4e-3)
    recipe = reproduce._recorded_recipe(variant, args, None, 150)
    assert reproduce._resolved(recipe) == reproduce._resolved(UNTYPED_VARIANT)


def test_the_paper_scope_fits_heads_of_the_whole_depth(tmp_path) -> None:
    """6-block heads at cpu-4m leave no backbone: the paper's scope is then every 2-D weight there is (its backbone
    patterns would match nothing, which DST refuses), and it selects exactly the model's 2-D weights."""
    args = _parse(tiny_flags(tmp_path) + ["--setup", "paper"])
    depth = load_size(args.size)["num_hidden_layers"]
    for head_layers, backbone in ((depth, False), (depth - 1, True)):
        recipe = reproduce.build_recipe(
            reproduce.RunSpec("nt", "neurotrails", head_layers, 0.5, 0), args, tmp_path, 2e-3, 4
        )
        assert any(p.startswith("backbone.") for p in recipe.sparsity.include) == backbone
        model = NeuroTrailsForCausalLM(build_config(args.size, "neurotrails", head_layers=head_layers))
        weights = {n for n, p in model.named_parameters() if p.dim() == 2}
        assert set(select_parameters(sorted(weights), recipe.sparsity.include, ())) == weights
    assert recipe.sparsity.include == NEUROTRAILS_ALL


def test_a_run_recipe_is_written_by_the_recipe_module_and_loads_back(tmp_path) -> None:
    args = _parse(tiny_flags(tmp_path) + ["--setup", "paper"])
    (spec,) = ablate.variant_specs({"all_sparse": ablate.VARIANTS["all_sparse"]}, [0], 0.5, baselines=False)
    recipe = reproduce.build_recipe(spec, args, tmp_path / "run", 1e-2, 4)
    assert recipe.sparsity.include == NEUROTRAILS_ALL
    save_recipe(recipe, tmp_path / "run.yaml")
    assert load_recipe(tmp_path / "run.yaml") == recipe
    assert reproduce._same_recipe(tmp_path / "run.yaml", recipe)
    assert not reproduce._same_recipe(
        tmp_path / "run.yaml", reproduce.build_recipe(spec, args, tmp_path / "run", 1e-3, 4)
    )


@pytest.mark.parametrize("variant", sorted(ablate.VARIANTS))
def test_every_named_variant_builds_a_recipe(tmp_path, variant: str) -> None:
    args = _parse(tiny_flags(tmp_path))
    (spec,) = ablate.variant_specs({variant: ablate.VARIANTS[variant]}, [0], 0.5, baselines=False)
    base = reproduce.build_recipe(reproduce.RunSpec("nt", "neurotrails", None, 0.5, 0), args, tmp_path, 1e-2, 4)
    changed = reproduce.build_recipe(spec, args, tmp_path, 1e-2, 4)
    assert changed.sparsity != base.sparsity
    assert dataclasses.replace(changed, sparsity=base.sparsity, run=base.run) == base  # only the sparsity moves


def test_an_override_of_a_section_the_run_lacks_is_named(tmp_path) -> None:
    args = _parse(tiny_flags(tmp_path))
    spec = reproduce.RunSpec("dense_x", "dense", None, 1.0, 0, overrides=("sparsity.prune_rate=0.2",))
    with pytest.raises(ValueError, match="dense_x: override sparsity.prune_rate=0.2 targets section 'sparsity'"):
        reproduce.build_recipe(spec, args, tmp_path, 1e-2, 4)
    with pytest.raises(argparse.ArgumentTypeError, match="--variant x: override 'bogus.k=1': unknown section 'bogus'"):
        ablate.parse_variant("x:bogus.k=1")
    assert ablate.parse_variant('x:sparsity.include=["a.*", "*b"], optim.lr=1e-3') == (
        "x",
        ('sparsity.include=["a.*", "*b"]', "optim.lr=1e-3"),
    )
