"""Small-scale reproduction of the paper's comparison: single dense model, TreeNet, NeuroTrails, full ensemble.

Each method trains in its own process (``pretrain.py``, as a user would run it) with the same data, token
budget and seed, then the script writes into ``--out``:
- ``results.md`` / ``results.json``: validation perplexity (ensemble and per head), parameters (total and
  nonzero), training FLOPs, inference FLOPs per token, head disagreement (mean and spread over seeds);
- ``loss.png``: validation loss over training tokens; ``disagreement.png``: head disagreement over tokens.
FLOPs follow ``nt_llm.flops`` (linear layers counted by their nonzero weights, so sparsity counts, plus
attention over the training context).

    python eval/reproduce.py      # 9m, embedded corpus, one seed, 50 steps x 8 x 128 tokens per method (on the
                                  # shared 2-core CPU at load 5-7: dense 2 min, TreeNet 14, NeuroTrails 33 wall)
    python eval/reproduce.py --size 20m --steps 2000 --seeds 0,1,2 --out out/repro_20m
    python eval/reproduce.py --data recipes/data/c4_paper.yaml --size 350m ...   # the paper's C4 recipe
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
METHODS = ("dense", "treenet", "neurotrails", "full_ensemble")
log = logging.getLogger("reproduce")


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method with its head split and density, and a seed."""

    label: str  # the row of the table this run contributes to (runs differing only in seed share it)
    method: str
    head_layers: int | None
    density: float  # 1.0 for methods without sparsity
    seed: int

    @property
    def name(self) -> str:
        return f"{self.label}_s{self.seed}"


def parse_list(text: str, kind: type) -> list:
    """``"1,2,3"`` -> ``[1, 2, 3]``; a clear error naming the bad item."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    try:
        return [kind(item) for item in items]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"bad item in {text!r}: {err}") from err


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared with ``sweep.py``: size, budget, data, output."""
    parser.add_argument("--size", default="9m", help="a name in recipes/models or a YAML of LlamaConfig fields")
    parser.add_argument("--ensemble-size", type=int, default=3)
    parser.add_argument("--seeds", type=lambda t: parse_list(t, int), default=[0])
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps (same for every method)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per optimizer step")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-batches", type=int, default=None, help="cap on validation batches per evaluation")
    parser.add_argument("--validation-tokens", type=int, default=8192)
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO / "recipes" / "data" / "embedded.yaml",
        help="a YAML of data-section fields (recipes/data/*.yaml); seq_len, batch and validation_tokens are set by flags",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each training process")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "reproduce")
    parser.add_argument("--rerun", action="store_true", help="retrain runs that already finished in --out")


def build_recipe(spec: RunSpec, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """The recipe of one run: everything but the method's shape is shared by all runs."""
    data = yaml.safe_load(args.data.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"--data {args.data} must hold a mapping of data-section fields")
    data.update(seq_len=args.seq_len, batch_size=args.batch, validation_tokens=args.validation_tokens)
    model: dict[str, Any] = {"size": args.size, "method": spec.method, "ensemble_size": args.ensemble_size}
    if spec.head_layers is not None:
        model["head_layers"] = spec.head_layers
    sparsity = None
    if spec.method == "neurotrails":
        # The paper's NeuroTrails setting (soft magnitude pruning, RigL growth, ERK); updates scale with the run.
        sparsity = {
            "density": spec.density,
            "distribution": "erk",
            "prune": "soft_magnitude",
            "temperature": 3.0,
            "growth": "gradient",
            "prune_rate": 0.5,
            "prune_rate_decay": "cosine",
            "update_frequency": max(1, args.steps // 10),
        }
    return {
        "run": {"name": spec.name, "output_dir": str(run_dir), "seed": spec.seed},
        "model": model,
        "sparsity": sparsity,
        "data": data,
        "optim": {
            "lr": args.lr,
            "max_steps": args.steps,
            "warmup_steps": max(1, args.steps // 10),
            "min_lr_ratio": 0.1,
            "total_batch_size": args.batch,
            "grad_clip": 1.0,
        },
        "eval": {"every": args.eval_every, "max_batches": args.eval_batches},
        "checkpoint": {"every": args.steps, "keep_last": 1},
        "logging": {"every": max(1, args.eval_every // 5), "progress_bar": False, "trackers": ["none"]},
    }


def train_run(spec: RunSpec, args: argparse.Namespace) -> Path:
    """Train one run in a fresh process (the accelerate state is per process); returns its folder. A run that
    finished earlier with the same recipe is reused; anything else in its folder is replaced."""
    run_dir = args.out / "runs" / spec.name
    recipe_path = run_dir.parent / f"{spec.name}.yaml"
    recipe_text = yaml.safe_dump(build_recipe(spec, args, run_dir), sort_keys=False)
    final = _final_checkpoint(run_dir)
    same_recipe = recipe_path.is_file() and recipe_path.read_text(encoding="utf-8") == recipe_text
    if not args.rerun and same_recipe and final is not None and final.parent.name == f"step_{args.steps}":
        log.info("%s: finished earlier, reusing %s", spec.name, run_dir)
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a partial run or another recipe: its metrics.jsonl would be appended to
    run_dir.mkdir(parents=True)
    recipe_path.write_text(recipe_text, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    command = [sys.executable, str(REPO / "pretrain.py"), "--recipe", str(recipe_path)]
    log.info("%s: %s", spec.name, " ".join(command))
    with open(run_dir.parent / f"{spec.name}.log", "w", encoding="utf-8") as out:
        result = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"training {spec.name} failed (exit {result.returncode}); see {out.name}")
    return run_dir


def _final_checkpoint(run_dir: Path) -> Path | None:
    steps = sorted(run_dir.glob("checkpoints/step_*/model"), key=lambda p: int(p.parent.name.split("_")[1]))
    return steps[-1] if steps else None


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def measure_run(run_dir: Path, seq_len: int) -> dict[str, Any]:
    """Final metrics, parameter counts and FLOPs of a finished run, from its metrics and final checkpoint."""
    import torch

    from nt_llm.flops import forward_flops_per_token, model_linear_weights, training_flops_per_token
    from nt_llm.modeling import NeuroTrailsForCausalLM

    events = read_events(run_dir)
    evals = [e for e in events if e["event"] == "eval"]
    if not evals:
        raise ValueError(f"{run_dir}/metrics.jsonl holds no evaluation")
    checkpoint = _final_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to count parameters from")
    model = NeuroTrailsForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    config = model.config
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    weights = model_linear_weights(model, nonzero=True)
    final = evals[-1]
    heads = sorted((k for k in final if k.startswith("head") and k.endswith("_ppl")), key=lambda k: int(k[4:-4]))
    # Training FLOPs use the final nonzero count: DST keeps the density constant over the run.
    return {
        "tokens": final["tokens"],
        "ensemble_ppl": final["ensemble_ppl"],
        "head_ppl": [final[k] for k in heads],
        "disagreement": final.get("disagreement", 0.0),
        "params_total": total,
        "params_nonzero": nonzero,
        "train_flops": training_flops_per_token(config, seq_len, weights) * final["tokens"],
        "inference_flops_per_token": forward_flops_per_token(config, seq_len, weights),
        "curve": [
            {
                "tokens": e["tokens"],
                "val_loss": math.log(e["ensemble_ppl"]),
                "disagreement": e.get("disagreement", 0.0),
            }
            for e in evals
        ],
    }


def summarise(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds of one row."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    n_heads = len(runs[0]["head_ppl"])
    return {
        "label": label,
        "seeds": len(runs),
        "ensemble_ppl": spread([r["ensemble_ppl"] for r in runs]),
        "head_ppl": [spread([r["head_ppl"][h] for r in runs]) for h in range(n_heads)],
        "disagreement": spread([r["disagreement"] for r in runs]),
        "params_total": runs[0]["params_total"],
        "params_nonzero": runs[0]["params_nonzero"],
        "tokens": runs[0]["tokens"],
        "train_flops": runs[0]["train_flops"],
        "inference_flops_per_token": runs[0]["inference_flops_per_token"],
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| run | seeds | ensemble ppl | per-head ppl | disagreement | params (M) total / nonzero | tokens | "
        "train FLOPs | inference MFLOPs/token |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ppl = row["ensemble_ppl"]
        ens = f"{ppl['mean']:.2f}" + (f" ± {ppl['std']:.2f}" if row["seeds"] > 1 else "")
        heads = ", ".join(f"{h['mean']:.2f}" for h in row["head_ppl"])
        lines.append(
            f"| {row['label']} | {row['seeds']} | {ens} | {heads} | {row['disagreement']['mean']:.4f} | "
            f"{row['params_total'] / 1e6:.2f} / {row['params_nonzero'] / 1e6:.2f} | {row['tokens']} | "
            f"{row['train_flops']:.3e} | {row['inference_flops_per_token'] / 1e6:.1f} |"
        )
    return "\n".join(lines)


def plot_curves(results: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """loss.png (validation loss over tokens) and disagreement.png, one line per run."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    for key, ylabel, filename in (
        ("val_loss", "validation loss (ensemble, nats)", "loss.png"),
        ("disagreement", "head disagreement (top-1, validation)", "disagreement.png"),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, runs in results.items():
            for run in runs:
                if key == "disagreement" and len(run["head_ppl"]) < 2:
                    continue  # one head has nothing to disagree with
                xs = [p["tokens"] for p in run["curve"]]
                ax.plot(xs, [p[key] for p in run["curve"]], marker="o", markersize=3, label=f"{label} s{run['seed']}")
        ax.set_xlabel("training tokens")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no run with several heads", ha="center", transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=120)
        plt.close(fig)


def run_all(specs: list[RunSpec], args: argparse.Namespace, title: str) -> list[dict[str, Any]]:
    """Train every run, then write the table (markdown + JSON) and the two plots into ``args.out``."""
    from tqdm import tqdm

    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    for spec in tqdm(specs, desc="runs", unit="run"):
        run_dir = train_run(spec, args)
        measured = measure_run(run_dir, args.seq_len)
        results.setdefault(spec.label, []).append({**measured, "seed": spec.seed, "run_dir": str(run_dir)})
    rows = [summarise(label, runs) for label, runs in results.items()]
    table = markdown_table(rows)
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    (args.out / "results.md").write_text(f"# {title}\n\n`{command}`\n\n{table}\n", encoding="utf-8")
    (args.out / "results.json").write_text(
        json.dumps({"command": command, "rows": rows, "runs": results}, indent=2), encoding="utf-8"
    )
    plot_curves(results, args.out)
    log.info("%s\nwritten to %s", table, args.out)
    return rows


def method_specs(methods: list[str], seeds: list[int], head_layers: int | None, density: float) -> list[RunSpec]:
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {METHODS}")
    if not 0 < density <= 1:
        raise ValueError(f"--density must be in (0, 1], got {density}")
    return [
        RunSpec(
            label=method,
            method=method,
            head_layers=head_layers if method in ("treenet", "neurotrails") else None,
            density=density if method == "neurotrails" else 1.0,
            seed=seed,
        )
        for seed in seeds
        for method in methods
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--methods", type=lambda t: parse_list(t, str), default=list(METHODS))
    parser.add_argument("--head-layers", type=int, default=None, help="None: two thirds of the blocks")
    parser.add_argument("--density", type=float, default=0.9, help="NeuroTrails head density")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        specs = method_specs(args.methods, args.seeds, args.head_layers, args.density)
        run_all(specs, args, f"Reproduction at {args.size}: {args.steps} steps x {args.batch} x {args.seq_len} tokens")
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
