"""The model's head path against the paper's plain loop of models: one training step (forward + backward).

The baseline is written here from the description of the paper's code: it builds H+1 whole LLaMA models and
slices them, the first one's lower blocks being the backbone and each other one's upper blocks a head, then
loops over them in Python; a head's final norm runs twice (inside its LlamaModel, and again before its LM head).
nt_llm builds every module once and runs the backbone once, then each head's transformers modules in turn.
Both compute the sum of the heads' causal-LM losses: the loop from each head's whole logits through autograd,
nt_llm's training forward (``return_logits=False``) with ``linear_cross_entropy`` (loss and gradients in the
forward, no logits kept).

The two alternate step by step and the medians are compared, for each precision within the same run (fp32, and
bf16 under autocast with fp32 weights, as in training), so both see the same machine load. On the CPU the
process time is reported beside the wall time: on a shared machine it is the steadier number.

    python bench/bench_heads.py --size 60m --batch 8 --seq 256 --steps 3 --threads 1
"""

import argparse
import logging
from collections.abc import Callable

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from nt_llm.benchmarking import Sample, host_memory, median, timed
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import METHODS, build_config

log = logging.getLogger("bench_heads")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
PATHS = ("nt_llm", "paper_loop")
NEUROTRAILS_ONLY = ("ensemble_size", "head_layers", "share_embeddings", "model_type", "architectures", "auto_map")


class PaperLoop(nn.Module):
    """The paper's layout: whole ``LlamaForCausalLM`` s sliced into a backbone and H heads, run one after another.

    A full ensemble (nothing shared) is H whole models and no backbone.
    """

    def __init__(self, config: NeuroTrailsConfig):
        super().__init__()
        fields = {k: v for k, v in config.to_dict().items() if k not in NEUROTRAILS_ONLY}
        llama = LlamaConfig(**fields)
        shared = config.num_shared_layers
        self.backbone = None
        if config.share_embeddings:
            self.backbone = LlamaForCausalLM(llama)
            self.backbone.model.layers = self.backbone.model.layers[:shared]
            self.backbone.model.norm = nn.Identity()  # the heads' blocks take the raw backbone output
        self.heads = nn.ModuleList(LlamaForCausalLM(llama) for _ in range(config.ensemble_size))
        for head in self.heads:
            head.model.layers = head.model.layers[shared:]

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.backbone is not None:
            hidden = self.backbone.model(input_ids=input_ids, use_cache=False).last_hidden_state
        losses = []
        for head in self.heads:
            if self.backbone is None:
                out = head.model(input_ids=input_ids, use_cache=False).last_hidden_state
            else:
                out = head.model(inputs_embeds=hidden, use_cache=False).last_hidden_state
            logits = head.lm_head(head.model.norm(out))  # the final norm a second time, as the paper's code does
            losses.append(head.loss_function(logits=logits, labels=labels, vocab_size=head.config.vocab_size))
        return torch.stack(losses).sum()


def training_step(loss_of: Callable[[], torch.Tensor], dtype: torch.dtype, device: torch.device) -> Callable[[], None]:
    """One forward (under autocast unless fp32) and backward."""

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_of()
        loss.backward()

    return step


def measure(args: argparse.Namespace, config: NeuroTrailsConfig, dtype: torch.dtype) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds per step of each path, alternating paths step by step (step 0 warms up)."""
    device = torch.device(args.device)
    model = NeuroTrailsForCausalLM(config).to(device).train()
    paper = PaperLoop(config).to(device).train()
    input_ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=device)
    losses = {
        "nt_llm": lambda: (
            model(
                input_ids, labels=input_ids, use_cache=False, return_logits=False, loss_chunk_size=args.loss_chunk_size
            ).loss
        ),
        "paper_loop": lambda: paper(input_ids, input_ids),
    }
    samples: dict[str, list[Sample]] = {path: [] for path in PATHS}
    for step in range(args.steps + 1):
        for path in PATHS:
            model.zero_grad(set_to_none=True)
            paper.zero_grad(set_to_none=True)
            sample = timed(training_step(losses[path], dtype, device), device)
            if step:
                samples[path].append(sample)
    return {path: vars(median(samples[path])) for path in PATHS}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="60m", help="a model size name or a YAML file of LlamaConfig fields")
    parser.add_argument("--method", choices=METHODS, default="neurotrails")
    parser.add_argument("--ensemble-size", type=int, default=3)
    parser.add_argument("--head-layers", type=int, default=None, help="default: the paper's two-thirds split")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per path and precision, after one warm-up")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    parser.add_argument("--loss-chunk-size", type=int, default=0, help="nt_llm's loss_chunk_size (0: all rows at once)")
    parser.add_argument(
        "--release-host-memory",
        action="store_true",
        help="glibc's default on the CPU (freed blocks over 32 MiB go back to the kernel), not the trainer's",
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    memory = host_memory(torch.device(args.device), args.release_host_memory)
    config = build_config(args.size, args.method, ensemble_size=args.ensemble_size, head_layers=args.head_layers)
    log.info(
        "size=%s method=%s H=%d head_layers=%d of %d batch=%dx%d device=%s torch=%s threads=%d steps=%d host_memory=%s",
        args.size,
        args.method,
        config.ensemble_size,
        config.head_layers,
        config.num_hidden_layers,
        args.batch,
        args.seq,
        args.device,
        torch.__version__,
        args.threads,
        args.steps,
        memory,
    )
    tokens = args.batch * args.seq
    results = {}
    for precision in args.precision:
        times = measure(args, config, PRECISIONS[precision])
        for path in PATHS:
            t = times[path]
            log.info(
                "%s %-10s wall %7.3f s/step (%7.0f tokens/s)   cpu %7.3f s/step",
                precision,
                path,
                t["wall"],
                tokens / t["wall"],
                t["cpu"],
            )
        speedup = {kind: times["paper_loop"][kind] / times["nt_llm"][kind] for kind in ("wall", "cpu")}
        log.info(
            "%s paper_loop / nt_llm: wall %.3fx  cpu %.3fx  (>1: nt_llm is faster)",
            precision,
            speedup["wall"],
            speedup["cpu"],
        )
        results[precision] = {**times, "speedup": speedup}
    return results


if __name__ == "__main__":
    main()
