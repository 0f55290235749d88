"""Learning rate as a pure function of the optimizer step: nothing to checkpoint, identical on resume."""

import math

from nt_llm.train.recipe import OptimRecipe


def lr_at(step: int, optim: OptimRecipe) -> float:
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then a cosine to ``lr * min_lr_ratio`` at
    ``max_steps``. ``step`` counts optimizer steps already taken (the rate for the next one)."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    progress = min(1.0, (step - optim.warmup_steps) / max(1, optim.max_steps - optim.warmup_steps))
    floor = optim.min_lr_ratio
    return optim.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
