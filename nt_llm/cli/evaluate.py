"""``nt-llm evaluate MODEL FILE [FILE ...]``: perplexity (ensemble and per head) and head diversity of a model on any
text, jsonl or parquet file (also ``python -m nt_llm.evaluation``).

    nt-llm evaluate MODEL FILE [FILE ...] [--max-tokens N] [--batch-size B] [--seq-len T]
                    [--text-field F] [--format F] [--output OUT.json] [--device D]

MODEL is an exported folder (ensemble, head subset or single head), a training checkpoint (``step_<N>``: its
``model/`` folder, with the DST masks applied as export applies them) or a run folder (its newest complete
checkpoint). The files are read as training reads validation files (nt_llm.evaluation.inputs): T defaults to the
length the model was trained for, and the first N tokens are evaluated. The metrics are those training logs at each
evaluation; a markdown table goes to stdout, ``--output`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from nt_llm.cli.common import EXIT_BAD_INPUT, setup_logging

SUMMARY = "perplexity, per-head perplexity and diversity on a file"
# The paper's validation budget: more than most local files hold, so by default a file is read whole.
DEFAULT_MAX_TOKENS = 10_000_000
logger = logging.getLogger(__name__)


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
    # Here, not at the top: see nt_llm.cli.
    from nt_llm.data.config import FILE_FORMATS, TEXT_SAMPLE_BY
    from nt_llm.evaluation.ensemble import ACCELERATOR_CHUNK_TOKENS, CPU_CHUNK_TOKENS

    parser = argparse.ArgumentParser(
        description=SUMMARY,
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
    from nt_llm.evaluation import evaluate
    from nt_llm.evaluation.inputs import EvalInputError, data_files, load_model, validation_batches, with_progress

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
    metrics = evaluate(loaded.model, with_progress(batches), device, chunk_tokens=args.chunk_tokens)
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
    setup_logging()
    from nt_llm.console import hide_deepspeed_cpu_notice
    from nt_llm.evaluation.inputs import EvalInputError
    from nt_llm.trained import TrainedModelError

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
