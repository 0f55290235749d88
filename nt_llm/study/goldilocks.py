"""The sweep's "Goldilocks" outputs: its head depth x density grid as a table, a figure and JSON, and the reference
rows (dense model, full ensemble) that ``--reference`` takes from a finished ``nt-llm reproduce`` study.

``goldilocks.png``: left, the ensemble's validation perplexity against head layers, one line per density (mean over
seeds, ± std with several), the reference rows as dashed lines; right, the top-1 disagreement between heads against
head layers. The paper's finding is a middle ground: heads deep and sparse enough to disagree, not so much that each
head alone is worse.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nt_llm.study.reproduce import COMPARED_WITH, RunSpec

# The reference study's rows drawn as lines: the baselines every reproduce row is compared with.
REFERENCE_ROWS = COMPARED_WITH


@dataclass(frozen=True)
class Reference:
    """The dense and full-ensemble rows of a finished ``nt-llm reproduce`` study (``--reference``)."""

    study: Path
    rows: dict[str, dict[str, Any]]  # label -> that study's row (reproduce.summarise)

    def to_dict(self) -> dict[str, Any]:
        """results.json's "reference": the study and each row's ensemble perplexity with its seed count."""
        return {
            "study": str(self.study),
            **{label: {"ensemble_ppl": row["ensemble_ppl"], "seeds": row["seeds"]} for label, row in self.rows.items()},
        }


def load_reference(study: Path, args: argparse.Namespace) -> Reference:
    """``--reference``: the dense and full-ensemble rows of ``study``/results.json. Refused unless that study trained
    what this sweep trains, the same token budget and setup (ValueError naming the field), or when there is no such
    file to read (FileNotFoundError)."""
    path = study / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        rows = {row["label"]: row for row in results["rows"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise FileNotFoundError(f"--reference: {path} is not a finished study's results.json ({err})") from err
    missing = [label for label in REFERENCE_ROWS if label not in rows]
    if missing:
        raise ValueError(
            f"--reference: {path} has no {' or '.join(missing)} row (it has {sorted(rows)}); "
            f"run that study with --methods {','.join(REFERENCE_ROWS)}"
        )
    budget = args.steps * args.batch * args.seq_len
    if rows["dense"].get("tokens") != budget:
        raise ValueError(
            f"--reference: {path}'s dense row trained {rows['dense'].get('tokens')} tokens, this sweep trains "
            f"{budget} (--steps {args.steps} x --batch {args.batch} x --seq-len {args.seq_len})"
        )
    # A study written before --setup / --heads-init existed trained nt_llm's setup with independent heads.
    theirs = (results.get("setup", "nt_llm"), sorted(results.get("reverted", [])))
    if theirs != (args.setup, sorted(args.revert)):
        raise ValueError(
            f"--reference: {path} trained setup {theirs[0]} with reverted {theirs[1]}, this sweep --setup "
            f"{args.setup} with --revert {sorted(args.revert)}"
        )
    heads_init = results.get("heads_init", "independent")
    if heads_init != args.heads_init:
        raise ValueError(
            f"--reference: {path} trained heads_init {heads_init}, this sweep --heads-init {args.heads_init}"
        )
    return Reference(study, {label: rows[label] for label in REFERENCE_ROWS})


def grid_summary(specs: list[RunSpec], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One cell per (head depth, density), ordered by depth then density: the row's ensemble perplexity and
    disagreement (mean and std over seeds) and its seed count. The grid point comes from the run specs."""
    by_label = {row["label"]: row for row in rows}
    points = {spec.label: (spec.head_layers, spec.density) for spec in specs}  # the seeds of a point share its label
    cells = [
        {
            "head_layers": layers,
            "density": density,
            "ensemble_ppl": by_label[label]["ensemble_ppl"],
            "disagreement": by_label[label]["disagreement"],
            "n": by_label[label]["seeds"],
        }
        for label, (layers, density) in points.items()
    ]
    return sorted(cells, key=lambda cell: (cell["head_layers"], cell["density"]))


def density_label(density: float) -> str:
    """A density as the table and figure name it: density 1 is TreeNet (dense heads) at that depth."""
    return f"density {density:g}" + (" (TreeNet)" if density == 1 else "")


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n > 1 else ''}"


def _ppl(spread: dict[str, float], n: int) -> str:
    return f"{spread['mean']:.2f}" + (f" ± {spread['std']:.2f}" if n > 1 else "")


def grid_markdown(grid: list[dict[str, Any]], reference: Reference | None) -> str:
    """results.md's grid section: a row per head depth, a column per density, "ppl (disagreement)" in each cell."""
    depths = sorted({cell["head_layers"] for cell in grid})
    densities = sorted({cell["density"] for cell in grid})
    cells = {(cell["head_layers"], cell["density"]): cell for cell in grid}
    seeds = grid[0]["n"]  # every grid point trains the same seeds (sweep.grid_specs)
    lines = [
        "## Goldilocks grid",
        "",
        f"Ensemble validation perplexity (top-1 disagreement between heads), mean over {_seeds(seeds)}; "
        "the figure is goldilocks.png.",
        "",
        "| head layers | " + " | ".join(density_label(d) for d in densities) + " |",
        "| --- |" + " --- |" * len(densities),
    ]
    for depth in depths:
        row = [cells[depth, d] for d in densities]
        lines.append(
            f"| {depth} | "
            + " | ".join(f"{c['ensemble_ppl']['mean']:.2f} ({c['disagreement']['mean']:.3f})" for c in row)
            + " |"
        )
    if reference is not None:
        drawn = ", ".join(
            f"{label.replace('_', ' ')} {_ppl(row['ensemble_ppl'], row['seeds'])} ({_seeds(row['seeds'])})"
            for label, row in reference.rows.items()
        )
        lines += ["", f"Reference from `{reference.study}`: {drawn}."]
    return "\n".join(lines)


def plot_goldilocks(grid: list[dict[str, Any]], reference: Reference | None, path: Path) -> None:
    """goldilocks.png: perplexity (left) and disagreement (right) against head layers, a line per density."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    fig, (ppl_ax, disagreement_ax) = plt.subplots(1, 2, figsize=(12.8, 4.2))
    densities = sorted({cell["density"] for cell in grid})
    for index, density in enumerate(densities):
        line = [cell for cell in grid if cell["density"] == density]  # ordered by depth (grid_summary)
        depths = [cell["head_layers"] for cell in line]
        several = any(cell["n"] > 1 for cell in line)  # one seed has no spread: the points only
        for ax, key in ((ppl_ax, "ensemble_ppl"), (disagreement_ax, "disagreement")):
            ax.errorbar(
                depths,
                [cell[key]["mean"] for cell in line],
                yerr=[cell[key]["std"] for cell in line] if several else None,
                marker="o",
                capsize=3,
                color=f"C{index}",
                label=density_label(density),
            )
    if reference is not None:
        for label, color in zip(REFERENCE_ROWS, ("black", "gray"), strict=True):
            row = reference.rows[label]
            name = f"{label.replace('_', ' ')} ({_seeds(row['seeds'])})"
            ppl_ax.axhline(row["ensemble_ppl"]["mean"], color=color, linestyle="--", linewidth=1, label=name)
    depths = sorted({cell["head_layers"] for cell in grid})
    for ax, ylabel in (
        (ppl_ax, "validation perplexity of the ensemble"),
        (disagreement_ax, "top-1 disagreement between heads"),
    ):
        ax.set_xticks(depths)
        ax.set_xlabel("head layers (blocks in each head)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    seeds = grid[0]["n"]
    fig.suptitle(f"Head depth x density, mean over {_seeds(seeds)}" + (" ± std" if seeds > 1 else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_goldilocks(out: Path, grid: list[dict[str, Any]], reference: Reference | None) -> None:
    """Add the grid to the study's outputs in ``out``: its table to results.md, "grid" (and "reference") to
    results.json, and goldilocks.png."""
    with open(out / "results.md", "a", encoding="utf-8") as handle:
        handle.write("\n" + grid_markdown(grid, reference) + "\n")
    results_file = out / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8"))
    results["grid"] = grid
    if reference is not None:
        results["reference"] = reference.to_dict()
    results_file.write_text(json.dumps(results, indent=2), encoding="utf-8")
    plot_goldilocks(grid, reference, out / "goldilocks.png")
