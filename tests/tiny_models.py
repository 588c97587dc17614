"""Tiny fixed models and clouds shared by the attack tests (real modules, seconds on CPU)."""
from __future__ import annotations

import torch
from torch import nn

C = 5  # classes of the tiny models


class TinyPointNet(nn.Module):
    """Shared MLP + max pool + linear head with fixed seeded weights; ``smooth`` adds a mean-pool
    branch and tanh so that every point gets a gradient (for gradient-ranking tests)."""

    def __init__(self, num_classes: int = C, smooth: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.smooth = smooth
        self.mlp = nn.Sequential(nn.Linear(3, 32), nn.Tanh() if smooth else nn.ReLU(), nn.Linear(32, 64))
        self.head = nn.Linear(128 if smooth else 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mlp(x)
        feat = torch.cat([h.amax(dim=1), h.mean(dim=1)], dim=1) if self.smooth else h.amax(dim=1)
        return self.head(feat)


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with no parameter requiring grad."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def unit_clouds(b: int = 8, n: int = 64, seed: int = 1) -> torch.Tensor:
    """``[b, n, 3]`` Gaussian clouds scaled so each cloud's farthest point has norm 1."""
    x = torch.randn(b, n, 3, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=-1).amax(dim=1)[:, None, None]


def labelled_by(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, labels)`` with the model's own predictions as labels (clean accuracy 100%)."""
    with torch.no_grad():
        return x, model(x).argmax(1)
