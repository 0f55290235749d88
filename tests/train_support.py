"""Moved to helpers.training; this re-export lives only until its last importers switch over."""

from helpers.training import tiny_recipe

__all__ = ["tiny_recipe"]
