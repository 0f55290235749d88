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
