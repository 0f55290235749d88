"""``nt-llm export`` (also installed as ``nt-export``): a run's checkpoint as a standalone Hugging Face folder, and
optionally pushed to the Hub (nt_llm.export).

    nt-llm export CHECKPOINT OUT [--heads 0,2 | --single-head H] [--dtype bf16|fp32] [--max-position-embeddings N]
                  [--license L] [--max-shard-size 2GB] [--push-to-hub REPO_ID [--private] [--revision BRANCH]
                  [--commit-message MSG]] [--overwrite]

Exit status: 0 on success, 2 when the checkpoint, OUT or an option cannot be used, 3 when the push failed (the
export at OUT is then complete and kept).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nt_llm.cli.common import EXIT_BAD_INPUT, setup_logging

SUMMARY = "a run's checkpoint as a standalone Hugging Face folder (and the Hub)"
EXIT_PUSH_FAILED = 3
logger = logging.getLogger(__name__)


def _head_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--heads wants comma-separated head indices like 0,2, got {text!r}") from err


def build_parser() -> argparse.ArgumentParser:
    from nt_llm.export import DTYPES  # here, not at the top: see nt_llm.cli

    parser = argparse.ArgumentParser(description=SUMMARY)
    parser.add_argument("checkpoint", type=Path, help="a step_<N> checkpoint, a run folder, or a NeuroTrails model")
    parser.add_argument("out", type=Path, help="the folder to write (must not exist unless --overwrite)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--heads", type=_head_list, help="keep these heads only (k of H), e.g. 0,2")
    which.add_argument("--single-head", type=int, metavar="H", help="export head H alone as a plain LlamaForCausalLM")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="cast the weights (and config.json's dtype) to this; default: keep the checkpoint's dtype (fp32, or bf16 "
        "from a bf16-true or DeepSpeed bf16 run), as exports always have",
    )
    parser.add_argument(
        "--max-position-embeddings",
        type=int,
        metavar="N",
        help="context length in config.json (default: the training seq_len)",
    )
    parser.add_argument("--license", default="apache-2.0", help="license in the model card (default apache-2.0)")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (default 5GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    hub_args = parser.add_argument_group("Hugging Face Hub (token: HF_TOKEN or `hf auth login`)")
    hub_args.add_argument("--push-to-hub", metavar="REPO_ID", help="push the export to this model repo")
    hub_args.add_argument("--private", action="store_true", help="create the repo private")
    hub_args.add_argument("--revision", metavar="BRANCH", help="push to this branch (created from main)")
    hub_args.add_argument("--commit-message", metavar="MSG", help="default: 'nt_llm: step N (export)'")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.push_to_hub and (args.private or args.revision or args.commit_message):
        parser.error("--private, --revision and --commit-message need --push-to-hub")
    setup_logging()
    from nt_llm import export, hub
    from nt_llm.console import hide_deepspeed_cpu_notice
    from nt_llm.trained import TrainedModelError

    hide_deepspeed_cpu_notice()
    try:
        options = export.ExportOptions(
            heads=args.heads,
            single_head=args.single_head,
            dtype=args.dtype,
            max_position_embeddings=args.max_position_embeddings,
            license=args.license,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
        )
        push = (
            export.PushOptions(
                repo_id=args.push_to_hub,
                private=args.private,
                revision=args.revision,
                commit_message=args.commit_message,
            )
            if args.push_to_hub
            else None
        )
        result = export.export(args.checkpoint, args.out, options, push)
    except (export.ExportError, TrainedModelError, hub.NotAModelFolderError) as err:
        logger.error("%s", err)
        return EXIT_BAD_INPUT
    except hub.HubPushError as err:
        logger.error("%s", err)
        return EXIT_PUSH_FAILED
    if result.commit is not None:
        logger.info("pushed to %s", result.commit.commit_url)
    return 0
