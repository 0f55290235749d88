"""FSDP2 through accelerate, also where the processes run on the CPU (gloo).

``accelerate launch --config_file recipes/accelerate/fsdp2.yaml`` sets ``ACCELERATE_USE_FSDP=true`` and the
``FSDP_*`` settings, and the Accelerator builds its ``FullyShardedDataParallelPlugin`` from them. accelerate 1.16
then turns FSDP on only for an accelerator device: ``AcceleratorState`` switches the distributed type to FSDP from
``MULTI_GPU`` / ``MULTI_XPU`` / ``MULTI_NPU`` / ..., which ``PartialState._prepare_backend`` picks only when
``get_torch_accelerator_backend()`` finds a device. Without one the type is ``MULTI_CPU`` (``cpu=True``: the plugin
is dropped and the model is wrapped in DDP) or ``NO`` (the model is left unwrapped), silently either way.

Nothing after that choice needs a GPU: accelerate's FSDP2 ``prepare`` (``fully_shard`` per decoder block on a CPU
device mesh), ``accumulate`` (gradient sync off between micro-batches), ``clip_grad_norm_`` over DTensors,
``get_state_dict`` and the sharded ``save_state`` / ``load_state`` (torch.distributed.checkpoint) all run over gloo.
So where the launch asked for FSDP and the processes run on the CPU, the trainer makes the choice accelerate would
have made on a GPU (:func:`use_fsdp_on_cpu`); from there on the run takes accelerate's own FSDP2 code path, the one
a GPU run with the same config takes.
"""

import logging
import os

import torch
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch import nn
from torch.distributed.fsdp import FSDPModule

logger = logging.getLogger(__name__)


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch`` with an FSDP config sets this)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def use_fsdp_on_cpu(accelerator: Accelerator, mixed_precision: str) -> None:
    """Turn a ``MULTI_CPU`` accelerator into the FSDP2 one accelerate builds on a GPU machine from the same
    environment: the plugin read from the ``FSDP_*`` variables, the run's mixed precision set on it."""
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        raise RuntimeError(
            f"FSDP on the CPU expects accelerate's MULTI_CPU state to start from, got {accelerator.distributed_type}"
        )
    plugin = FullyShardedDataParallelPlugin()  # reads FSDP_VERSION, FSDP_AUTO_WRAP_POLICY, ... as accelerate does
    if plugin.fsdp_version != 2:
        # FSDP1's flat parameters have no DTensor shards for the DST engine, and it is deprecated in accelerate.
        raise RuntimeError(f"FSDP on the CPU needs fsdp_version 2, the launch set {plugin.fsdp_version}")
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)  # what AcceleratorState does for a GPU run
    state = accelerator.state
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    # accelerate's collectives (gather, reduce) read the process state's copy of the type.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    logger.info("FSDP2 on the CPU over gloo: accelerate's FSDP2 path with the launch's FSDP_* settings")


def saveable(model: nn.Module) -> nn.Module:
    """The module whose ``save_pretrained`` writes the model's folder (with the gathered state dict passed in).

    Under FSDP2 the model's class is one ``fully_shard`` derived (``FSDPNeuroTrailsForCausalLM``, defined in torch's
    ``_fsdp_init``): its ``save_pretrained`` would write that module into ``auto_map`` and copy torch's FSDP files
    instead of the model's own code, so the folder would not load. A plain instance of the model's class on the meta
    device (no memory, no initialisation) writes the same config, code and generation config; the weights come from
    the state dict.
    """
    if not isinstance(model, FSDPModule):
        return model
    plain_class = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        plain = plain_class(model.config)
    plain.generation_config = model.generation_config
    return plain
