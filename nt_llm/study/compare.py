"""Rows of finished studies side by side, compared seed by seed (``nt-llm compare``).

A study's paired intervals cover its own rows. The control that tells the method from the tokens often lives in
another study (dense trained as many steps as a sparse run trains under the paper's 1/density schedule), so this
puts a row of one study beside rows of others and pairs them by seed, with the same statistics as the studies'
own tables (``nt_llm.stats``). A perplexity is only comparable on the same validation tokens: rows whose runs
evaluated on other data, another tokenizer or another sequence length are refused, by name.

    nt-llm compare results/gpu_paper_setup_60m:neurotrails results/gpu_paper_setup_60m_dense556:dense=dense_556
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nt_llm.stats import paired_difference
from nt_llm.train.recipe import RecipeError, resolved_dict

log = logging.getLogger(__name__)

# Data fields that change the training order but not the validation tokens: rows may differ in these.
ORDER_ONLY_FIELDS = ("seed", "batch_size", "shuffle_buffer", "tokenize_batch", "prefetch", "validation_batch_size")


@dataclass(frozen=True)
class Row:
    """One row of a finished study: its runs by seed, and the recipes recorded for them (None where absent)."""

    name: str
    study: Path
    label: str
    runs: dict[int, dict[str, Any]]
    recipes: dict[int, dict[str, Any] | None]


def parse_spec(text: str) -> tuple[Path, str, str]:
    """``DIR:LABEL[=NAME]`` -> (study folder, row label, display name; by default ``LABEL (DIR's name)``)."""
    study, sep, rest = text.rpartition(":")
    if not sep or not study or not rest:
        raise ValueError(f"a row is STUDY_DIR:LABEL[=NAME], got {text!r}")
    label, _, name = rest.partition("=")
    if not label:
        raise ValueError(f"a row is STUDY_DIR:LABEL[=NAME], got {text!r} (no label)")
    return Path(study), label, name or f"{label} ({Path(study).name})"


def load_row(study: Path, label: str, name: str) -> Row:
    """The row ``label`` of the study in ``study`` (its results.json), with each run's recorded recipe."""
    results_file = study / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{results_file}: no such file (a finished study's --out holds one)")
    runs = json.loads(results_file.read_text(encoding="utf-8")).get("runs", {})
    if label not in runs:
        raise ValueError(f"{study} has no row {label!r}; its rows: {', '.join(runs) or 'none'}")
    by_seed = {int(run["seed"]): run for run in runs[label]}
    recipes = {seed: _recorded_recipe(study, run) for seed, run in by_seed.items()}
    return Row(name=name, study=study, label=label, runs=by_seed, recipes=recipes)


def _recorded_recipe(study: Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe in ``records/<run name>.json`` (studies record every finished run there), or None; resolved as
    training reads it, so that a record written before a field with a default existed compares equal."""
    record = study / "records" / f"{Path(run['run_dir']).name}.json"
    if not record.is_file():
        return None
    recipe = json.loads(record.read_text(encoding="utf-8")).get("recipe")
    try:
        return resolved_dict(recipe)
    except RecipeError:
        return recipe  # compared as written: a recipe today's code refuses still names its data


def validation_key(recipe: dict[str, Any]) -> dict[str, Any]:
    """What decides a run's validation tokens: its data section without the fields that only order training."""
    data = dict(recipe.get("data") or {})
    for field in ORDER_ONLY_FIELDS:
        data.pop(field, None)
    return data


def check_comparable(rows: list[Row]) -> None:
    """Refuse rows that evaluated on other validation tokens; warn where a run's recipe was not recorded."""
    reference: tuple[str, dict[str, Any]] | None = None
    for row in rows:
        for seed, recipe in row.recipes.items():
            if recipe is None:
                log.warning("%s seed %d: no recorded recipe, so its validation data is not checked", row.name, seed)
                continue
            key = validation_key(recipe)
            if reference is None:
                reference = (f"{row.name} seed {seed}", key)
            elif key != reference[1]:
                differ = sorted(k for k in set(key) | set(reference[1]) if key.get(k) != reference[1].get(k))
                raise ValueError(
                    f"{row.name} seed {seed} evaluated on other validation data than {reference[0]} "
                    f"(data.{', data.'.join(differ)} differ): their perplexities are not comparable"
                )


def _steps(row: Row) -> str:
    steps = sorted({r["optim"]["max_steps"] for r in row.recipes.values() if r is not None})
    return "/".join(str(s) for s in steps) or "-"


def summary_table(rows: list[Row]) -> list[str]:
    """One line per row: seeds, steps, tokens, ensemble perplexity (mean ± std over seeds), per seed, size, cost."""
    lines = [
        "| row | study | seeds | steps | tokens | ensemble ppl | per seed | nonzero params (M) | train PFLOPs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        seeds = sorted(row.runs)
        ppl = [row.runs[s]["ensemble_ppl"] for s in seeds]
        spread = f" ± {statistics.stdev(ppl):.2f}" if len(ppl) > 1 else ""
        tokens = "/".join(f"{t:,}" for t in sorted({row.runs[s]["tokens"] for s in seeds}))
        first = row.runs[seeds[0]]
        lines.append(
            f"| {row.name} | {row.study} | {','.join(map(str, seeds))} | {_steps(row)} | {tokens} | "
            f"{statistics.fmean(ppl):.2f}{spread} | {' / '.join(f'{p:.2f}' for p in ppl)} | "
            f"{first['params_nonzero'] / 1e6:.2f} | {first['train_flops'] / 1e15:.3f} |"
        )
    return lines


def paired_table(rows: list[Row]) -> list[str]:
    """Δ ensemble ppl of each row (line) against each other row (column), paired by seed, with its 95% interval."""
    header = "| Δ ensemble ppl, row - column (paired by seed, 95% CI) | " + " | ".join(r.name for r in rows) + " |"
    lines = [header, "| --- |" + " --- |" * len(rows)]
    for row in rows:
        cells = []
        for other in rows:
            shared = set(row.runs) & set(other.runs)
            if other is row or not shared:
                cells.append("-")
                continue
            diff = paired_difference(
                {s: row.runs[s]["ensemble_ppl"] for s in shared}, {s: other.runs[s]["ensemble_ppl"] for s in shared}
            )
            cells.append(diff.text())
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


def compare(specs: list[str]) -> str:
    """The markdown of ``nt-llm compare``: the rows' summary, then every pair's paired difference."""
    if len(specs) < 2:
        raise ValueError("compare needs at least two rows (STUDY_DIR:LABEL[=NAME] each)")
    rows = [load_row(*parse_spec(spec)) for spec in specs]
    names = [row.name for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"two rows share a name ({', '.join(names)}): give them names with =NAME")
    check_comparable(rows)
    return "\n".join(summary_table(rows) + [""] + paired_table(rows))
