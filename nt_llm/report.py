"""Compare finished runs: the last evaluation of each, as one markdown table.

    python -m nt_llm.report runs/neurotrails_tiny runs/dense_tiny
"""

import argparse
import logging
import sys
from pathlib import Path

from nt_llm.train.metrics import read_metrics

log = logging.getLogger("nt_llm.report")


def last_eval(run_dir: Path) -> dict:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: is it a training run folder?")
    evals = [e for e in read_metrics(metrics) if e["event"] == "eval"]
    if not evals:
        raise ValueError(f"{metrics} holds no evaluation yet")
    return evals[-1]


def comparison_table(runs: list[Path]) -> str:
    lines = [
        "| run | step | tokens | ensemble ppl | head ppl | ensemble gain | disagreement | density |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        e = last_eval(run)
        heads = sorted(k for k in e if k.startswith("head") and k.endswith("_ppl"))
        head_ppl = ", ".join(f"{e[k]:.2f}" for k in heads)
        lines.append(
            f"| {run.name} | {e['step']} | {e['tokens']} | {e['ensemble_ppl']:.2f} | {head_ppl} | "
            f"{e['ensemble_gain']:.4f} | {_optional(e.get('disagreement'))} | {e.get('density', 1.0):.3f} |"
        )
    return "\n".join(lines)


def _optional(value: float | None) -> str:
    """A single model has no head disagreement: a dash, not NaN."""
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with a metrics.jsonl)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        log.info("%s", comparison_table(args.runs))
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
