"""Moved to helpers.no_nt_llm; this re-export lives only until its last importers switch over."""

from helpers.no_nt_llm import BLOCK_NT_LLM

__all__ = ["BLOCK_NT_LLM"]
