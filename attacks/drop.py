"""Saliency-map point dropping (Zheng et al. ICCV 2019; PROTOCOL.md section 2, "drop-100, drop-200").

Each round takes the CE gradient ``g`` of the loss w.r.t. the current cloud, the
coordinate-wise median ``c`` of the cloud, ``r_i = ||x_i - c||`` and the saliency score
``s_i = -r_i^alpha * <x_i - c, g_i>`` (the first-order loss increase of moving point ``i``
to the centre, i.e. of dropping it), and drops the ``per_round`` highest-scoring points.
Vectorised over the batch: every sample drops the same number of points per round, so the
cloud stays a ``[B, M, 3]`` tensor whose ``M`` shrinks. ``paper`` preset = the defaults
(gradient for the true label); ``saliency_label="target"`` reproduces the MRPD code, which
took the gradient for a random target instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks import register_attack
from attacks.base import Attack, draw_targets
from benchmark.core.params import choice, count, nonnegative, param

__all__ = ["SaliencyDrop", "SaliencyDrop100", "saliency_scores"]

_SALIENCY_LABELS = ("label", "target")


def _median(points: Tensor) -> Tensor:
    """Coordinate-wise median ``[B, 1, 3]`` of ``[B, M, 3]``: the lower of the two middle
    values for even ``M`` (``torch.median``, as the IF-Defense reference code)."""
    return points.median(dim=1).values.unsqueeze(1)


def saliency_scores(points: Tensor, grad: Tensor, alpha: float = 1.0) -> Tensor:
    """Saliency ``s_i = -r_i^alpha * <x_i - c, g_i>``, ``c`` the coordinate-wise median.

    Args:
        points: ``[B, M, 3]`` current clouds.
        grad: ``[B, M, 3]`` gradient of the CE loss (to be increased) w.r.t. ``points``.
        alpha: exponent of the distance to the centre.

    Returns:
        ``[B, M]``; the highest scores are dropped first.
    """
    axis = points - _median(points)
    r = axis.norm(dim=-1)
    return -(axis * grad).sum(dim=-1) * r.pow(alpha)


@register_attack("drop-200")
@dataclass
class SaliencyDrop(Attack):
    """Saliency-map point drop, 200 points (Zheng et al. ICCV 2019), untargeted.

    Hyperparameters (defaults = MRPD ``paper`` preset, also IF-Defense's):
        num_drop: points removed in all; the output has ``N - num_drop`` points.
        per_round: points removed per round (gradient recomputed each round); the last
            round removes only what remains, ``ceil(num_drop / per_round)`` rounds.
        alpha: exponent of the distance to the median in the score.
        saliency_label: ``"label"`` (CE gradient for the true label, the published
            algorithm) or ``"target"`` (for a random target per sample drawn with
            ``draw_targets(labels, C, seed, indices)``: the MRPD code's quirk, weaker).
        seed: seeds those targets (``saliency_label="target"`` only).

    The attack stays untargeted either way: success = prediction differs from the label.
    ``iterations`` reports the number of rounds for every sample. Kept points stay in
    their input order (the reference code reorders them by score; harmless for the
    permutation-invariant victims). Ties between scores are broken by ``torch.topk``.
    """

    num_drop: int = count(200)
    per_round: int = count(5)
    alpha: float = nonnegative(1.0)
    saliency_label: str = choice("label", _SALIENCY_LABELS)
    seed: int = param(0)
    targeted = False  # class attribute: the drop attack has no targeted mode

    @property
    def rounds(self) -> int:
        """Number of gradient rounds, ``ceil(num_drop / per_round)``."""
        return -(-self.num_drop // self.per_round)

    def attack(
        self, model: nn.Module, points: Tensor, labels: Tensor, targets: Tensor | None, *, indices: Tensor
    ) -> tuple[Tensor, Tensor]:
        batch, n, _ = points.shape
        if self.num_drop >= n:
            raise ValueError(
                f"{type(self).__name__}: cannot drop num_drop = {self.num_drop} of N = {n} points; "
                "num_drop must be < N"
            )
        cls = labels
        x = points.detach()
        remaining = self.num_drop
        for _ in range(self.rounds):
            xg = x.clone().requires_grad_(True)
            logits = model(xg)
            if self.saliency_label == "target" and cls is labels:
                cls = draw_targets(labels, int(logits.shape[1]), self.seed, indices)
            loss = F.cross_entropy(logits, cls, reduction="sum")  # per-sample gradients stay separate
            (grad,) = torch.autograd.grad(loss, xg)
            drop = min(self.per_round, remaining)
            scores = saliency_scores(x, grad.detach(), self.alpha)
            keep = torch.topk(-scores, x.shape[1] - drop, dim=1).indices.sort(dim=1).values  # keep order
            x = x.gather(1, keep[..., None].expand(-1, -1, 3))
            remaining -= drop
        iterations = torch.full((batch,), self.rounds, dtype=torch.long, device=points.device)
        return x, iterations


@register_attack("drop-100")
@dataclass
class SaliencyDrop100(SaliencyDrop):
    """Saliency-map point drop, 100 points (Zheng et al. ICCV 2019), untargeted.

    Same hyperparameters as ``drop-200``, with ``num_drop`` = 100.
    """

    num_drop: int = 100
