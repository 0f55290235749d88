"""Training: recipes (typed dataclasses from YAML + overrides), the Accelerate loop, checkpoints."""

from nt_llm.train.recipe import Recipe, RecipeError, load_recipe, recipe_from_dict
from nt_llm.train.trainer import NonFiniteLossError, TrainResult, train

__all__ = ["NonFiniteLossError", "Recipe", "RecipeError", "TrainResult", "load_recipe", "recipe_from_dict", "train"]
