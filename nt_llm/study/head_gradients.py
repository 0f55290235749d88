"""How far the heads agree on what the shared weights should do: per-head gradients on the backbone and embedding.

For a model with shared blocks, each head h has its own loss L_h, and the shared weights get the sum of the heads'
gradients g_h = dL_h/dθ_shared. Printed per model (a checkpoint's ``model/`` folder, an export, or a fresh model of
a size), on a few batches of the validation split:
- the mean pairwise cosine of the g_h (1: the heads ask for the same change; 0: unrelated directions);
- alignment = |sum_h g_h| / sum_h |g_h| (1: aligned; 1/sqrt(H): orthogonal; toward 0: cancelling), i.e. how much of
  the heads' gradient survives in the shared update.

    nt-llm head-gradients --size cpu-4m --method treenet                      # at initialisation
    nt-llm head-gradients --model out/reproduce/runs/treenet_s0/checkpoints/step_300/model
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
from pathlib import Path

import torch

from nt_llm import methods
from nt_llm.cli.common import EXIT_BAD_INPUT
from nt_llm.data import build_tokenizer, build_validation_set, vocab_size_of
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config
from nt_llm.study.reproduce import STUDY_DATA
from nt_llm.train.recipe import load_section

log = logging.getLogger(__name__)


def shared_parameters(model: NeuroTrailsForCausalLM) -> list[torch.nn.Parameter]:
    """Every trainable weight outside the heads: the embedding(s) and the backbone blocks."""
    return [p for n, p in model.named_parameters() if not n.startswith("heads.")]


def head_gradients(model: NeuroTrailsForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[H, P]``: each head's loss gradient on the shared weights, flattened."""
    params = shared_parameters(model)
    if not params:
        raise ValueError("the model shares no weights between its heads (a full ensemble): nothing to compare")
    out = model(**batch, use_cache=False, return_logits=False)
    rows = []
    for h in range(out.head_losses.shape[0]):
        grads = torch.autograd.grad(out.head_losses[h], params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)]
            )
        )
    return torch.stack(rows).double()


def agreement(grads: torch.Tensor) -> dict[str, float]:
    """Mean pairwise cosine and the alignment |sum g| / sum |g| of ``[H, P]`` gradients."""
    norms = grads.norm(dim=1)
    cosines = [
        float(grads[i] @ grads[j] / (norms[i] * norms[j])) for i, j in itertools.combinations(range(len(grads)), 2)
    ]
    return {"mean_cosine": sum(cosines) / len(cosines), "alignment": float(grads.sum(0).norm() / norms.sum())}


def load_model(args: argparse.Namespace, vocab_size: int) -> NeuroTrailsForCausalLM:
    if args.model is not None:
        return NeuroTrailsForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    torch.manual_seed(args.seed)
    return NeuroTrailsForCausalLM(build_config(args.size, args.method, vocab_size=vocab_size))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model folder (checkpoint model/ or export)")
    parser.add_argument("--size", default="cpu-4m", help="without --model: a fresh model of this size")
    # The methods whose heads share blocks: a whole-depth ensemble shares no weights to compare gradients on.
    shared = tuple(name for name in methods.names() if methods.get(name).shared_blocks)
    parser.add_argument("--method", default="treenet", choices=shared)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data", type=Path, default=None, help="a YAML of data-section fields (default: the study's, see reproduce)"
    )
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--output", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    try:
        data = STUDY_DATA if args.data is None else load_section(args.data, "data")
        cfg = dataclasses.replace(
            data, batch_size=args.batch_size, validation_tokens=args.batches * args.batch_size * data.seq_len
        )
        tokenizer = build_tokenizer(cfg)
        model = load_model(args, vocab_size_of(tokenizer))
        per_batch = [agreement(head_gradients(model, batch)) for batch in build_validation_set(cfg, tokenizer)]
    except (OSError, ValueError) as err:
        log.error("%s", err)
        return EXIT_BAD_INPUT
    result = {key: sum(b[key] for b in per_batch) / len(per_batch) for key in per_batch[0]}
    result["batches"] = len(per_batch)
    log.info(
        "%s: mean pairwise cosine %.3f, alignment %.3f (1/sqrt(H) = %.3f: orthogonal) over %d batches",
        args.model or f"fresh {args.method} {args.size}",
        result["mean_cosine"],
        result["alignment"],
        model.config.ensemble_size**-0.5,
        len(per_batch),
    )
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0
