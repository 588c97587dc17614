"""FMN (Pintor et al., NeurIPS 2021): the smallest L2 perturbation that fools the model.

A minimum-norm attack has no budget: per sample it searches for the adversarial cloud
closest to the clean one, and its result is that distance. From the per-sample minimal
distances ``d_i`` of one run, the robust accuracy at *every* budget ``r`` follows: a cloud
survives budget ``r`` when it is classified correctly clean and ``d_i > r``
(``benchmark.core.curves``), and the median of ``d_i`` is a budget-free robustness score.

Per sample, starting at the clean cloud (``delta = 0``, plus N(0, 1e-7) noise seeded per
sample), each step moves ``delta`` by ``alpha`` along the normalised gradient of the
logit difference (towards the decision boundary) and projects it onto the L2 ball of a
radius ``eps`` that adapts: before any adversarial iterate, ``eps`` = the current norm plus
the linearised distance to the boundary (``|loss| / ||grad||``); after, ``eps`` shrinks by
``(1 - gamma)`` (capped by the best norm so far) while the iterate is adversarial and grows
by ``(1 + gamma)`` while it is not. ``alpha`` and ``gamma`` decay by a cosine schedule from
``alpha``/``gamma`` to 1% of ``alpha`` / ``gamma_final``. The kept cloud is the adversarial
iterate of smallest L2 norm.

The logit difference: untargeted ``z_y - max_{j != y} z_j`` (fooled when < 0), targeted
``max_{j != t} z_j - z_t``. Differences from the reference: point clouds have no box to
clamp to, so ``eps`` is not capped by a worst-case norm; the start carries the 1e-7 noise
of the other attacks (a zero gradient at the exact clean cloud is then no trap).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks import register_attack
from attacks.base import TARGET_RULES, Attack
from attacks.constraints import clip_l2
from attacks.search import seeded_normal
from benchmark.core.params import choice, count, param, positive

__all__ = ["FMN", "logit_difference"]


def logit_difference(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
    """``[B]``: untargeted ``z_y - max_{j != y} z_j``, targeted ``max_{j != t} z_j - z_t``
    (negative exactly when the model is fooled, up to ties)."""
    cls = targets if targets is not None else labels
    mask = F.one_hot(cls, logits.shape[1]).bool()
    own = logits.gather(1, cls[:, None]).squeeze(1)
    other = logits.masked_fill(mask, float("-inf")).amax(dim=1)
    return other - own if targets is not None else own - other


@register_attack("fmn", tags=("min-norm",))
@dataclass
class FMN(Attack):
    """FMN: the minimal L2 perturbation that fools the model (robustness at every budget in one run).

    Hyperparameters:
        steps: iterations.
        alpha: initial step length (cloud units, whole-cloud L2); cosine-annealed to 1% of it.
        gamma, gamma_final: initial and final factor of the radius adaptation (cosine).
        targeted: targeted (drawn or given targets) or untargeted.
        seed: seeds the targets and the start noise per (seed, sample index).
        target_rule: targets drawn when none are given (targeted mode): ``random`` (uniform
            over the other classes, PROTOCOL.md) or ``runner-up`` (the class the model ranks
            second on the clean cloud: the easiest target).

    ``iterations``: the step at which the kept (smallest adversarial) iterate was found,
    ``steps`` for a sample never fooled (its returned cloud is then the clean one, and its
    minimal distance is infinite). ``AttackResult.l2`` of a fooled sample is its minimal
    distance.
    """

    steps: int = count(100)
    alpha: float = positive(1.0)
    gamma: float = param(0.05, gt=0.0, lt=1.0)
    gamma_final: float = param(0.001, gt=0.0, lt=1.0)
    targeted: bool = param(False)
    seed: int = param(0)
    target_rule: str = choice("random", TARGET_RULES)

    def attack(
        self, model: nn.Module, points: Tensor, labels: Tensor, targets: Tensor | None, *, indices: Tensor
    ) -> tuple[Tensor, Tensor]:
        batch, n, _ = points.shape
        points = points.detach()
        tgt = targets if self.targeted else None
        noise = seeded_normal((n, 3), indices, self.seed, "fmn-start", device=points.device, dtype=points.dtype)
        delta = noise * 1e-7
        eps = torch.full((batch,), float("inf"), device=points.device, dtype=points.dtype)
        best_norm = torch.full((batch,), float("inf"), device=points.device, dtype=points.dtype)
        best_adv = points.clone()
        best_iter = torch.full((batch,), self.steps, dtype=torch.long, device=points.device)
        found = torch.zeros(batch, dtype=torch.bool, device=points.device)
        alpha_final = self.alpha / 100
        for i in range(self.steps + 1):
            cosine = (1 + math.cos(math.pi * min(i, self.steps) / self.steps)) / 2
            alpha = alpha_final + (self.alpha - alpha_final) * cosine
            gamma = self.gamma_final + (self.gamma - self.gamma_final) * cosine
            var = delta.detach().requires_grad_(True)
            logits = model(points + var)
            diff = logit_difference(logits, labels, tgt)
            (grad,) = torch.autograd.grad(diff.sum(), [var])
            with torch.no_grad():
                norm = delta.flatten(1).norm(dim=1)
                pred = logits.argmax(dim=1)
                adv = pred == tgt if tgt is not None else pred != labels
                smaller = adv & (norm < best_norm)
                best_norm = torch.where(smaller, norm, best_norm)
                best_adv = torch.where(smaller[:, None, None], points + delta, best_adv)
                best_iter = torch.where(smaller, torch.full_like(best_iter, i), best_iter)
                found |= adv
                if i == self.steps:
                    break
                grad_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                to_boundary = diff.abs() / grad_norm
                eps = torch.where(adv, torch.minimum(eps * (1 - gamma), best_norm),
                                  torch.where(found, eps * (1 + gamma), norm + to_boundary))
                delta = clip_l2(delta - alpha * grad / grad_norm[:, None, None], eps)
        return best_adv, best_iter
