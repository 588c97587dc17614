"""PGD, FGM and I-FGM on the point coordinates (PROTOCOL.md section 2, "pgd").

Each step takes the gradient of the adversarial loss (``attacks.losses``) w.r.t. the
cloud, normalises it per sample (global L2 norm; sign for ``norm="linf"``) and descends:
``x <- x0 + project(x - step * g_hat - x0)``. One forward + backward per step, vectorised
over the batch. ``paper`` preset = the defaults below; ``ifd`` preset = ``loss="margin"``,
``budget_scale="sqrt3k"``, ``steps=50``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attacks import register_attack
from attacks.base import Attack, seeded_uniform
from attacks.constraints import BUDGET_SCALES, check_budget_scale, clip_l2, clip_linf, scaled_budget
from attacks.losses import LOSS_KINDS, adversarial_loss
from benchmark.core.params import choice, count, nonnegative, param, positive

__all__ = ["FGM", "IFGM", "PGD"]

_NORMS = ("l2", "linf")


@register_attack("pgd")
@dataclass
class PGD(Attack):
    """Projected gradient descent on the points, global L2 (or L-inf) ball, random start.

    Hyperparameters (defaults = MRPD ``paper`` preset):
        budget: eps; global L2 radius over all 3N coordinates (``norm="l2"``) or the
            per-coordinate bound (``norm="linf"``), cloud units.
        steps: number of gradient steps.
        step_size: step length; None = ``eps / steps``.
        norm: ``"l2"`` (gradient normalised by its global L2 norm, global L2 clip) or
            ``"linf"`` (gradient sign, coordinate-wise clamp).
        random_start: start from ``x + U(-eps/sqrt(3N), eps/sqrt(3N))`` per coordinate
            (``U(-eps, eps)`` for ``linf``), then project. The ball is centred on the
            clean cloud ``x``; the reference code centres it on the noisy start.
        budget_scale: ``"absolute"`` (eps = budget) or ``"sqrt3k"`` (eps = budget *
            sqrt(3N), IF-Defense); ``"sqrt3k"`` is for ``norm="l2"`` only.
        loss, kappa: adversarial loss (``"ce"`` or ``"margin"``) and its margin.
        targeted: targeted (drawn or given targets) or untargeted.
        seed: seeds the targets and the random start per (seed, sample index).

    ``iterations`` reports, per sample, the index of the first successful iterate
    (0 = the start already succeeds), or ``steps`` when no iterate before the last one
    succeeded. The final iterate is returned (no early stopping), as in the reference.
    """

    budget: float = positive(0.08)
    steps: int = count(20)
    step_size: float | None = positive(None)
    norm: str = choice("l2", _NORMS)
    random_start: bool = param(True)
    budget_scale: str = choice("absolute", BUDGET_SCALES)
    loss: str = choice("ce", LOSS_KINDS)
    kappa: float = nonnegative(0.0)
    targeted: bool = param(True)
    seed: int = param(0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_budget_scale(type(self).__name__, self.budget_scale, self.norm)

    def epsilon(self, num_points: int) -> float:
        """The radius used for clouds of ``num_points`` points (applies ``budget_scale``)."""
        return scaled_budget(self.budget, self.budget_scale, num_points)

    def _project(self, delta: Tensor, eps: float) -> Tensor:
        return clip_l2(delta, eps) if self.norm == "l2" else clip_linf(delta, eps)

    def _direction(self, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return grad.sign()
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return grad / norm[:, None, None]

    def attack(
        self, model: nn.Module, points: Tensor, labels: Tensor, targets: Tensor | None, *, indices: Tensor
    ) -> tuple[Tensor, Tensor]:
        batch, n, _ = points.shape
        eps = self.epsilon(n)
        step = self.step_size if self.step_size is not None else eps / self.steps
        x0 = points
        x = x0.clone()
        if self.random_start:
            half = eps / math.sqrt(3 * n) if self.norm == "l2" else eps
            u = seeded_uniform((n, 3), indices, self.seed, "pgd-start", device=x0.device, dtype=x0.dtype)
            x = x0 + self._project((2 * u - 1) * half, eps)
        first = torch.full((batch,), self.steps, dtype=torch.long, device=x0.device)
        for t in range(self.steps):
            x = x.detach().requires_grad_(True)
            logits = model(x)
            loss = adversarial_loss(logits, labels, targets if self.targeted else None, self.loss, self.kappa)
            (grad,) = torch.autograd.grad(loss.sum(), x)
            with torch.no_grad():
                pred = logits.argmax(dim=1)
                ok = pred == targets if self.targeted else pred != labels
                first = torch.where(ok & (first == self.steps), torch.full_like(first, t), first)
                x = x0 + self._project(x - step * self._direction(grad) - x0, eps)
        return x.detach(), first


@register_attack("fgm")
@dataclass
class FGM(PGD):
    """Fast gradient method: one normalised gradient step of size eps, no random start.

    Same hyperparameters as ``pgd``; ``steps`` must stay 1 and ``random_start`` False.
    """

    steps: int = 1
    random_start: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps != 1 or self.random_start:
            raise ValueError("FGM takes exactly one step without random start; use 'ifgm' or 'pgd' for more")


@register_attack("ifgm")
@dataclass
class IFGM(PGD):
    """Iterative fast gradient method: PGD without the random start (starts at the clean cloud).

    Same hyperparameters as ``pgd`` (``random_start`` defaults to False).
    """

    random_start: bool = False
