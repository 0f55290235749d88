"""nt_llm: NeuroTrails (a shared LLaMA backbone with dynamic sparse heads) on the Hugging Face stack."""

from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM, register_auto_classes

register_auto_classes()

__all__ = ["NeuroTrailsConfig", "NeuroTrailsForCausalLM"]
__version__ = "0.1.0"
