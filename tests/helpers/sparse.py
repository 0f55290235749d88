"""A toy module for the DST tests that need no language model: named like the real model's sparse parts."""

import torch
from torch import nn


class LinearStack(nn.Module):
    """``depth`` tanh-linear blocks of ``width`` and a bias-free head: parameters ``blocks.{i}.weight/bias`` and
    ``head.weight``, the names the sparsity patterns select."""

    def __init__(self, depth: int = 2, width: int = 8, out: int = 16) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.head(x)


def train_steps(model: nn.Module, sparsity, optimizer: torch.optim.Optimizer, steps: int) -> None:
    """``steps`` optimizer steps on a fixed random stream of ``[4, width]`` inputs, the DST hook around each."""
    g = torch.Generator().manual_seed(0)
    width = model.blocks[0].in_features
    for _ in range(steps):
        model(torch.randn(4, width, generator=g)).square().mean().backward()
        sparsity.before_optimizer_step()
        optimizer.step()
        sparsity.after_optimizer_step()
        optimizer.zero_grad()
