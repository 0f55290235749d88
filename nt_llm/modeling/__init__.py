"""The NeuroTrails LLaMA model. Knows nothing of sparsity or training."""

from transformers import AutoConfig, AutoModelForCausalLM

from nt_llm.modeling.configuration_neurotrails import NeuroTrailsConfig
from nt_llm.modeling.modeling_neurotrails import NeuroTrailsCausalLMOutput, NeuroTrailsForCausalLM


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` know ``model_type="neurotrails"``, and make
    ``save_pretrained`` copy this package's configuration/modeling files next to the weights (``auto_map``)."""
    AutoConfig.register(NeuroTrailsConfig.model_type, NeuroTrailsConfig, exist_ok=True)
    AutoModelForCausalLM.register(NeuroTrailsConfig, NeuroTrailsForCausalLM, exist_ok=True)
    NeuroTrailsConfig.register_for_auto_class()
    NeuroTrailsForCausalLM.register_for_auto_class("AutoModelForCausalLM")


__all__ = ["NeuroTrailsCausalLMOutput", "NeuroTrailsConfig", "NeuroTrailsForCausalLM", "register_auto_classes"]
