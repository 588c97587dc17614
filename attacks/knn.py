"""kNN attack (Tsai et al. AAAI 2020, "Robust adversarial objects"; PROTOCOL.md section 2, "knn").

No binary search: Adam (lr ``lr``) on the whole adversarial cloud from ``x + N(0, 1e-7)``
(noise seeded per (seed, sample index)) for ``num_iter`` iterations on

    adv_loss + K * (chamfer_weight * chamfer_adv2ori + smooth_weight * knn_smoothness)

with ``K`` the number of points (the reference multiplies its per-point means by ``K`` to
match the official TensorFlow sums). After every Adam step the displacement ``x' - x`` is
surface-projected with the clean cloud's normals (the part of a point's move against its
normal is removed) and then clipped per point to Euclidean norm ``clip``.

``paper`` preset = the defaults below; ``ifd`` preset = ``loss="margin"``, ``kappa=15``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attacks import register_attack
from attacks.base import TARGET_RULES, Attack
from attacks.bookkeeping import ClosestSuccess
from attacks.constraints import clip_per_point, project_to_surface
from attacks.losses import LOSS_KINDS, adversarial_loss
from attacks.search import seeded_normal
from benchmark.core.geometry import ReferenceNeighbours, chamfer_distance, estimate_normals, knn
from benchmark.core.params import choice, count, nonnegative, param, positive

__all__ = ["KNN", "knn_smoothness"]

#: reference candidates per point for the per-iteration neighbour searches (ReferenceNeighbours)
_CANDIDATES = 64


def knn_smoothness(adv: Tensor, k: int = 5, alpha: float = 1.05, *, neighbour_dist: Tensor | None = None) -> Tensor:
    """kNN smoothness penalty of PROTOCOL.md section 1 (IF-Defense ``KNNDist``), ``[B]``.

    For each point ``p`` of ``adv``, ``d_p`` = mean squared distance to its ``k`` nearest
    neighbours within the same cloud (the point itself excluded). Only points with
    ``d_p > mean + alpha * std`` of that cloud (unbiased std, as ``torch.std`` in the
    reference; threshold computed without gradient) contribute; the loss is the mean over
    all points of ``d_p * indicator``.

    Args:
        adv: ``[B, N, 3]`` float, ``N >= k + 1``.
        k: neighbours per point.
        alpha: threshold factor.
        neighbour_dist: ``[B, N, k]`` the squared distances ``knn(adv, k, exclude_self=True)``
            returns, when the caller found them another way (e.g. ``ReferenceNeighbours``).

    Returns:
        ``[B]``, differentiable w.r.t. ``adv``.
    """
    dist = knn(adv, k, exclude_self=True)[1] if neighbour_dist is None else neighbour_dist  # [B, N, k] squared
    value = dist.mean(dim=-1)  # [B, N]
    with torch.no_grad():
        threshold = value.mean(dim=1) + alpha * value.std(dim=1)  # [B]
        mask = (value > threshold[:, None]).to(value.dtype)
    return (value * mask).mean(dim=1)


@register_attack("knn", tags=("strong",))
@dataclass
class KNN(Attack):
    """kNN attack: Chamfer + kNN-smoothness penalty, surface projection and per-point clip.

    Hyperparameters (defaults = MRPD ``paper`` preset):
        num_iter: Adam iterations (no binary search).
        lr: Adam learning rate.
        k, alpha: kNN smoothness neighbours and threshold factor.
        chamfer_weight, smooth_weight: weights of adv2ori Chamfer and kNN smoothness (both
            multiplied by the number of points ``K``).
        clip: per-point Euclidean bound on ``x' - x``.
        normal_k: neighbours of the PCA normal estimate of the clean cloud.
        loss, kappa: adversarial loss (``"ce"`` or ``"margin"``) and its margin.
        seed: seeds the targets and the start noise per (seed, sample index).
        target_rule: targets drawn when none are given (targeted mode): ``random`` (uniform
            over the other classes, PROTOCOL.md) or ``runner-up`` (the class the model ranks
            second on the clean cloud: the easiest target).
        early_stop: a sample stops at its first successful iterate (and leaves the batch)
            instead of searching on for a smaller Chamfer distance (``paper``: False).

    Bookkeeping (PROTOCOL.md section 1, C&W-style): every iterate is evaluated before its
    update, and the final iterate after the last update/projection/clip is evaluated too;
    per sample the kept cloud is the successful iterate (``pred == target``) with the
    smallest adv2ori Chamfer distance, else the final iterate. ``iterations`` = index of the
    kept iterate (Adam updates done before it), ``num_iter`` for a failure.

    Normals: ``Attack.__call__`` passes only points, so through the standard interface the
    clean cloud's normals are estimated (``estimate_normals(points, k=normal_k)``); a caller
    with dataset normals can call ``attack(..., normals=...)`` directly.

    Differences from the reference (IF-Defense ``CWKNN``): the reference returns the last
    iterate; we keep the closest successful one (PROTOCOL.md); losses are summed over the
    batch instead of averaged (per-sample results do not depend on the batch); the start
    noise is seeded per sample.
    """

    num_iter: int = count(2500)
    lr: float = positive(1e-3)
    k: int = count(5)
    alpha: float = param(1.05)
    chamfer_weight: float = nonnegative(5.0)
    smooth_weight: float = nonnegative(3.0)
    clip: float = nonnegative(0.1)
    normal_k: int = count(10, minimum=3)
    loss: str = choice("ce", LOSS_KINDS)
    kappa: float = nonnegative(0.0)
    seed: int = param(0)
    target_rule: str = choice("random", TARGET_RULES)
    early_stop: bool = param(False)

    targeted = True

    def distance(self, adv: Tensor, points: Tensor, *, chamfer: Tensor | None = None,
                 neighbour_dist: Tensor | None = None) -> Tensor:
        """Per-sample penalty ``K * (chamfer_weight * chamfer + smooth_weight * knn_smooth)``, ``[B]``.

        ``chamfer``: the adv2ori Chamfer distance of ``adv`` when the caller already has it;
        ``neighbour_dist``: its ``[B, N, k]`` squared kNN distances within ``adv``, likewise.
        """
        n = adv.shape[1]
        cd = chamfer_distance(adv, points, mode="adv2ori") if chamfer is None else chamfer
        sm = knn_smoothness(adv, self.k, self.alpha, neighbour_dist=neighbour_dist)
        return n * (self.chamfer_weight * cd + self.smooth_weight * sm)

    def attack(
        self,
        model: nn.Module,
        points: Tensor,
        labels: Tensor,
        targets: Tensor | None,
        *,
        indices: Tensor,
        normals: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        batch, n, _ = points.shape
        device, dtype = points.device, points.dtype
        if n < self.k + 1:
            raise ValueError(f"KNN: clouds need at least k + 1 = {self.k + 1} points; got N = {n}")
        points = points.detach()
        # every point stays within `clip` of its clean position: neighbour searches over candidates
        # found once on the clean cloud, exact (full search where the candidates do not suffice)
        local = ReferenceNeighbours(points, m=min(n, _CANDIDATES))
        if normals is None:  # the clean cloud's neighbourhoods are the candidates' first columns
            k_normal = min(self.normal_k, n)
            normals = estimate_normals(points, k=k_normal, neighbours=local.candidates if local.m >= k_normal else None)
        else:
            if normals.shape != points.shape:
                raise ValueError(f"normals must have the shape of points {list(points.shape)}; got {list(normals.shape)}")
            normals = normals.to(device=device, dtype=dtype)
            normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)

        noise = seeded_normal((n, 3), indices, self.seed, "knn-start", device=device, dtype=dtype)
        var = (points + noise * 1e-7).requires_grad_(True)
        opt = torch.optim.Adam([var], lr=self.lr)

        kept = ClosestSuccess(var, self.num_iter, early_stop=self.early_stop)

        def record(rows: Tensor, logits: Tensor, adv: Tensor, t: int, dist: Tensor) -> None:
            kept.record(rows, adv, dist, logits.argmax(dim=1) == targets[rows], t)

        for t in range(self.num_iter):
            rows = kept.active()
            if rows.numel() == 0:
                break
            # only the samples still searching cost a model pass (all without early_stop); while
            # all are, the full tensors are used as they are (no per-iteration copies of the
            # candidates' [3, B, N, m] coordinates)
            subset = None if rows.numel() == batch else rows
            adv = var if subset is None else var[rows]
            logits = model(adv)
            # the iterate's Chamfer distance serves both the bookkeeping and the loss: one
            # nearest-neighbour search per iteration instead of two
            cd = local.nearest_reference(adv, subset)[0].mean(dim=1)
            with torch.no_grad():
                record(rows, logits, adv.detach(), t, cd.detach())
            adv_l = adversarial_loss(logits, labels[rows], targets[rows], self.loss, self.kappa)
            smooth = local.knn_within(adv, self.k, subset)[1]
            clean = points if subset is None else points[rows]
            loss = (adv_l + self.distance(adv, clean, chamfer=cd, neighbour_dist=smooth)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                delta = project_to_surface(var - points, normals)
                var.copy_(points + clip_per_point(delta, self.clip))

        last = var.detach().clone()
        rows = kept.active()
        if rows.numel():
            subset = None if rows.numel() == batch else rows
            with torch.no_grad():
                adv = last if subset is None else last[rows]
                record(rows, model(adv), adv, self.num_iter, local.nearest_reference(adv, subset)[0].mean(dim=1))
        return kept.result(last)
