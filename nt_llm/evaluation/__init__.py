"""Evaluation of an ensemble: perplexity of the averaged logits and of each head, and head diversity."""

from nt_llm.evaluation.ensemble import EnsembleTotals, evaluate, summarize

__all__ = ["EnsembleTotals", "evaluate", "summarize"]
