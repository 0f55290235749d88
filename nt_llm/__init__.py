"""nt_llm: NeuroTrails (a shared LLaMA backbone with dynamic sparse heads) on the Hugging Face stack."""

__version__ = "0.1.0"
