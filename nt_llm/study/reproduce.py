"""The paper's comparison at CPU scale: single dense model, TreeNet, NeuroTrails and the full ensemble.

Every method trains in its own process (``nt-llm train``, as a user would run it) with the same token budget,
learning rate and data order (the data order follows the seed, so seed s is the same stream for every
method), for several seeds. With ``--lr auto`` the learning rate is picked first by a short sweep of the dense
baseline and then used for every method. Writes into ``--out``:
- ``results.md`` / ``results.json``: ensemble perplexity (mean ± std over seeds), per-head perplexity, the
  paired per-seed difference to the dense model and to the full ensemble with 95% intervals, parameters
  (total and nonzero), training FLOPs, inference FLOPs per token, disagreement, KL, ensemble gain, wall time;
- ``loss.png``: validation loss over training tokens, mean over seeds with a ±1 std band;
  ``diversity.png``: disagreement, KL and ensemble gain over training;
  ``paired_difference.png`` (its numbers: ``curve_comparisons`` in results.json): each row's validation perplexity
  minus the dense model's and the full ensemble's, paired per seed at every evaluation both runs have at the same
  token count, mean over seeds with its 95% interval band.
Runs that finished with the same recipe are reused, so an interrupted study resumes where it stopped. Each finished
run's measurements are also kept in ``--out``/``records/<run>.json`` beside its recipe; a study whose run folders are
gone (a new machine) but whose records are there (committed with the results) reuses them instead of training again.

    nt-llm reproduce                       # cpu-4m, 4k tokenizer, 3 seeds, lr picked by a dense sweep
    nt-llm reproduce --size cpu-2m --steps 200 --seeds 0 --jobs 2
    nt-llm reproduce --data recipes/data/c4_paper.yaml --size 350m ...   # the paper's C4 recipe

Paths (``--out``, the runs, the data recipe's ``data_dir``) are relative to the working directory, as for
``nt-llm train``; the embedded corpus is the one ``nt-llm prepare-data --out data`` writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from nt_llm import methods
from nt_llm.checkpoint import RunDir
from nt_llm.cli.common import EXIT_BAD_INPUT
from nt_llm.data import DataConfig
from nt_llm.modeling.configuration_neurotrails import HEADS_INITS
from nt_llm.modeling.sizes import load_size
from nt_llm.precision import PRECISIONS
from nt_llm.sparse.config import PAPER_DST, SparsityConfig, all_weights_scope
from nt_llm.train.recipe import (
    CheckpointRecipe,
    EvalRecipe,
    LoggingRecipe,
    ModelRecipe,
    OptimRecipe,
    Recipe,
    RecipeError,
    RunRecipe,
    apply_overrides,
    load_section,
    resolved_dict,
    save_recipe,
)

METHODS = methods.names()  # the default --methods: every registered method (the paper's four)
# The study's references: every row is compared with each of these, paired over seeds.
COMPARED_WITH = ("dense", "full_ensemble")
# --lr auto / per-method: the learning rate is swept on this method's runs (the single model).
LR_SWEEP_METHOD = "dense"
# --setup paper: the paper's training setup where it differs from nt_llm's defaults, each difference by name (what
# --revert switches back to nt_llm's setting, one at a time): "init", the paper's nn.Embedding std sqrt(2/5) for
# every method (nt_llm: 0.02); "scope", NeuroTrails masks every 2-D weight (nt_llm: the heads only); "longer",
# NeuroTrails trains 1/density the steps (nt_llm: the same steps as every method). Precision is --precision's.
SETUP_DIFFERENCES = ("init", "scope", "longer")
PAPER_EMBEDDING_STD = (2 / 5) ** 0.5
# The study's data section without --data: the embedded corpus with its 4k tokenizer, packed. This constant is the
# one source of that section. The study cannot read recipes/data/embedded_4k.yaml, the same section for `nt-llm train`
# recipes, because an installed wheel has no recipes/ folder (only nt_llm/ and its package data); so that file is
# held to this constant instead (tests/test_paper_recipes.py: it must load as this DataConfig), and a change of the
# study's data is made here and copied there.
STUDY_DATA = DataConfig(
    source="embedded",
    data_dir="data",
    tokenizer="embedded-4k",
    seq_len=256,
    mode="pack",
    batch_size=8,
    shuffle_buffer=10000,
    seed=0,
    validation_tokens=49152,
)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method with its head split and density, a seed, and recipe overrides."""

    label: str  # the row of the table this run contributes to (runs differing only in seed share it)
    method: str
    head_layers: int | None
    density: float  # 1.0 for methods without sparsity
    seed: int
    # Recipe overrides as `nt-llm train` takes them ("sparsity.distribution=uniform", ...), read by the recipe
    # module's parser (nt_llm.train.recipe.apply_overrides).
    overrides: tuple[str, ...] = field(default=())
    lr: float | None = None  # this run's own learning rate (--lr per-method); None: the study's

    @property
    def name(self) -> str:
        return f"{self.label}_s{self.seed}" if self.lr is None else f"{self.label}_lr{self.lr:g}_s{self.seed}"


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
    """Flags shared with ``nt-llm sweep`` and ``nt-llm ablate``: size, budget, data, sparsity, output."""
    parser.add_argument("--size", default="cpu-4m", help="a shipped size name or a YAML of LlamaConfig fields")
    parser.add_argument("--ensemble-size", type=int, default=3)
    parser.add_argument("--seeds", type=lambda t: parse_list(t, int), default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps (same for every method)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per optimizer step")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument(
        "--lr",
        default="auto",
        help="a learning rate; 'auto': the best of a short dense sweep for every method; 'per-method': each row's "
        "best of a sweep at the full budget on the first seed (that run is the row's first seed)",
    )
    parser.add_argument("--lr-candidates", type=lambda t: parse_list(t, float), default=[1e-3, 2e-3, 4e-3, 8e-3])
    parser.add_argument("--lr-sweep-steps", type=int, default=None, help="steps of each sweep run (default: steps/2)")
    parser.add_argument(
        "--lr-from",
        type=Path,
        default=None,
        help="another study's --out (a --lr per-method one): each row trains at that study's rate for it, and a run "
        "it recorded with the very same recipe is reused (e.g. the paper-setup study for its --revert groups)",
    )
    parser.add_argument(
        "--reuse",
        type=lambda t: parse_list(t, Path),
        default=[],
        help="other studies' --out, comma-separated: a run one of them recorded with the very same recipe (under any "
        "run name) is taken over instead of trained, e.g. the map's cells that the 6-block-head group already ran",
    )
    parser.add_argument(
        "--setup",
        choices=("nt_llm", "paper"),
        default="nt_llm",
        help=f"paper: the paper's embedding init, sparsity scope and schedule ({', '.join(SETUP_DIFFERENCES)})",
    )
    parser.add_argument(
        "--revert",
        type=lambda t: parse_list(t, str),
        default=[],
        help=f"with --setup paper: these differences back to nt_llm's setting ({', '.join(SETUP_DIFFERENCES)})",
    )
    parser.add_argument(
        "--heads-init",
        choices=HEADS_INITS,
        default="independent",
        help="model.heads_init of every sparse ensemble; copies: its heads start as copies of head 0, so that the "
        "masks are the only difference between them (the copy-init diagnostic; the baselines keep their init)",
    )
    parser.add_argument("--grad-clip", type=float, default=0.0, help="0: none, as in the paper's training script")
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="optim.precision (auto: bf16 only where native)"
    )
    parser.add_argument("--update-frequency", type=int, default=None, help="DST update every N steps (steps/12)")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (steps/5)")
    parser.add_argument("--eval-batches", type=int, default=None, help="cap on validation batches per evaluation")
    parser.add_argument("--validation-tokens", type=int, default=49152)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a YAML of data-section fields (recipes/data/*.yaml; default: the embedded corpus, 4k tokenizer); "
        "seq_len, batch and validation_tokens are set by flags",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training process")
    parser.add_argument("--jobs", type=int, default=2, help="training processes at once (jobs x threads <= cores)")
    parser.add_argument("--out", type=Path, default=Path("out") / "reproduce")
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="where the runs live (default: OUT/runs); another study's, to reuse its finished runs",
    )
    parser.add_argument("--rerun", action="store_true", help="retrain runs that already finished in --out")


def check_arguments(args: argparse.Namespace) -> None:
    """Bad flags raise ValueError naming the flag."""
    for name in ("steps", "batch", "seq_len", "threads", "jobs", "validation_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    unknown = sorted(set(args.revert) - set(SETUP_DIFFERENCES))
    if unknown:
        raise ValueError(f"--revert: unknown {unknown}; choose from {list(SETUP_DIFFERENCES)}")
    if args.revert and args.setup != "paper":
        raise ValueError("--revert switches differences of --setup paper back: pass --setup paper")
    if _match_tokens(args) and not paper_setting(args, "longer"):
        raise ValueError(
            "--match-tokens gives every row the sparse runs' 1/density steps of the paper's schedule: pass --setup "
            "paper without --revert longer (otherwise every run already trains --steps)"
        )
    if args.lr_from is not None and args.lr != "auto":
        raise ValueError(f"--lr-from takes every row's rate from {args.lr_from}: pass it without --lr {args.lr}")
    missing = [str(study) for study in args.reuse if not (study / RECORDS).is_dir()]
    if missing:
        raise ValueError(f"--reuse: {missing} hold no {RECORDS}/ folder: not the --out of a study")
    if args.lr not in ("auto", "per-method"):
        try:
            lr = float(args.lr)
        except ValueError as err:
            raise ValueError(f"--lr must be a number, 'auto' or 'per-method', got {args.lr!r}") from err
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"--lr must be a positive number, got {args.lr!r}")


def paper_setting(args: argparse.Namespace, difference: str) -> bool:
    """Whether this study uses the paper's setting for ``difference`` (one of SETUP_DIFFERENCES)."""
    return args.setup == "paper" and difference not in args.revert


def run_steps(spec: RunSpec, args: argparse.Namespace, steps: int) -> int:
    """A run's optimizer steps: ``steps``, or 1/density of it for NeuroTrails in the paper's schedule (and, with
    ``--match-tokens``, for every row: the tokens-matched control of that schedule)."""
    if paper_setting(args, "longer"):
        if methods.get(spec.method).sparse:
            return int(steps * (1 / spec.density))  # as the paper's script: int(steps * longer_training)
        if _match_tokens(args):
            return int(steps * (1 / args.density))
    return steps


def _match_tokens(args: argparse.Namespace) -> bool:
    """``--match-tokens`` (reproduce's flag; the sweep and the ablations have several densities and no such flag)."""
    return getattr(args, "match_tokens", False)


def study_data(args: argparse.Namespace) -> DataConfig:
    """The data section of every run but its seed: ``--data`` (or ``STUDY_DATA``) with the flags' lengths."""
    data = STUDY_DATA if args.data is None else load_section(args.data, "data")
    return dataclasses.replace(
        data, seq_len=args.seq_len, batch_size=args.batch, validation_tokens=args.validation_tokens
    )


def build_recipe(spec: RunSpec, args: argparse.Namespace, run_dir: Path, lr: float | None, steps: int) -> Recipe:
    """The recipe of one run: everything but the method's shape and the overrides is shared by all runs.
    ``steps`` is the study's budget; evaluations and mask updates keep its cadence when a run trains longer."""
    total = run_steps(spec, args, steps)
    lr = spec.lr if spec.lr is not None else lr
    method = methods.get(spec.method)
    config: dict[str, Any] = {}
    if paper_setting(args, "init"):
        config["embedding_init_std"] = PAPER_EMBEDDING_STD
    # Copies only where masks can tell the heads apart: copied members of a dense ensemble would stay identical, so
    # the baselines keep their own init (and their recorded runs are reused). The default writes nothing: run
    # records compare recipes.
    if _heads_init(args) != "independent" and method.ensemble and method.sparse:
        config["heads_init"] = _heads_init(args)
    if method.ensemble:
        config["ensemble_size"] = args.ensemble_size
    if spec.head_layers is not None:
        config["head_layers"] = spec.head_layers
    sparsity = None
    if method.sparse:
        # The paper's DST (soft magnitude pruning, RigL growth, ERK); updates scale with the run.
        backbone = spec.head_layers is None or spec.head_layers < load_size(args.size)["num_hidden_layers"]
        scope = {"include": all_weights_scope(backbone)} if paper_setting(args, "scope") else {}
        update_frequency = args.update_frequency or max(1, steps // 12)
        sparsity = SparsityConfig(
            **PAPER_DST, density=spec.density, update_frequency=update_frequency, seed=spec.seed, **scope
        )
    eval_every = args.eval_every or max(1, steps // 5)
    recipe = Recipe(
        run=RunRecipe(name=spec.name, output_dir=str(run_dir), seed=spec.seed),
        model=ModelRecipe(size=args.size, method=spec.method, config=config),
        sparsity=sparsity,
        # The seed fixes the data order too: seed s is the same token stream for every method (paired runs).
        data=dataclasses.replace(study_data(args), seed=spec.seed),
        optim=OptimRecipe(
            lr=lr,
            weight_decay=0.0,
            max_steps=total,
            warmup_steps=max(1, total // 10),
            min_lr_ratio=0.1,
            total_batch_size=args.batch,
            grad_clip=args.grad_clip,
            precision=args.precision,
        ),
        eval=EvalRecipe(every=eval_every, max_batches=args.eval_batches),
        # A checkpoint at every evaluation: a study stopped by a session's end resumes its runs from there.
        checkpoint=CheckpointRecipe(every=eval_every, keep_last=1),
        logging=LoggingRecipe(every=max(1, eval_every // 5), progress_bar=False, trackers=["none"]),
    )
    for override in spec.overrides:
        section = override.partition(".")[0]
        if getattr(recipe, section, "") is None:
            raise ValueError(f"{spec.label}: override {override} targets section {section!r}, which this run lacks")
    return apply_overrides(recipe, spec.overrides)


def _same_recipe(path: Path, recipe: Recipe) -> bool:
    """Whether the run recipe file ``path`` holds ``recipe``: compared as training reads them, so that a file written
    by an earlier version of the study (another layout, fields since given defaults) still counts as the same."""
    if not path.is_file():
        return False
    try:
        written = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(written, dict):
        return False
    resolved = _resolved(written)
    return resolved is not None and resolved == _resolved(recipe.to_dict())


RECORDS = "records"  # --out/records/<run>.json: a finished run's recipe and measurements


def _record_file(spec: RunSpec, args: argparse.Namespace) -> Path:
    return args.out / RECORDS / f"{spec.name}.json"


def _recorded_recipe(spec: RunSpec, args: argparse.Namespace, lr: float | None, steps: int) -> dict[str, Any]:
    """The recipe a record keeps: the run's, without the run folder, which is where it happened to be trained
    (another --runs-dir, another machine), not what was trained."""
    recipe = build_recipe(spec, args, Path(), lr, steps).to_dict()
    del recipe["run"]["output_dir"]
    return recipe


def _resolved(recipe: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe as training reads it (every field, defaults filled in), so that a record written before a field
    with a default existed, or by the study's untyped recipes of before, still matches; None when today's recipe no
    longer accepts it."""
    try:
        return resolved_dict(recipe)
    except RecipeError as err:
        log.warning("a run's recorded recipe no longer loads (%s): the run is trained again", err)
        return None


def recorded(spec: RunSpec, args: argparse.Namespace, lr: float | None, steps: int) -> dict[str, Any] | None:
    """The run's measurements from its record, when one was written for the same recipe."""
    return _read_record(_record_file(spec, args), spec.name, _resolved(_recorded_recipe(spec, args, lr, steps)))


def _reference_record(spec: RunSpec, args: argparse.Namespace, lr: float | None, steps: int) -> Path | None:
    """A record of this very run (the same recipe) in the --lr-from or --reuse studies, which this study may take
    as its own: the one of the same name first, then any other (another study names its runs its own way)."""
    wanted = _resolved(_recorded_recipe(spec, args, lr, steps))
    for study in ([args.lr_from] if args.lr_from is not None else []) + args.reuse:
        same_name = study / RECORDS / f"{spec.name}.json"
        others = [path for path in sorted((study / RECORDS).glob("*.json")) if path != same_name]
        for path in [same_name, *others]:
            if _read_record(path, spec.name, wanted) is not None:
                return path
    return None


def _read_record(path: Path, name: str, wanted: dict[str, Any] | None) -> dict[str, Any] | None:
    """The record's measurements when it holds the recipe ``wanted`` (resolved) under whatever run name: the name
    says where a study filed the run, not what was trained."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable run record ({err}); delete it to train the run again") from err
    stored = record.get("recipe")
    if not isinstance(stored, dict):
        return None
    if isinstance(stored.get("run"), dict):
        stored = {**stored, "run": {**stored["run"], "name": name}}
    if wanted is None or _resolved(stored) != wanted:  # None: a recipe that no longer loads matches nothing
        return None
    return record["measured"]


def write_record(spec: RunSpec, args: argparse.Namespace, lr: float | None, steps: int, runs_dir: Path) -> None:
    """Measure the finished run in ``runs_dir`` and keep its recipe and measurements in its record."""
    path = _record_file(spec, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "recipe": _recorded_recipe(spec, args, lr, steps),
        "measured": measure_run(runs_dir / spec.name, args.seq_len),
    }
    _write_record_file(path, record)


def _write_record_file(path: Path, record: dict[str, Any]) -> None:
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record, indent=1), encoding="utf-8")
    partial.replace(path)  # a record is whole or absent: a study stopped mid-write trains or measures it again


def _take_record(reference: Path, spec: RunSpec, args: argparse.Namespace, lr: float | None, steps: int) -> None:
    """Another study's record of this run becomes this study's: as it is, or, under another run name, with this
    run's recipe and where it came from."""
    path = _record_file(spec, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    if reference.name == path.name:
        shutil.copyfile(reference, path)
        return
    record = json.loads(reference.read_text(encoding="utf-8"))
    record = {**record, "recipe": _recorded_recipe(spec, args, lr, steps), "reused_from": str(reference)}
    _write_record_file(path, record)


def check_no_conflicts(
    specs: list[RunSpec], args: argparse.Namespace, lr: float | None, steps: int, runs_dir: Path
) -> None:
    """Before anything trains: a run folder that holds checkpoints of another recipe is never replaced silently
    (it may be another study's, shared through --runs-dir); --rerun replaces it."""
    if args.rerun:
        return
    conflicts = []
    for spec in specs:
        recipe = build_recipe(spec, args, runs_dir / spec.name, lr, steps)
        if RunDir(runs_dir / spec.name).latest() is not None and not _same_recipe(
            runs_dir / f"{spec.name}.yaml", recipe
        ):
            conflicts.append(spec.name)
    if conflicts:
        raise ValueError(
            f"{runs_dir} holds runs {conflicts} trained with another recipe (budget, learning rate or settings); "
            "choose another --out / --runs-dir, or pass --rerun to retrain them"
        )


def train_run(spec: RunSpec, args: argparse.Namespace, lr: float | None, steps: int, runs_dir: Path) -> Path:
    """Train one run in a fresh process (the accelerate state is per process); returns its folder. A run that
    finished earlier with the same recipe is reused, one stopped part-way (a study interrupted) resumes from its
    last checkpoint; anything else there is replaced (``check_no_conflicts`` has made sure that no finished run of
    another recipe is in the way, unless --rerun). A run recorded with the same recipe is not trained at all.
    Either way, the run ends with a record (``write_record``)."""
    run_dir = runs_dir / spec.name
    if not args.rerun and recorded(spec, args, lr, steps) is not None:
        log.info("%s: recorded earlier in %s, reusing it", spec.name, _record_file(spec, args))
        return run_dir
    reference = None if args.rerun else _reference_record(spec, args, lr, steps)
    if reference is not None:
        # Copied, so that this study's records alone stand for every run of its table.
        _take_record(reference, spec, args, lr, steps)
        log.info("%s: the same run is recorded in %s, reusing it", spec.name, reference)
        return run_dir
    recipe_path = runs_dir / f"{spec.name}.yaml"
    recipe = build_recipe(spec, args, run_dir, lr, steps)
    latest = RunDir(run_dir).latest()
    resume = not args.rerun and latest is not None and _same_recipe(recipe_path, recipe)
    if resume and latest.step == run_steps(spec, args, steps):
        log.info("%s: finished earlier, reusing %s", spec.name, run_dir)
        write_record(spec, args, lr, steps, runs_dir)
        return run_dir
    if not resume:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # nothing to resume (or --rerun): its metrics.jsonl would be appended to
        run_dir.mkdir(parents=True)
        save_recipe(recipe, recipe_path)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "nt_llm.cli", "train", "--recipe", str(recipe_path)]
    if resume:
        command += ["--resume", "latest"]
    log.info("%s: %s", spec.name, " ".join(command))
    started = time.perf_counter()
    with open(runs_dir / f"{spec.name}.log", "a" if resume else "w", encoding="utf-8") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"training {spec.name} failed (exit {result.returncode}); see {out.name}")
    log.info("%s: trained in %.0f s", spec.name, time.perf_counter() - started)
    write_record(spec, args, lr, steps, runs_dir)
    return run_dir


def training_order(specs: list[RunSpec], args: argparse.Namespace, steps: int) -> list[RunSpec]:
    """The costliest runs first (a step's cost x the run's steps; deeper heads first among equals), so that the
    longest ones start while several run at once and the last to start are short: a map whose cells train
    1/density the steps would otherwise leave one job idle while its longest cell runs alone at the end."""
    return sorted(
        specs, key=lambda s: (-methods.get(s.method).step_cost * run_steps(s, args, steps), -(s.head_layers or 0))
    )


def train_all(specs: list[RunSpec], args: argparse.Namespace, lr: float | None, steps: int, runs_dir: Path) -> None:
    """Train every run, ``args.jobs`` at a time, the most expensive first (the last to start are the short ones)."""
    from tqdm import tqdm

    runs_dir.mkdir(parents=True, exist_ok=True)
    check_no_conflicts(specs, args, lr, steps, runs_dir)
    order = training_order(specs, args, steps)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool, tqdm(total=len(order), desc="runs", unit="run") as bar:
        futures = [pool.submit(train_run, spec, args, lr, steps, runs_dir) for spec in order]
        for future in futures:
            future.result()  # re-raises the first failure
            bar.update(1)


def measure_run(run_dir: Path, seq_len: int) -> dict[str, Any]:
    """Final metrics, parameter counts and FLOPs of a finished run, from its metrics and final checkpoint."""
    import torch

    from nt_llm.flops import forward_flops_per_token, model_linear_weights, training_flops_per_token
    from nt_llm.modeling import NeuroTrailsForCausalLM

    run = RunDir(run_dir)
    evals = run.evaluations()
    checkpoint = run.latest()
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to count parameters from")
    model = NeuroTrailsForCausalLM.from_pretrained(checkpoint.model_dir, dtype=torch.float32)
    config = model.config
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    weights = model_linear_weights(model, nonzero=True)
    final = evals[-1]
    heads = sorted((k for k in final if k.startswith("head") and k.endswith("_ppl")), key=lambda k: int(k[4:-4]))
    trains = run.metrics("train")
    # Training FLOPs use the final nonzero count: DST keeps the density constant over the run.
    return {
        "tokens": final["tokens"],
        "ensemble_ppl": final["ensemble_ppl"],
        "ensemble_loss": final["ensemble_loss"],
        "head_ppl": [final[k] for k in heads],
        "disagreement": final.get("disagreement", 0.0),
        "pairwise_kl": final.get("pairwise_kl", 0.0),
        "ensemble_gain": final.get("ensemble_gain", 0.0),
        "params_total": total,
        "params_nonzero": nonzero,
        "train_flops": training_flops_per_token(config, seq_len, weights) * final["tokens"],
        "inference_flops_per_token": forward_flops_per_token(config, seq_len, weights),
        "tokens_per_s": statistics.median(e["tokens_per_s"] for e in trains) if trains else None,
        "curve": [
            {
                "tokens": e["tokens"],
                "val_loss": e["ensemble_loss"],
                "disagreement": e.get("disagreement", 0.0),
                "pairwise_kl": e.get("pairwise_kl", 0.0),
                "ensemble_gain": e.get("ensemble_gain", 0.0),
            }
            for e in evals
        ],
    }


def summarise(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds of one row."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    n_heads = len(runs[0]["head_ppl"])
    row = {
        "label": label,
        "seeds": len(runs),
        "head_ppl": [spread([r["head_ppl"][h] for r in runs]) for h in range(n_heads)],
        "params_total": runs[0]["params_total"],
        "params_nonzero": runs[0]["params_nonzero"],
        "tokens": runs[0]["tokens"],
        "train_flops": runs[0]["train_flops"],
        "inference_flops_per_token": runs[0]["inference_flops_per_token"],
    }
    for key in ("ensemble_ppl", "ensemble_loss", "disagreement", "pairwise_kl", "ensemble_gain"):
        row[key] = spread([r[key] for r in runs])
    return row


def curve_comparisons(
    results: dict[str, list[dict[str, Any]]], baselines: tuple[str, ...] = COMPARED_WITH
) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Per row and baseline, over training: at each evaluation that a seed's run of the row and of the baseline both
    made at the same token count, the paired difference of validation perplexity (row - baseline), mean over those
    seeds with its 95% interval (``nt_llm.stats``, as the table's comparisons). ``{row: {baseline: [{"tokens",
    "mean", "low", "high", "n"}, ...]}}``; a point without a partner is left out, a row without any is absent."""
    from nt_llm.stats import paired_difference

    # {row: {seed: {tokens: validation ppl}}}
    curves = {
        label: {r["seed"]: {p["tokens"]: math.exp(p["val_loss"]) for p in r["curve"]} for r in runs}
        for label, runs in results.items()
    }
    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for label, row in curves.items():
        for base in baselines:
            if base == label or base not in curves:
                continue
            reference = curves[base]
            tokens = sorted({t for s in row if s in reference for t in row[s].keys() & reference[s].keys()})
            points = []
            for t in tokens:
                seeds = [s for s in row if s in reference and t in row[s] and t in reference[s]]
                diff = paired_difference({s: row[s][t] for s in seeds}, {s: reference[s][t] for s in seeds})
                points.append({"tokens": t, **diff.to_dict()})
            if points:
                out.setdefault(label, {})[base] = points
    return out


def paired_comparisons(results: dict[str, list[dict[str, Any]]], baselines: tuple[str, ...]) -> dict[str, Any]:
    """Per row and baseline: the paired per-seed difference of ensemble perplexity (row - baseline), 95% CI."""
    from nt_llm.stats import paired_difference

    by_seed = {label: {r["seed"]: r["ensemble_ppl"] for r in runs} for label, runs in results.items()}
    out: dict[str, Any] = {}
    for label in results:
        for base in baselines:
            if base in by_seed and base != label:
                out.setdefault(label, {})[base] = paired_difference(by_seed[label], by_seed[base]).to_dict()
    return out


def _interval(diff: dict[str, float] | None) -> str:
    from nt_llm.stats import Interval

    return "-" if diff is None else Interval(**diff).text()


def markdown_table(rows: list[dict[str, Any]], comparisons: dict[str, Any] | None = None) -> str:
    comparisons = comparisons or {}
    against = "".join(f" Δ ppl vs {base.replace('_', ' ')} (95% CI) |" for base in COMPARED_WITH)
    lines = [
        f"| run | seeds | ensemble ppl | per-head ppl |{against} "
        "disagreement | KL | ensemble gain | params (M) total / nonzero | train PFLOPs | inference MFLOPs/token |",
        "|" + " --- |" * (10 + len(COMPARED_WITH)),
    ]
    for row in rows:
        ppl = row["ensemble_ppl"]
        ens = f"{ppl['mean']:.2f}" + (f" ± {ppl['std']:.2f}" if row["seeds"] > 1 else "")
        heads = ", ".join(f"{h['mean']:.2f}" for h in row["head_ppl"])
        diffs = comparisons.get(row["label"], {})
        multi = len(row["head_ppl"]) > 1
        diversity = (
            f"{row['disagreement']['mean']:.3f} | {row['pairwise_kl']['mean']:.3f} | {row['ensemble_gain']['mean']:.4f}"
            if multi
            else "- | - | -"
        )
        lines.append(
            f"| {row['label']} | {row['seeds']} | {ens} | {heads} | "
            + "".join(f"{_interval(diffs.get(base))} | " for base in COMPARED_WITH)
            + f"{diversity} | "
            f"{row['params_total'] / 1e6:.2f} / {row['params_nonzero'] / 1e6:.2f} | "
            f"{row['train_flops'] / 1e15:.3f} | {row['inference_flops_per_token'] / 1e6:.1f} |"
        )
    return "\n".join(lines)


def _seed_band(ax, xs: list[float], means: list[float], stds: list[float], color: str) -> None:
    """The ±1 std band over seeds around a mean curve."""
    lower = [m - s for m, s in zip(means, stds, strict=True)]
    upper = [m + s for m, s in zip(means, stds, strict=True)]
    ax.fill_between(xs, lower, upper, color=color, alpha=0.2)


def mean_curve(runs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float], list[float]]:
    """The seeds' mean and std of one curve value at each token count that every seed evaluated.

    Points are matched by tokens, not by position: a seed may lack one (records written before RunDir.metrics
    kept the evaluation at a resumed run's checkpoint step lack it).
    """
    by_tokens = [{p["tokens"]: p[key] for p in r["curve"]} for r in runs]
    xs = sorted(set.intersection(*(set(points) for points in by_tokens)))
    values = [[points[x] for points in by_tokens] for x in xs]
    means = [statistics.fmean(v) for v in values]
    stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
    return xs, means, stds


def plot_curves(results: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """loss.png (validation loss over tokens, mean ± std over seeds), diversity.png (disagreement, KL,
    ensemble gain over tokens, one line per row with several heads) and paired_difference.png (``curve_comparisons``:
    each row's paired difference of validation perplexity to each reference over tokens)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    colors = {label: f"C{i}" for i, label in enumerate(results)}  # one colour per row in both figures
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, runs in results.items():
        xs, means, stds = mean_curve(runs, "val_loss")
        ax.plot(xs, means, marker="o", markersize=3, color=colors[label], label=f"{label} ({len(runs)} seeds)")
        _seed_band(ax, xs, means, stds, colors[label])
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss of the ensemble (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)

    multi = {label: runs for label, runs in results.items() if len(runs[0]["head_ppl"]) > 1}
    fig, axes = plt.subplots(1, 3, figsize=(12.8, 3.8))
    for ax, (key, ylabel) in zip(
        axes,
        (
            ("disagreement", "top-1 disagreement"),
            ("pairwise_kl", "mean pairwise KL (nats)"),
            ("ensemble_gain", "ensemble gain (nats)"),
        ),
        strict=False,
    ):
        for label, runs in multi.items():
            xs, means, stds = mean_curve(runs, key)
            ax.plot(xs, means, marker="o", markersize=3, color=colors[label], label=label)
            _seed_band(ax, xs, means, stds, colors[label])
        ax.set_xlabel("training tokens")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not multi:
            ax.text(0.5, 0.5, "no run with several heads", ha="center", transform=ax.transAxes)
    if multi:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "diversity.png", dpi=120)
    plt.close(fig)

    # paired_difference.png: one panel per reference, a line per row compared with it (a band with several seeds).
    differences = curve_comparisons(results, COMPARED_WITH)
    fig, axes = plt.subplots(1, len(COMPARED_WITH), figsize=(6.4 * len(COMPARED_WITH), 4.2), squeeze=False)
    for ax, base in zip(axes[0], COMPARED_WITH, strict=True):
        drawn = False
        for label, against in differences.items():
            points = against.get(base)
            if not points:
                continue
            xs = [p["tokens"] for p in points]
            seeds = max(p["n"] for p in points)
            name = f"{label} ({seeds} seed{'s' if seeds > 1 else ''})"
            ax.plot(xs, [p["mean"] for p in points], marker="o", markersize=3, color=colors[label], label=name)
            if seeds > 1:  # one seed has no interval: the line only
                ax.fill_between(
                    xs, [p["low"] for p in points], [p["high"] for p in points], color=colors[label], alpha=0.2
                )
            drawn = True
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("training tokens")
        ax.set_ylabel(f"Δ validation ppl vs {base.replace('_', ' ')} (paired, 95% CI)")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no run paired with a {base.replace('_', ' ')} run", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(out / "paired_difference.png", dpi=120)
    plt.close(fig)


def collect(
    specs: list[RunSpec], args: argparse.Namespace, lr: float | None, steps: int, runs_dir: Path
) -> dict[str, list[dict[str, Any]]]:
    """Every run's measurements by row, from the records ``train_all`` left."""
    results: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        run_dir = str(runs_dir / spec.name)
        results.setdefault(spec.label, []).append(
            {**outcome(spec, args, lr, steps), "seed": spec.seed, "run_dir": run_dir}
        )
    return results


def outcome(spec: RunSpec, args: argparse.Namespace, lr: float | None, steps: int) -> dict[str, Any]:
    """A trained run's measurements (its record); FileNotFoundError when it has none."""
    measured = recorded(spec, args, lr, steps)
    if measured is None:
        raise FileNotFoundError(f"{spec.name}: no record of this recipe in {_record_file(spec, args)}")
    return measured


def pick_learning_rate(args: argparse.Namespace) -> tuple[float, str]:
    """``--lr``, or with ``auto`` the candidate whose dense run (seed 0) ends with the lowest validation loss;
    returns it and the sweep's markdown table ('' without a sweep)."""
    if args.lr != "auto":
        return float(args.lr), ""
    steps = args.lr_sweep_steps or max(2, args.steps // 2)
    specs = {
        lr: RunSpec(f"{LR_SWEEP_METHOD}_lr{lr:g}", LR_SWEEP_METHOD, None, 1.0, args.seeds[0])
        for lr in args.lr_candidates
    }
    runs_dir = args.out / "lr_sweep"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for lr, spec in specs.items():
        check_no_conflicts([spec], args, lr, steps, runs_dir)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(train_run, spec, args, lr, steps, runs_dir) for lr, spec in specs.items()]:
            future.result()
    losses = {}
    for lr, spec in specs.items():
        losses[lr] = outcome(spec, args, lr, steps)["ensemble_loss"]
    best = min(losses, key=losses.get)
    lines = [
        f"Dense baseline, seed {args.seeds[0]}, {steps} steps: the learning rate of every method is {best:g}.",
        "",
        "| lr | validation loss | ppl |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {lr:g} | {loss:.4f} | {math.exp(loss):.2f} |" for lr, loss in losses.items()]
    log.info("learning-rate sweep:\n%s", "\n".join(lines))
    return best, "\n".join(lines)


def per_method_learning_rates(
    specs: list[RunSpec], args: argparse.Namespace, runs_dir: Path
) -> tuple[list[RunSpec], dict[str, float], str]:
    """``--lr per-method``: each row (label) trains its first seed at every candidate, at the full budget, and
    takes the candidate with the lowest final validation loss; that run is the row's first seed. Returns the specs
    with their rows' rates, the rates, and the sweep's markdown table."""
    rows = {spec.label: spec for spec in specs if spec.seed == args.seeds[0]}
    sweep = [replace(spec, lr=lr) for spec in rows.values() for lr in args.lr_candidates]
    train_all(sweep, args, None, args.steps, runs_dir)
    losses = {(s.label, s.lr): outcome(s, args, None, args.steps)["ensemble_loss"] for s in sweep}
    best = {label: min(args.lr_candidates, key=lambda lr, label=label: losses[label, lr]) for label in rows}
    lines = [
        f"Each row's seed {args.seeds[0]} at every candidate, the full budget; validation perplexity "
        "(its best rate in bold is the one all its seeds train with).",
        "",
        "| row | " + " | ".join(f"lr {lr:g}" for lr in args.lr_candidates) + " |",
        "| --- |" + " --- |" * len(args.lr_candidates),
    ]
    for label in rows:
        cells = [f"{math.exp(losses[label, lr]):.2f}" for lr in args.lr_candidates]
        cells = [f"**{c}**" if lr == best[label] else c for c, lr in zip(cells, args.lr_candidates, strict=True)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    log.info("per-method learning-rate sweep:\n%s", "\n".join(lines))
    # Written as soon as the sweep is done: a study stopped later keeps this finished group.
    sweep_file = args.out / "lr_sweep.md"
    sweep_file.write_text(
        f"# Per-row learning rates\n\n{_setup_text(args)}; precision {args.precision} on "
        f"{_hardware_text()}; commit {_commit()}.\n\n" + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    return [replace(spec, lr=best[spec.label]) for spec in specs], best, "\n".join(lines)


def rates_from(study: Path, specs: list[RunSpec]) -> tuple[list[RunSpec], dict[str, float]]:
    """``--lr-from``: every row's rate from another per-method study's results.json, so that a variant of that study
    (one difference reverted) isolates the difference instead of mixing in a new sweep's choice."""
    path = study / "results.json"
    try:
        chosen = json.loads(path.read_text(encoding="utf-8"))["lr"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise FileNotFoundError(f"--lr-from: {path} is not a finished study's results.json ({err})") from err
    if not isinstance(chosen, dict):
        raise ValueError(f"--lr-from: {path} has one rate for every row ({chosen}), not a --lr per-method study's")
    rows = dict.fromkeys(spec.label for spec in specs)
    missing = [label for label in rows if label not in chosen]
    if missing:
        raise ValueError(f"--lr-from: {path} has no rate for {missing} (it has {sorted(chosen)})")
    rates = {label: float(chosen[label]) for label in rows}
    return [replace(spec, lr=rates[spec.label]) for spec in specs], rates


def run_all(specs: list[RunSpec], args: argparse.Namespace, title: str) -> list[dict[str, Any]]:
    """Pick the learning rate(s), train every run, then write the table (markdown + JSON) and the plots."""
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    runs_dir = args.runs_dir or args.out / "runs"
    if args.lr_from is not None:
        specs, rates = rates_from(args.lr_from, specs)
        lr, sweep_table = None, ""
        lr_text = f"Learning rate per row, from {args.lr_from}: " + ", ".join(
            f"{label} {rate:g}" for label, rate in rates.items()
        )
    elif args.lr == "per-method":
        specs, rates, sweep_table = per_method_learning_rates(specs, args, runs_dir)
        lr = None
        lr_text = "Learning rate per row: " + ", ".join(f"{label} {rate:g}" for label, rate in rates.items())
    else:
        lr, sweep_table = pick_learning_rate(args)
        rates, lr_text = lr, f"Learning rate {lr:g}"
    train_all(specs, args, lr, args.steps, runs_dir)
    results = collect(specs, args, lr, args.steps, runs_dir)
    rows = [summarise(label, runs) for label, runs in results.items()]
    comparisons = paired_comparisons(results, COMPARED_WITH)
    table = markdown_table(rows, comparisons)
    wall = time.perf_counter() - started
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    text = [
        f"# {title}",
        "",
        f"`{command}`",
        "",
        f"{lr_text}; {_setup_text(args)}; precision {args.precision} on {_hardware_text()}; "
        # A resumed study's runs count only the steps they trained in this invocation.
        f"wall time {wall / 60:.1f} min in this invocation ({args.jobs} job(s) x {args.threads} thread(s)).",
        "",
        table,
        "",
    ]
    if sweep_table:
        text += ["## Learning-rate sweep", "", sweep_table, ""]
    (args.out / "results.md").write_text("\n".join(text), encoding="utf-8")
    summary = {
        "command": command,
        "lr": rates,
        "setup": args.setup,
        "reverted": args.revert,
        "heads_init": _heads_init(args),
        "match_tokens": _match_tokens(args),
        "precision": args.precision,
        "cpu": _cpu_text(),
        "device": _hardware_text(),
        "commit": _commit(),
        "wall_s": wall,
        "rows": rows,
        "comparisons": comparisons,
        "curve_comparisons": curve_comparisons(results, COMPARED_WITH),
        "runs": results,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    plot_curves(results, args.out)
    log.info("%s\nwall time %.1f min; written to %s", table, wall / 60, args.out)
    return rows


def _heads_init(args: argparse.Namespace) -> str:
    """``--heads-init`` (a namespace from before the flag: the default)."""
    return getattr(args, "heads_init", "independent")


def _setup_text(args: argparse.Namespace) -> str:
    copies = (
        "; every sparse ensemble's heads start as copies of head 0 (--heads-init copies: the masks are the only"
        " difference; dense rows keep independent init)"
        if _heads_init(args) == "copies"
        else ""
    )
    if args.setup != "paper":
        return f"nt_llm's setup (embedding std 0.02, heads-only sparsity, every method the same steps){copies}"
    kept = [d for d in SETUP_DIFFERENCES if d not in args.revert]
    reverted = f", reverted to nt_llm's: {', '.join(args.revert)}" if args.revert else ""
    return f"the paper's setup ({', '.join(kept) or 'nothing'}{reverted}){copies}"


def _hardware_text() -> str:
    """What the runs trained on: the CUDA device where the trainer finds one (accelerate's choice), else the CPU."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    return _cpu_text()


def _cpu_text() -> str:
    """The CPU kind results were measured on: its model name and native bf16, which decide the arithmetic."""
    from nt_llm.precision import cpu_native_bf16

    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({cpu_native_bf16() or 'no native bf16'})"


def _commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return result.stdout.strip() or None


def method_specs(names: list[str], seeds: list[int], head_layers: int | None, density: float) -> list[RunSpec]:
    known = methods.names()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {known}")
    if not 0 < density <= 1:
        raise ValueError(f"--density must be in (0, 1], got {density}")
    return [
        RunSpec(
            label=name,
            method=name,
            head_layers=head_layers if methods.get(name).shared_blocks else None,
            density=density if methods.get(name).sparse else 1.0,
            seed=seed,
        )
        for seed in seeds
        for name in names
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--methods", type=lambda t: parse_list(t, str), default=list(METHODS))
    parser.add_argument("--head-layers", type=int, default=None, help="None: two thirds of the blocks")
    parser.add_argument("--density", type=float, default=0.9, help="NeuroTrails head density")
    parser.add_argument(
        "--match-tokens",
        action="store_true",
        help="with --setup paper: every row trains the sparse runs' 1/density steps, so that the baselines see "
        "NeuroTrails' tokens (the control for its longer schedule)",
    )
    args = parser.parse_args(argv)
    return run_cli(args, lambda: method_specs(args.methods, args.seeds, args.head_layers, args.density), "Reproduction")


# A study's own outputs beside run_all's (the sweep's grid), from its run specs and the rows run_all wrote.
StudyReport = Callable[[list[RunSpec], list[dict[str, Any]]], None]


def budget(args: argparse.Namespace) -> str:
    """The study's tokens per run as its report's title names them ("300 steps x 8 x 256 tokens", and the
    sparse runs' longer schedule where the paper's setup gives them one)."""
    text = f"{args.steps} steps x {args.batch} x {args.seq_len} tokens"
    if paper_setting(args, "longer"):
        who = "every run, tokens matched" if _match_tokens(args) else "sparse ensembles"
        text += f" ({who}: 1/density of the steps)"
    return text


def run_cli(
    args: argparse.Namespace, make_specs: Callable[[], list[RunSpec]], title: str, report: StudyReport | None = None
) -> int:
    """The body of this module's and its siblings' (sweep, ablate) mains: check, train, report (then ``report``, when
    given, adds the study's own outputs); bad input exits 2. ``make_specs`` runs before anything trains, so that the
    checks it makes refuse a study early."""
    try:
        check_arguments(args)
        specs = make_specs()
        rows = run_all(specs, args, f"{title} at {args.size}: {budget(args)}")
        if report is not None:
            report(specs, rows)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        log.error("%s", err)
        return EXIT_BAD_INPUT
    return 0
