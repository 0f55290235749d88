"""Compare finished runs: the last evaluation of each, as one markdown table, and their validation curves.

The command is ``nt-llm report runs/neurotrails_cpu runs/dense_cpu [--plot out/demo/loss.png] > table.md``
(nt_llm.cli.report).
"""

from pathlib import Path

from nt_llm.checkpoint import RunDir

PLOT_EXTRA = "nt_llm[plot]"


class MissingExtraError(RuntimeError):
    """An optional dependency a flag needs is not installed; the message names the extra that installs it."""


def comparison_table(runs: list[Path]) -> str:
    """One row per run; the last run is the baseline the others' perplexity is compared with."""
    baseline = RunDir(runs[-1]).final_eval()["ensemble_ppl"]
    lines = [
        f"| run | step | tokens | ensemble ppl | vs {runs[-1].name} | head ppl | ensemble gain | disagreement | "
        "density |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        e = RunDir(run).final_eval()
        heads = sorted(k for k in e if k.startswith("head") and k.endswith("_ppl"))
        head_ppl = ", ".join(f"{e[k]:.2f}" for k in heads)
        change = f"{100 * (e['ensemble_ppl'] / baseline - 1):+.1f}%"
        lines.append(
            f"| {run.name} | {e['step']} | {e['tokens']} | {e['ensemble_ppl']:.2f} | {change} | {head_ppl} | "
            f"{e['ensemble_gain']:.4f} | {_optional(e.get('disagreement'))} | {e.get('density', 1.0):.3f} |"
        )
    return "\n".join(lines)


def plot_validation_loss(runs: list[Path], out: Path) -> Path:
    """Validation loss of the averaged logits (and, dotted, of the best head) over training tokens."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for run in runs:
        evals = RunDir(run).evaluations()
        tokens = [e["tokens"] for e in evals]
        (line,) = ax.plot(tokens, [e["ensemble_loss"] for e in evals], marker="o", markersize=3, label=run.name)
        if "head1_loss" in evals[0]:
            best_head = [min(v for k, v in e.items() if k.startswith("head") and k.endswith("_loss")) for e in evals]
            ax.plot(tokens, best_head, linestyle=":", color=line.get_color(), label=f"{run.name}, best head")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def pyplot():
    """matplotlib's pyplot on the file-only backend, or a MissingExtraError naming the extra that installs it."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on servers
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise MissingExtraError(f"--plot needs matplotlib, which is not installed: pip install '{PLOT_EXTRA}'") from err
    return plt


def _optional(value: float | None) -> str:
    """A single model has no head disagreement: a dash, not NaN."""
    return "-" if value is None else f"{value:.4f}"
