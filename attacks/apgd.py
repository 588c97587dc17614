"""APGD (Croce & Hein, ICML 2020) on point coordinates: PGD without a step size to tune.

Per sample, starting from a random point of the ball, each iteration takes a step of size
``eta`` along the steepest-descent direction of the adversarial loss for the ball's norm,
projects, and mixes in momentum::

    z      = P(x_k - eta * dir(grad))
    x_k+1  = P(x_k + a (z - x_k) + (1 - a)(x_k - x_k-1)),   a = 0.75 (1 at the first step)

``eta`` starts at ``2 * eps`` and is halved at checkpoints (after 22% of the iterations,
then at shrinking intervals of at least 6%) when the loss decreased in fewer than ``rho``
of the steps since the last checkpoint, or when neither the step size nor the best loss
changed since the last one; a halving also moves the iterate back to the best point found
(the lowest loss). Restarts begin again from a fresh random start, for the samples not yet
fooled. The kept cloud is the most adversarial iterate (the lowest loss among those that
fool the model); with ``early_stop`` a sample instead stops, and leaves the batch, at its
first fooling iterate.

Balls (``norm``): ``l2`` = the global L2 ball over all 3N coordinates (direction
``g / ||g||``; the budgets of the ``paper`` (absolute) and ``ifd`` (``sqrt3k``) presets),
``point`` = a per-point Euclidean ball (IF-Defense's ``ClipPointsLinf``: direction
``g_i / ||g_i||`` per point), ``linf`` = a coordinate-wise box (direction ``sign(g)``).
Losses: ``ce``, ``dlr`` (scale-invariant margin) or ``margin`` (``attacks.losses``),
targeted or untargeted. Success: targeted ``pred == target``, untargeted ``pred != label``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attacks import register_attack
from attacks.base import TARGET_RULES, Attack
from attacks.constraints import BUDGET_SCALES, check_budget_scale, clip_l2, clip_linf, clip_per_point, scaled_budget
from attacks.losses import LOSS_KINDS, adversarial_loss
from attacks.search import seeded_normal
from benchmark.core.params import choice, count, fraction, nonnegative, param, positive

__all__ = ["APGD", "checkpoints"]

_NORMS = ("l2", "point", "linf")


def checkpoints(num_iter: int) -> list[int]:
    """APGD's checkpoint iterations ``w_j`` for ``num_iter`` iterations:
    ``w_0 = 0``, ``w_1 = ceil(0.22 n)``, ``w_j+1 = w_j + max(w_j - w_j-1 - ceil(0.03 n), ceil(0.06 n))``."""
    p1, decr, minimum = math.ceil(0.22 * num_iter), math.ceil(0.03 * num_iter), math.ceil(0.06 * num_iter)
    out, prev, cur = [], 0, p1
    while cur <= num_iter:
        out.append(cur)
        prev, cur = cur, cur + max(cur - prev - decr, minimum)
    return out


@register_attack("apgd", tags=("strong",))
@dataclass
class APGD(Attack):
    """APGD: parameter-free PGD (step-size halving at checkpoints, momentum, restarts).

    Hyperparameters:
        budget: the ball's radius (cloud units); ``norm="l2"`` and ``budget_scale="sqrt3k"``
            multiply it by ``sqrt(3N)`` (IF-Defense's convention: 0.08 -> 4.43 at N = 1,024).
        norm: ``l2`` (global), ``point`` (per-point Euclidean) or ``linf`` (coordinates).
        budget_scale: ``absolute`` or ``sqrt3k`` (``l2`` only).
        steps: iterations per restart.
        restarts: random restarts (each for the samples not fooled yet).
        loss, kappa: adversarial loss (``ce``, ``dlr``, ``margin``) and the margin's kappa.
        targeted: targeted (drawn or given targets) or untargeted.
        rho: the share of loss-decreasing steps below which a checkpoint halves the step.
        momentum: ``a`` of the update (0.75 in the paper).
        seed: seeds the targets and the random starts per (seed, sample index, restart).
        target_rule: targets drawn when none are given (targeted mode): ``random`` (uniform
            over the other classes, PROTOCOL.md) or ``runner-up`` (the class the model ranks
            second on the clean cloud: the easiest target).
        early_stop: a cloud stops at its first fooling iterate (and leaves the batch); by
            default it keeps maximising the loss inside the ball, as AutoAttack does, so its
            example is the most adversarial one found (what a transferred example needs).

    ``iterations``: per sample, the iterations (over all restarts) before the first iterate
    that fooled the model, ``restarts * steps`` when none did. The returned cloud is the
    lowest-loss iterate that fooled the model, else the lowest-loss iterate.
    """

    budget: float = positive(0.08)
    norm: str = choice("l2", _NORMS)
    budget_scale: str = choice("sqrt3k", BUDGET_SCALES)
    steps: int = count(100)
    restarts: int = count(1)
    loss: str = choice("ce", LOSS_KINDS)
    kappa: float = nonnegative(0.0)
    targeted: bool = param(False)
    rho: float = fraction(0.75)
    momentum: float = param(0.75, gt=0.0, le=1.0)
    seed: int = param(0)
    target_rule: str = choice("random", TARGET_RULES)
    early_stop: bool = param(False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_budget_scale(type(self).__name__, self.budget_scale, self.norm)

    def epsilon(self, num_points: int) -> float:
        """The ball's radius for clouds of ``num_points`` points."""
        return scaled_budget(self.budget, self.budget_scale, num_points)

    # -- the ball ------------------------------------------------------------------------
    def _project(self, delta: Tensor, eps: float) -> Tensor:
        if self.norm == "l2":
            return clip_l2(delta, eps)
        if self.norm == "point":
            return clip_per_point(delta, eps)
        return clip_linf(delta, eps)

    def _direction(self, grad: Tensor) -> Tensor:
        if self.norm == "l2":
            return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        if self.norm == "point":
            return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return grad.sign()

    def _start(self, points: Tensor, indices: Tensor, restart: int, eps: float) -> Tensor:
        noise = seeded_normal(tuple(points.shape[1:]), indices, self.seed, f"apgd-start:restart{restart}",
                              device=points.device, dtype=points.dtype)
        if self.norm == "linf":
            noise = noise.clamp(-1.0, 1.0)
        return points + self._project(eps * self._direction(noise), eps)

    # -- the algorithm -------------------------------------------------------------------
    def attack(
        self, model: nn.Module, points: Tensor, labels: Tensor, targets: Tensor | None, *, indices: Tensor
    ) -> tuple[Tensor, Tensor]:
        batch, n, _ = points.shape
        points = points.detach()
        state = _Kept(points.clone(), torch.full((batch,), float("inf"), device=points.device, dtype=points.dtype),
                      torch.zeros(batch, dtype=torch.bool, device=points.device),
                      torch.full((batch,), self.restarts * self.steps, dtype=torch.long, device=points.device))
        tgt = targets if self.targeted else None
        marks = set(checkpoints(self.steps))
        for r in range(self.restarts):
            active = (~state.fooled).nonzero().flatten()  # a restart only for the clouds not fooled yet
            if active.numel() == 0:
                break
            self._run(model, points, labels, tgt, indices, r, self.epsilon(n), active, marks, state)
        return state.points, state.first

    def _evaluate(self, model: nn.Module, x: Tensor, labels: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss [B], grad [B, N, 3], fooled [B])`` at ``x``."""
        x = x.detach().requires_grad_(True)
        logits = model(x)
        loss = adversarial_loss(logits, labels, targets, self.loss, self.kappa)
        (grad,) = torch.autograd.grad(loss.sum(), [x])
        pred = logits.detach().argmax(dim=1)
        ok = pred == targets if targets is not None else pred != labels
        return loss.detach(), grad.detach(), ok

    def _run(self, model: nn.Module, points: Tensor, labels: Tensor, targets: Tensor | None, indices: Tensor,
             restart: int, eps: float, rows: Tensor, marks: set[int], state: _Kept) -> None:
        """One restart over the clouds ``rows`` (global batch rows), updating ``state``."""
        x0, y = points[rows], labels[rows]
        t = targets[rows] if targets is not None else None
        x = self._start(x0, indices[rows], restart, eps)
        loss, grad, ok = self._evaluate(model, x, y, t)
        base = restart * self.steps
        state.record(rows, x, loss, ok, base)
        step = torch.full((x.shape[0],), 2.0 * eps, device=x.device, dtype=x.dtype)
        x_prev = x.clone()
        x_best, loss_best, grad_best = x.clone(), loss.clone(), grad.clone()
        decreases = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        loss_best_at_mark = loss_best.clone()
        reduced_at_mark = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        last_mark, prev_loss = 0, loss.clone()
        keep = ~ok if self.early_stop else torch.ones_like(ok)
        for it in range(1, self.steps + 1):
            if not bool(keep.all()):  # fooled clouds leave the batch (early_stop): per-cloud state shrinks
                x, x_prev, x0, y, rows = x[keep], x_prev[keep], x0[keep], y[keep], rows[keep]
                loss, grad, prev_loss, step, decreases = loss[keep], grad[keep], prev_loss[keep], step[keep], decreases[keep]
                x_best, loss_best, grad_best = x_best[keep], loss_best[keep], grad_best[keep]
                loss_best_at_mark, reduced_at_mark = loss_best_at_mark[keep], reduced_at_mark[keep]
                t = t[keep] if t is not None else None
            if x.shape[0] == 0:
                return
            a = 1.0 if it == 1 else float(self.momentum)
            with torch.no_grad():
                z = x0 + self._project(x - step[:, None, None] * self._direction(grad) - x0, eps)
                x_new = x0 + self._project(x + a * (z - x) + (1.0 - a) * (x - x_prev) - x0, eps)
            x_prev, x = x, x_new
            loss, grad, ok = self._evaluate(model, x, y, t)
            state.record(rows, x, loss, ok, base + it)
            decreases += (loss < prev_loss).to(x.dtype)
            prev_loss = loss
            better = loss < loss_best
            x_best = torch.where(better[:, None, None], x, x_best)
            grad_best = torch.where(better[:, None, None], grad, grad_best)
            loss_best = torch.where(better, loss, loss_best)
            if it in marks:  # checkpoint: halve the step where progress stalled, back to the best point
                stalled = decreases <= self.rho * (it - last_mark)
                stalled |= ~reduced_at_mark & (loss_best >= loss_best_at_mark)
                step = torch.where(stalled, step / 2, step)
                x = torch.where(stalled[:, None, None], x_best, x)
                grad = torch.where(stalled[:, None, None], grad_best, grad)
                reduced_at_mark, loss_best_at_mark = stalled, loss_best.clone()
                decreases.zero_()
                last_mark = it
            keep = ~ok if self.early_stop else torch.ones_like(ok)


@dataclass
class _Kept:
    """Per cloud of the batch: the kept iterate (the lowest-loss one that fooled the model, else
    the lowest-loss one), its loss, whether it fooled the model, and the first fooling iteration."""

    points: Tensor
    loss: Tensor
    fooled: Tensor
    first: Tensor

    def record(self, rows: Tensor, x: Tensor, loss: Tensor, ok: Tensor, it: int) -> None:
        """Offer the iterates ``x`` of the global rows ``rows`` (their ``loss``, whether they fool)."""
        fooled, kept = self.fooled[rows], self.loss[rows]
        better = (ok & ~fooled) | ((ok == fooled) & (loss < kept))
        self.first[rows[ok & ~fooled]] = it
        self.points[rows[better]] = x[better].detach()
        self.loss[rows] = torch.where(better, loss, kept)
        self.fooled[rows] = fooled | ok
