"""Perplexity (ensemble and per head) and head diversity of a model on any text, jsonl or parquet file.

    python -m nt_llm.evaluation MODEL FILE [FILE ...] [--max-tokens N] [--batch-size B] [--seq-len T]
                                [--text-field F] [--format F] [--output OUT.json] [--device D]

MODEL is an exported folder (ensemble, head subset or single head), a training checkpoint (``step_<N>``: its
``model/`` folder, with the DST masks applied as export applies them) or a run folder (its newest complete
checkpoint). The files are read by nt_llm.data exactly as training reads validation files: the model's own
tokenizer, documents packed into rows of T tokens (T defaults to the length the model was trained for), the
first N tokens. The metrics are those training logs at each evaluation; a markdown table goes to stdout,
``--output`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from nt_llm.console import hide_deepspeed_cpu_notice
from nt_llm.data import DataConfig, ValidationSet, build_tokenizer, build_validation_set
from nt_llm.data.config import FILE_FORMATS, TEXT_SAMPLE_BY
from nt_llm.data.sources import infer_file_format, resolve_files
from nt_llm.evaluation.ensemble import ACCELERATOR_CHUNK_TOKENS, CPU_CHUNK_TOKENS, evaluate
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.trained import TrainedModel, TrainedModelError, open_trained

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
# The paper's validation budget: more than most local files hold, so by default a file is read whole.
DEFAULT_MAX_TOKENS = 10_000_000


class EvalInputError(ValueError):
    """The model or the data cannot be evaluated; the message names the path, option or value."""


@dataclass
class LoadedModel:
    model: torch.nn.Module  # returns logits and head_logits, as `evaluate` wants
    tokenizer: PreTrainedTokenizerBase
    source: TrainedModel
    heads: int
    context: int  # the sequence length it was trained for


class SingleModel(torch.nn.Module):
    """A plain causal LM (a single-head export is a LlamaForCausalLM) seen as an ensemble of one head."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *, output_head_logits: bool = False, **kwargs: Any) -> Any:
        out = self.model(**kwargs)
        if output_head_logits:
            out.head_logits = out.logits[None]  # [1, B, T, V]: a view, no copy
        return out


# ---- the model -------------------------------------------------------------------------------------------


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """MODEL opened by nt_llm.trained (an export or any causal LM folder, a checkpoint, a run folder), loaded in
    fp32 with a checkpoint's DST masks applied as export applies them. A MODEL that cannot be opened raises
    TrainedModelError, one that does not load EvalInputError."""
    source = open_trained(path)
    try:
        if source.is_neurotrails:
            # nt_llm's own class: the same code an export carries, without trusting the folder's copy of it.
            model = NeuroTrailsForCausalLM.from_pretrained(source.model_dir, dtype=torch.float32)
        else:
            model = SingleModel(AutoModelForCausalLM.from_pretrained(source.model_dir, dtype=torch.float32))
    except (OSError, ValueError, KeyError) as err:
        raise EvalInputError(f"cannot load a causal LM from {source.model_dir}: {err}") from err
    masked = source.apply_masks(model.state_dict())
    if masked:
        logger.warning(
            "%s: %d weights the DST masks switch off were not 0; evaluating them as 0, as export does",
            source.model_dir,
            masked,
        )
    tokenizer = _tokenizer(source.model_dir)
    heads = model.config.ensemble_size if isinstance(model, NeuroTrailsForCausalLM) else 1
    config = model.model.config if isinstance(model, SingleModel) else model.config
    context = source.context or int(config.max_position_embeddings)
    return LoadedModel(model.to(device).eval(), tokenizer, source, heads, context)


def _tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    try:
        tokenizer = build_tokenizer(DataConfig(tokenizer=str(model_dir)))
    except (OSError, ValueError) as err:
        raise EvalInputError(f"{model_dir} has no usable tokenizer: {err}") from err
    # Packing tokenizes whole documents and cuts rows itself; the folder's limit (the context) would only
    # warn of "indexing errors" that cannot happen.
    tokenizer.model_max_length = sys.maxsize
    return tokenizer


# ---- the data --------------------------------------------------------------------------------------------


def data_files(patterns: list[str], file_format: str | None) -> list[str]:
    """The files the patterns name; each must exist, hold something, and have a known format."""
    try:
        files = resolve_files(patterns, "data file")
    except FileNotFoundError as err:
        raise EvalInputError(str(err)) from err
    for name in files:
        if Path(name).stat().st_size == 0:
            raise EvalInputError(f"data file {name} is empty")
        if file_format is None:
            try:
                infer_file_format(name)
            except ValueError as err:
                raise EvalInputError(f"{err} (here: --format)") from err
    return files


def validation_batches(
    files: list[str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    seq_len: int,
    batch_size: int,
    max_tokens: int,
    text_field: str,
    file_format: str | None,
    text_sample_by: str,
) -> ValidationSet:
    """The first `max_tokens` tokens of `files`, packed, as training's validation set would read them."""
    try:
        cfg = DataConfig(
            source="files",
            train_files=files,
            validation_files=files,
            file_format=file_format,
            text_field=text_field,
            text_sample_by=text_sample_by,
            tokenizer=tokenizer.name_or_path,
            seq_len=seq_len,
            mode="pack",
            batch_size=batch_size,
            validation_tokens=max_tokens,
            prefetch=0,
        )  # train_files: DataConfig wants both splits; only validation is read
        return build_validation_set(cfg, tokenizer)
    except KeyError as err:  # a text field the files do not have; the message names field, file and columns
        raise EvalInputError(f"{err.args[0]} (--text-field)") from err
    except (ValueError, OSError, StopIteration, datasets.exceptions.DatasetGenerationError) as err:
        raise EvalInputError(
            f"cannot read text to evaluate from {', '.join(files)}: {err or type(err).__name__}"
        ) from err


def _with_progress(batches: ValidationSet) -> Iterator[dict[str, torch.Tensor]]:
    """The batches, with a progress bar in tokens on stderr (none when stderr is not a terminal)."""
    with tqdm(total=batches.num_tokens, unit="tok", unit_scale=True, desc="evaluating", disable=None) as bar:
        for batch in batches:
            yield batch
            bar.update(int(batch["attention_mask"].sum()))


# ---- report ----------------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    metrics = report["metrics"]
    heads = report["heads"]
    name = f"ensemble of {heads} heads (averaged logits)" if heads > 1 else "model (one head)"
    lines = [
        "| model | loss | perplexity |",
        "| --- | --- | --- |",
        f"| {name} | {metrics['ensemble_loss']:.4f} | {metrics['ensemble_ppl']:.2f} |",
    ]
    if heads > 1:
        lines += [
            f"| head {h} | {metrics[f'head{h}_loss']:.4f} | {metrics[f'head{h}_ppl']:.2f} |" for h in range(heads)
        ]
        lines += [
            "",
            "| diversity | value |",
            "| --- | --- |",
            f"| ensemble gain (mean head loss - ensemble loss, nats) | {metrics['ensemble_gain']:.4f} |",
            f"| disagreement (top-1, over head pairs) | {metrics['disagreement']:.4f} |",
            f"| pairwise KL (mean over ordered head pairs, nats) | {metrics['pairwise_kl']:.4f} |",
        ]
    step = f" (step {report['step']})" if report["step"] is not None else ""
    lines += [
        "",
        f"{int(metrics['val_tokens']):,} predicted tokens of {', '.join(report['files'])}, "
        f"rows of {report['seq_len']} tokens; model {report['model']}{step}",
    ]
    return "\n".join(lines)


# ---- command line ----------------------------------------------------------------------------------------


def _at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _device(text: str) -> torch.device:
    try:
        return torch.device(text)
    except RuntimeError as err:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} ({err})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nt_llm.evaluation",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 on success, 2 when the model, the files or an option cannot be used.",
    )
    parser.add_argument(
        "model",
        type=Path,
        metavar="MODEL",
        help="an exported model folder, a step_<N> checkpoint, or a run folder (newest checkpoint)",
    )
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="text (.txt), JSON lines (.jsonl/.json), .parquet or .arrow files; glob patterns work",
    )
    parser.add_argument(
        "--max-tokens",
        type=_at_least(1),
        default=DEFAULT_MAX_TOKENS,
        metavar="N",
        help=f"evaluate the first N tokens of the files (default {DEFAULT_MAX_TOKENS:,}: the whole file for most)",
    )
    parser.add_argument("--batch-size", type=_at_least(1), default=8, metavar="B", help="rows per batch (default 8)")
    parser.add_argument(
        "--seq-len",
        type=_at_least(2),
        metavar="T",
        help="tokens per row (default: the length the model was trained for)",
    )
    parser.add_argument(
        "--text-field",
        default="text",
        metavar="NAME",
        help="column holding the text in jsonl/parquet/arrow files (default 'text')",
    )
    parser.add_argument(
        "--format", choices=FILE_FORMATS, dest="file_format", help="file format when the extension does not tell it"
    )
    parser.add_argument(
        "--text-sample-by",
        choices=TEXT_SAMPLE_BY,
        default="paragraph",
        help="plain text: one document per line, blank-line-separated paragraph (default) or file",
    )
    parser.add_argument("--output", type=Path, metavar="FILE.json", help="also write the results as JSON here")
    parser.add_argument(
        "--device", type=_device, default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument(
        "--chunk-tokens",
        type=_at_least(1),
        metavar="N",
        help=f"token positions per forward pass and per fp32 slab of [heads, N, vocab] "
        f"(default {CPU_CHUNK_TOKENS} on cpu, {ACCELERATOR_CHUNK_TOKENS} on accelerators)",
    )
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as the parsed command line says; returns the report (raises EvalInputError on bad input, or
    TrainedModelError for a MODEL that cannot be opened)."""
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvalInputError(f"--device {device}: this torch sees no CUDA device")
    files = data_files(args.files, args.file_format)
    loaded = load_model(args.model, device)
    seq_len = args.seq_len or loaded.context
    if seq_len > loaded.context:
        logger.warning("--seq-len %d is longer than the %d tokens the model was trained for", seq_len, loaded.context)
    batches = validation_batches(
        files,
        loaded.tokenizer,
        seq_len=seq_len,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        text_field=args.text_field,
        file_format=args.file_format,
        text_sample_by=args.text_sample_by,
    )
    metrics = evaluate(loaded.model, _with_progress(batches), device, chunk_tokens=args.chunk_tokens)
    step = loaded.source.step
    return {
        "model": str(args.model),
        "step": step,
        "heads": loaded.heads,
        "files": files,
        "seq_len": seq_len,
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens,
        "metrics": metrics,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hide_deepspeed_cpu_notice()
    try:
        report = run(args)
    except (EvalInputError, TrainedModelError) as err:
        logger.error("%s", err)
        return EXIT_BAD_INPUT
    if args.output is not None:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            logger.error("cannot write --output %s: %s", args.output, err)
            return EXIT_BAD_INPUT
    sys.stdout.write(markdown(report) + "\n")
    return 0
