"""The training loop: Accelerate throughout, the DST hook around the optimizer step, exact resume.

One process or many (DDP, DeepSpeed ZeRO-1/2/3): the launcher (``accelerate launch`` or ``torchrun``) decides;
this code only asks the Accelerator. Shapes: a micro-batch is ``[data.batch_size, data.seq_len]`` per process,
``optim.total_batch_size`` sequences make one optimizer step.
"""

import logging
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import InitProcessGroupKwargs, set_seed
from tqdm.auto import tqdm

from nt_llm import checkpoint as ckpt
from nt_llm.data import build_tokenizer, build_train_batches, build_validation_set, vocab_size_of
from nt_llm.evaluation import evaluate
from nt_llm.flops import matmul_peak_flops, training_flops_per_token
from nt_llm.host_memory import keep_freed_memory
from nt_llm.methods import ShapeError, shape_for
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import load_size
from nt_llm.precision import PrecisionError, main_process_choice, resolve_precision
from nt_llm.sparse import DynamicSparsity
from nt_llm.train.callbacks import HubPush
from nt_llm.train.fsdp import fsdp_requested, saveable, use_fsdp_on_cpu
from nt_llm.train.init_from import config_from_source, load_source_weights
from nt_llm.train.metrics import (
    LOG_FILE,
    TERMINAL,
    MetricsLog,
    RunLog,
    new_tracker_run_id,
    progress_postfix,
    resolve_trackers,
    throughput_metrics,
    tracker_init_kwargs,
)
from nt_llm.train.recipe import Recipe, RecipeError, save_recipe
from nt_llm.train.schedule import lr_at

logger = logging.getLogger(__name__)

# What must match between a checkpoint and the run resuming from it (beyond the model's shape), and what under
# those may differ: how the same model executes. Derived values (sparsity.total_steps) are not in a saved recipe,
# so a resume may extend optim.max_steps and the topology schedule stretches to the new end.
RESUME_MUST_MATCH = (
    "model",
    "sparsity",
    "data.source",
    "data.hub",  # which dataset, split and column: the saved position is a position in it
    "data.mix",
    "data.seq_len",
    "data.mode",
    "data.batch_size",
    "data.seed",
)
RESUME_MAY_DIFFER = ("model.compile", "model.compile_mode", "model.compile_backend")
# Recipe keys only checkpoints of earlier nt_llm versions (before December 2026) carry: their recipe form differs
# (the model section's config_overrides, head_execution, a saved sparsity.total_steps), so they are refused by
# name instead of through a list of differing keys.
LEGACY_RECIPE_KEYS = ("model.head_execution", "model.config_overrides", "sparsity.total_steps")
# Devices with torch's fused AdamW kernel (CPU since torch 2.4).
FUSED_ADAMW_DEVICES = ("cuda", "cpu", "xpu", "mps")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path | None
    step: int
    metrics: dict[str, float]  # the final evaluation
    interrupted: bool = False


# Called on the main process with each checkpoint once it is complete (renamed into place, old ones pruned).
CheckpointCallback = Callable[[ckpt.Checkpoint], None]


def train(
    recipe: Recipe,
    resume: str | None = None,
    restart: bool = False,
    on_checkpoint: Sequence[CheckpointCallback] = (),
) -> TrainResult:
    """Run (or resume) the recipe; returns where the final checkpoint is and the final metrics.

    ``resume``: ``"latest"`` or a checkpoint folder. A run folder that holds a previous run is refused without
    ``resume``, unless ``restart``, which moves that run aside (``<folder>.previous-<date>-<time>``) first.
    ``on_checkpoint``: called with each saved checkpoint, after ``checkpoint.push_to_hub``'s export of it; the upload
    runs in the background and is waited for before this returns (also when the run stops early or fails).
    """
    options = recipe.checkpoint
    pushes = [HubPush(options.push_to_hub, options.hub_private, options.hub_revision)] if options.push_to_hub else []
    try:
        return Trainer(recipe).run(resume, restart=restart, on_checkpoint=[*pushes, *on_checkpoint])
    finally:
        for push in pushes:  # a failed upload is logged by name; the local checkpoints stay either way
            push.close()


class Trainer:
    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.output_dir = Path(recipe.run.output_dir)
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.grad_accum = recipe.gradient_accumulation(world_size)
        # Several processes on CPU: accelerate must be told gloo (or it believes DeepSpeed runs alone) and, for
        # DDP, cpu=True (or it leaves the model unwrapped and the processes never synchronise).
        distributed_cpu = world_size > 1 and not torch.cuda.is_available()
        deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        handlers = [InitProcessGroupKwargs(backend="gloo")] if distributed_cpu else []
        cpu = distributed_cpu and not deepspeed
        self.trackers = resolve_trackers(recipe.logging.trackers)
        # The process group before the Accelerator, which takes the precision: auto's choice, made on each
        # process's own CPU, becomes the main process's on all (the Accelerator then reuses this state).
        PartialState(cpu=cpu, **(handlers[0].to_kwargs() if handlers else {}))
        try:
            local = resolve_precision(recipe.optim.precision, _device_type(distributed_cpu), deepspeed)
        except PrecisionError as err:
            raise RecipeError(str(err)) from err
        self.precision = main_process_choice(local)
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=self.precision.mixed_precision,
            gradient_accumulation_steps=self.grad_accum,
            log_with=self.trackers or None,
            project_dir=str(self.output_dir),
            kwargs_handlers=handlers,
        )
        if distributed_cpu and fsdp_requested():  # accelerate turns FSDP on for accelerator devices only
            use_fsdp_on_cpu(self.accelerator, self.precision.mixed_precision)
        unsynchronised = world_size > 1 and self.accelerator.distributed_type.name == "NO"
        if self.accelerator.num_processes != world_size or unsynchronised:
            raise RuntimeError(
                f"the launcher set WORLD_SIZE={world_size} but accelerate runs {self.accelerator.num_processes} "
                f"process(es) as {self.accelerator.distributed_type.name}: on CPU launch with torchrun, or "
                "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu"
            )
        self.metrics = MetricsLog(self.accelerator, self.output_dir, self.trackers)
        self._stop_requested = False
        if recipe.run.keep_freed_host_memory and self.accelerator.device.type == "cpu" and keep_freed_memory():
            logger.info("host memory: glibc keeps freed memory in the process (run.keep_freed_host_memory)")

    # ---- setup ---------------------------------------------------------------------------------

    def _build(self, resume_from: ckpt.Checkpoint | None = None) -> None:
        recipe, accelerator = self.recipe, self.accelerator
        set_seed(recipe.run.seed)  # identical initial weights on every process
        logger.info("precision: %s (%s)", self.precision.name, self.precision.reason)
        try:
            self.tokenizer = build_tokenizer(recipe.data)
        except (OSError, ValueError) as err:  # no such folder or Hub id, no EOS: the recipe names a bad tokenizer
            raise RecipeError(f"data.tokenizer: {err}") from err
        self.model_config = model_config(recipe, self.tokenizer, resume_from)
        if recipe.data.seq_len > self.model_config.max_position_embeddings:
            raise RecipeError(
                f"data.seq_len ({recipe.data.seq_len}) exceeds the model's max_position_embeddings "
                f"({self.model_config.max_position_embeddings})"
            )
        model = NeuroTrailsForCausalLM(self.model_config)
        load_source_weights(model, recipe.model.init_from, resuming=resume_from is not None)
        # bf16-true: weights, gradients and the optimizer's state in bf16 (built below from these parameters).
        model.to(self.precision.weight_dtype)
        if recipe.model.activation_checkpointing:
            model.activation_checkpointing_enable()
        if recipe.model.compile:
            # In place: the module keeps its class and parameter names (DST patterns, checkpoints, export). It
            # compiles at its first call, again for evaluation (eval mode) and for a new batch shape.
            try:
                model.compile(mode=recipe.model.compile_mode, backend=recipe.model.compile_backend)
            except RuntimeError as err:  # dynamo's InvalidBackend: a name torch._dynamo.list_backends() lacks
                raise RecipeError(f"model.compile_backend: {err}") from err
        optimizer = build_optimizer(model, recipe, accelerator.device)
        self._configure_deepspeed()
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        # Every linear weight runs a dense matmul, masked or not: the FLOPs the hardware executes.
        self.flops_per_token = training_flops_per_token(self.model_config, recipe.data.seq_len)
        self.matmul_peak = self._matmul_peak()
        self.sparsity = None
        if recipe.sparsity is not None:
            self.sparsity = DynamicSparsity(self.model, recipe.sparsity, self.optimizer)
            accelerator.register_for_checkpointing(self.sparsity)
        rank, world = accelerator.process_index, accelerator.num_processes
        try:
            self.train_batches = build_train_batches(recipe.data, self.tokenizer, rank, world)
            self.validation = build_validation_set(recipe.data, self.tokenizer, rank, world)
        except (OSError, ValueError, KeyError) as err:  # files missing, empty or unreadable, a column absent
            raise RecipeError(f"data: {err.args[0] if isinstance(err, KeyError) else err}") from err

    def _matmul_peak(self) -> float | None:
        """On CUDA, the measured matmul FLOP/s of one device in the training's compute dtype (MFU's denominator);
        elsewhere None: a CPU's matmul rate depends on threads and load too much to be a peak."""
        device = self.accelerator.device
        if device.type != "cuda":
            return None
        dtype = self.precision.compute_dtype
        peak = matmul_peak_flops(device, dtype)
        logger.info("mfu is against a measured %s matmul peak of %.1f TFLOP/s per device", dtype, peak / 1e12)
        return peak

    def _configure_deepspeed(self) -> None:
        """Fill what accelerate cannot infer without a DataLoader (micro-batch size, clipping); nothing without
        DeepSpeed."""
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            return
        config = plugin.deepspeed_config
        for key, value in (
            ("train_micro_batch_size_per_gpu", self.recipe.data.batch_size),
            ("gradient_accumulation_steps", self.grad_accum),
            ("gradient_clipping", self.recipe.optim.grad_clip),
        ):
            if config.get(key, "auto") == "auto":
                config[key] = value
        config.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world size
        zero = config.setdefault("zero_optimization", {})
        if int(zero.get("stage", 0)) == 3:
            # Checkpoints carry a whole Hugging Face model folder: ZeRO-3 must gather the weights to write it.
            zero["stage3_gather_16bit_weights_on_model_save"] = True

    # ---- the loop ------------------------------------------------------------------------------

    def run(
        self, resume: str | None, restart: bool = False, on_checkpoint: Sequence[CheckpointCallback] = ()
    ) -> TrainResult:
        """Check the run folder and the resume, build, and only then write into the folder and train."""
        main = self.accelerator.is_main_process
        self.run_dir = ckpt.RunDir(self.output_dir)
        self.on_checkpoint = list(on_checkpoint)
        with RunLog(quiet_terminal=self.recipe.logging.progress_bar, write_file=main) as log:
            source = self.run_dir.plan_start(resume, restart)
            self._build(resume_from=source)
            if source is not None:
                check_compatible(source.manifest, self.recipe, self.accelerator.num_processes)
            self._prepare_folder(restart, log)
            step, tokens = 0, 0
            if source is not None:
                step, tokens = self._load(source)
            elif resume == "latest":
                logger.info("no checkpoint under %s: starting from scratch", self.run_dir.checkpoints_dir)
            show_bar = main and self.recipe.logging.progress_bar
            return self._loop(step, tokens, resumed=source is not None, progress_bar=show_bar)

    def _prepare_folder(self, restart: bool, log: RunLog) -> None:
        """The first write into the run folder: everything that could refuse the start has been checked."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()  # every process has checked the folder before it changes
        if accelerator.is_main_process:
            if restart and self.run_dir.previous_run():
                moved = self.run_dir.set_aside()
                logger.warning("--restart: the previous run in %s was moved to %s", self.output_dir, moved)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            log.open(self.output_dir / LOG_FILE)
            save_recipe(self.recipe, self.run_dir.recipe_file)
            logger.info("resolved recipe:\n%s", self.run_dir.recipe_file.read_text())
        accelerator.wait_for_everyone()

    def _loop(self, step: int, tokens: int, resumed: bool, progress_bar: bool) -> TrainResult:
        accelerator, recipe = self.accelerator, self.recipe
        if not resumed:  # a resumed run continues the tracker run whose id _load read from the checkpoint
            self.tracker_run_id = new_tracker_run_id()
        if self.trackers:
            init_kwargs = tracker_init_kwargs(
                self.trackers, recipe.logging, recipe.run.name, self.tracker_run_id, self.output_dir
            )
            accelerator.init_trackers(recipe.logging.project, config=_flat(recipe.to_dict()), init_kwargs=init_kwargs)
        # The run's record of what ran where: a resume on another machine may resolve optim.precision=auto anew.
        self.metrics.log("start", step, {"precision": self.precision.name, "precision_reason": self.precision.reason})
        tokens_per_step = recipe.optim.total_batch_size * recipe.data.seq_len
        last_eval: dict[str, float] = {}
        saved_at = step if resumed else None
        previous_handlers = self._install_signal_handlers()
        progress = tqdm(total=recipe.optim.max_steps, initial=step, desc=recipe.run.name, disable=not progress_bar)
        batches = iter(self.train_batches)
        window_start, window_tokens = time.perf_counter(), 0
        try:
            while step < recipe.optim.max_steps:
                losses, stop = self._train_step(batches, lr_at(step, recipe.optim))
                step += 1
                tokens += tokens_per_step
                window_tokens += tokens_per_step
                progress.update(1)
                if not math.isfinite(losses[0]):
                    raise NonFiniteLossError(
                        f"loss is {losses[0]} at step {step}; stopping. The last good checkpoint is kept in "
                        f"{self.run_dir.checkpoints_dir}"
                    )
                if step % recipe.logging.every == 0 or step == recipe.optim.max_steps:
                    elapsed = time.perf_counter() - window_start
                    values = self._train_metrics(step, tokens, losses, window_tokens / elapsed)
                    self.metrics.log("train", step, values)
                    progress.set_postfix(progress_postfix(losses, values))
                    window_start, window_tokens = time.perf_counter(), 0
                if self.sparsity is not None and self.sparsity.last_update.step == step:
                    self.metrics.log("dst", step, self._dst_metrics())
                began = time.perf_counter()
                if step % recipe.eval.every == 0 or step == recipe.optim.max_steps:
                    last_eval = self._evaluate(step, tokens)
                if stop or step % recipe.checkpoint.every == 0 or step == recipe.optim.max_steps:
                    self._save(step, tokens, last_eval)
                    saved_at = step
                window_start += time.perf_counter() - began  # tokens_per_s measures the training steps only
                if stop:
                    logger.warning("stop requested: saved step %d, exiting", step)
                    return TrainResult(self.output_dir, self._checkpoint_path(saved_at), step, last_eval, True)
        finally:
            progress.close()
            self._restore_signal_handlers(previous_handlers)
            if self.trackers:
                accelerator.end_training()
        if not last_eval:  # resumed at the end: evaluate what was loaded
            last_eval = self._evaluate(step, tokens)
        if accelerator.is_main_process:
            logger.info("final evaluation at step %d:\n%s", step, perplexity_table(last_eval), extra=TERMINAL)
        return TrainResult(self.output_dir, self._checkpoint_path(saved_at), step, last_eval)

    def _train_step(self, batches, lr: float) -> tuple[list[float], bool]:
        """One optimizer step over ``grad_accum`` micro-batches. Returns the global mean [loss, head losses...]
        and whether any process asked to stop."""
        accelerator, model, optimizer = self.accelerator, self.model, self.optimizer
        for group in optimizer.param_groups:
            group["lr"] = lr
        heads = self.model_config.ensemble_size
        totals = torch.zeros(1 + heads, device=accelerator.device)
        for _ in range(self.grad_accum):
            batch = {k: v.to(accelerator.device) for k, v in self._next_batch(batches).items()}
            with accelerator.accumulate(model):
                out = model(
                    **batch,
                    use_cache=False,
                    return_logits=False,
                    loss_reduction=self.recipe.model.loss_reduction,
                    loss_chunk_size=self.recipe.model.loss_chunk_size,
                )
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    if self.sparsity is not None:
                        self.sparsity.before_optimizer_step()
                    if self.recipe.optim.grad_clip > 0:
                        accelerator.clip_grad_norm_(model.parameters(), self.recipe.optim.grad_clip)
                optimizer.step()
                if accelerator.sync_gradients and self.sparsity is not None:
                    self.sparsity.after_optimizer_step(optimizer.step_was_skipped)
                optimizer.zero_grad(set_to_none=True)
            totals += torch.cat([out.loss.detach().float()[None], out.head_losses.detach().float()]) / self.grad_accum
        # One small collective per step: the logged loss is global and every process agrees on stopping.
        stop = torch.tensor([float(self._stop_requested)], device=accelerator.device)
        reduced = accelerator.reduce(torch.cat([totals, stop]), reduction="sum")
        values = (reduced[:-1] / accelerator.num_processes).tolist()
        return values, bool(reduced[-1].item() > 0)

    def _next_batch(self, batches) -> dict[str, torch.Tensor]:
        try:
            return next(batches)
        except (ValueError, KeyError) as err:  # found only when read: no usable document, no text column
            data = self.recipe.data
            where = f" (data.train_files: {data.train_files})" if data.source == "files" else ""
            raise RecipeError(f"data{where}: {err.args[0] if isinstance(err, KeyError) else err}") from err

    def _train_metrics(self, step: int, tokens: int, losses: list[float], tokens_per_s: float) -> dict[str, Any]:
        values: dict[str, Any] = {
            "tokens": tokens,
            "loss": losses[0],
            "lr": lr_at(step - 1, self.recipe.optim),
            **throughput_metrics(tokens_per_s, self.flops_per_token, self.accelerator.num_processes, self.matmul_peak),
        }
        values.update({f"head{h}_loss": v for h, v in enumerate(losses[1:])})
        values["real_token_fraction"] = self.train_batches.stats()["real_token_fraction"]
        return values

    def _dst_metrics(self) -> dict[str, Any]:
        """Density, pruned/grown counts, prune rate, temperature, ever-active fraction, mask change."""
        stats = self.sparsity.stats(per_tensor=False)
        return {key.removeprefix("sparsity/"): value for key, value in stats.items()}

    def _evaluate(self, step: int, tokens: int) -> dict[str, float]:
        batches = self.validation
        if self.recipe.eval.max_batches is not None:
            batches = islice(batches, self.recipe.eval.max_batches)
        metrics = evaluate(
            self.model,
            batches,
            self.accelerator.device,
            all_reduce_sum=lambda t: self.accelerator.reduce(t, reduction="sum"),
            autocast_dtype=self.precision.autocast_dtype,
        )
        if self.sparsity is not None:
            metrics["density"] = self.sparsity.density
        self.metrics.log("eval", step, {"tokens": tokens, **metrics})
        return metrics

    # ---- checkpoints ---------------------------------------------------------------------------

    def _checkpoint_path(self, step: int | None) -> Path | None:
        return None if step is None else self.run_dir.checkpoint(step).path

    def _save(self, step: int, tokens: int, last_eval: dict[str, float]) -> None:
        """Write ``step_<step>`` (layout: nt_llm.checkpoint), prune old ones, then run the checkpoint callbacks."""
        accelerator = self.accelerator
        pending = self.run_dir.begin_checkpoint(step)
        if accelerator.is_main_process:
            pending.create()
        accelerator.wait_for_everyone()
        # Resuming reads the engine state, DST state included (registered for checkpointing), through accelerate.
        accelerator.save_state(str(pending.state_dir))
        pending.save_data_state(accelerator.process_index, self.train_batches.state_dict())
        state_dict = accelerator.get_state_dict(self.model)  # a collective under ZeRO-3
        if accelerator.is_main_process:
            # A standalone Hugging Face folder and the masks beside the engine state: what readers read.
            saveable(accelerator.unwrap_model(self.model)).save_pretrained(pending.model_dir, state_dict=state_dict)
            self.tokenizer.save_pretrained(pending.model_dir)
            if self.sparsity is not None:
                pending.save_masks(self.sparsity.masks)
            save_recipe(self.recipe, pending.recipe_file)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            meta = {
                "tokens": tokens,
                "world_size": accelerator.num_processes,
                "recipe": self.recipe.to_dict(),
                "eval": last_eval,
                "density": self.sparsity.density if self.sparsity is not None else 1.0,
                "precision": self.precision.name,
                "tracker_run_id": self.tracker_run_id,  # a resume continues this tracker run
            }
            checkpoint = pending.finalize(meta)
            self.run_dir.prune(self.recipe.checkpoint.keep_last)
            logger.info("saved checkpoint %s", checkpoint.path)
            for callback in self.on_checkpoint:
                callback(checkpoint)
        accelerator.wait_for_everyone()

    def _load(self, source: ckpt.Checkpoint) -> tuple[int, int]:
        """Engine, sparsity and data state from a checkpoint whose manifest was checked against the recipe."""
        self.accelerator.load_state(str(source.state_dir))
        data_state = source.data_state_file(self.accelerator.process_index)
        self.train_batches.load_state_dict(torch.load(data_state, weights_only=False))
        # Checkpoints written before tracker ids were kept have none: their resume starts a new tracker run.
        self.tracker_run_id = source.manifest.get("tracker_run_id") or new_tracker_run_id()
        logger.info("resumed from %s at step %d", source.path, source.step)
        return source.step, source.tokens

    # ---- signals -------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM / first Ctrl-C: finish the step, save, exit. A second Ctrl-C interrupts at once."""

        def request_stop(signum: int, _frame: Any) -> None:
            if self._stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            logger.warning("signal %d: will save a checkpoint after this step and stop", signum)
            self._stop_requested = True

        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, request_stop)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _device_type(forced_cpu: bool) -> str:
    """The device type accelerate will pick (known before the Accelerator, which takes the precision, exists)."""
    use_cpu = forced_cpu or os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    return "cuda" if torch.cuda.is_available() and not use_cpu else "cpu"


def model_config(recipe: Recipe, tokenizer, resume_from: ckpt.Checkpoint | None = None) -> NeuroTrailsConfig:
    """The model's config: the recipe's size and method, vocabulary and special tokens from the tokenizer. With
    ``model.init_from`` the source's architecture instead of a size (resuming: the checkpoint's, not the source's).
    The method's shape rules (``nt_llm.methods.shape_for``) judge ``model.ensemble_size`` / ``model.head_layers``
    against the size's depth here, where the size is read; a refusal names the recipe key."""
    m = recipe.model
    if m.init_from is not None:
        return config_from_source(m, tokenizer, resume_from.model_dir if resume_from is not None else None)
    specials = {
        "vocab_size": vocab_size_of(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    try:
        fields = shape_for(m.method, load_size(m.size), overrides={**m.config, **specials}, where=f"size {m.size!r}")
        return NeuroTrailsConfig(**fields)
    except ShapeError as err:
        raise RecipeError(f"model.{err}") from err
    except (ValueError, FileNotFoundError) as err:
        raise RecipeError(f"model: {err}") from err


def build_optimizer(model: torch.nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups`` with the kernel ``optim.implementation`` names for ``device``."""
    optim = recipe.optim
    implementation = optim.implementation
    if implementation == "auto":
        implementation = "fused" if device.type in FUSED_ADAMW_DEVICES else "foreach"
    elif implementation == "fused" and device.type not in FUSED_ADAMW_DEVICES:
        raise RecipeError(f"optim.implementation: torch has no fused AdamW for {device.type} devices")
    kernel = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[implementation]
    groups = parameter_groups(model, optim.weight_decay)
    logger.info("AdamW: %s kernel", implementation)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, **kernel)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: norms' gains are not decayed."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def check_compatible(meta: dict[str, Any], recipe: Recipe, world_size: int) -> None:
    """Refuse to resume a checkpoint written by a different model, sparsity, data stream or world size."""
    if meta["world_size"] != world_size:
        raise ckpt.CheckpointError(
            f"checkpoint was written by {meta['world_size']} process(es), this run has {world_size}: the data "
            "position is per process, so resume with the same number of processes"
        )
    saved, current = _flat(meta["recipe"]), _flat(recipe.to_dict())
    legacy = sorted({key for key in saved for old in LEGACY_RECIPE_KEYS if key == old or key.startswith(old + ".")})
    if legacy:
        raise ckpt.CheckpointError(
            f"checkpoint was written by an earlier nt_llm version (its recipe has {', '.join(legacy)}), whose "
            "training state this version does not resume: export or evaluate its model/ folder, or train anew"
        )
    differing = sorted(
        key
        for key in set(saved) | set(current)
        if key.startswith(RESUME_MUST_MATCH) and key not in RESUME_MAY_DIFFER and saved.get(key) != current.get(key)
    )
    if differing:
        raise ckpt.CheckpointError(
            "checkpoint is incompatible with this recipe: "
            + ", ".join(f"{k} ({saved.get(k)!r} there, {current.get(k)!r} here)" for k in differing)
        )


def perplexity_table(metrics: dict[str, float]) -> str:
    rows = [("ensemble (averaged logits)", metrics["ensemble_loss"], metrics["ensemble_ppl"])]
    head = 0
    while f"head{head}_loss" in metrics:
        rows.append((f"head {head}", metrics[f"head{head}_loss"], metrics[f"head{head}_ppl"]))
        head += 1
    lines = ["| model | loss | perplexity |", "| --- | --- | --- |"]
    lines += [f"| {name} | {loss:.4f} | {ppl:.2f} |" for name, loss, ppl in rows]
    extras = {k: metrics[k] for k in ("ensemble_gain", "disagreement", "pairwise_kl", "density") if k in metrics}
    if extras:
        lines.append("")
        lines.append("  ".join(f"{k}={v:.4f}" for k, v in extras.items()))
    return "\n".join(lines)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become strings (trackers want scalars)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = str(value) if isinstance(value, (list, tuple)) or value is None else value
    return out
