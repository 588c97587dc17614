"""C&W point-adding attacks Add-CD / Add-HD (Xiang et al. CVPR 2019, "independent points";
PROTOCOL.md section 2, "add-cd, add-hd").

1. Critical points: one forward + backward of the cross-entropy towards the target on the
   clean cloud; the ``num_add`` original points with the largest squared gradient norm
   ``sum_xyz (dL/dx_i)^2`` (``topk``, per sample) are the critical points.
2. Their copies (and only them) are optimised with Adam and the binary search over the
   distance weight of ``attacks.search.binary_search_attack``, starting each binary step from
   the critical points ``+ N(0, 1e-7)``; the adversarial cloud is ``cat([points, added])``, so
   the original cloud is fixed and the first ``N`` output points are the clean cloud.
3. Distance = ``dist(added, original)``: adv2ori Chamfer (``add-cd``) or Hausdorff
   (``add-hd``) from the *added points only* to the original cloud, squared units, exactly as
   IF-Defense's ``CWAdd`` (``dist_func(adv_data, ori_data)``, ``adv_data`` = the added points).

Output ``[B, N + num_add, 3]``. If ``num_add > N`` all ``N`` points are critical and the
output is ``[B, 2N, 3]`` (the reference's ``topk`` would fail there).

Differences from the reference (IF-Defense ``baselines/attack/CW/Add.py``): the critical-point
CE is summed over the batch instead of averaged (a per-sample positive rescale: the per-sample
ranking is the same, and it does not depend on the batch); the adversarial and distance losses
are summed over the batch instead of averaged (per-sample results do not depend on the batch;
Adam is nearly scale-invariant); the start noise is seeded per (seed, sample index, binary
step); a binary step counts as a success only when it strictly improves the best distance (the
reference also accepts a tie, see ``attacks.search``); ``num_add > N`` is clamped to ``N``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks import register_attack
from attacks.base import TARGET_RULES, Attack
from attacks.losses import LOSS_KINDS, adversarial_loss
from attacks.search import binary_search_attack, check_search_params
from benchmark.core.geometry import chamfer_distance, hausdorff_distance, index_points
from benchmark.core.params import choice, count, nonnegative, param, positive

__all__ = ["AddCD", "AddHD", "critical_point_indices"]


def critical_point_indices(model: nn.Module, points: Tensor, targets: Tensor, num: int) -> Tensor:
    """Indices ``[B, min(num, N)]`` of the points with the largest squared gradient norm of the
    cross-entropy towards ``targets`` (descending order; one forward + backward, vectorised).

    The CE is summed over the batch, so each sample's gradient is its own CE's gradient.
    """
    k = min(int(num), points.shape[1])
    x = points.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), targets, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return (grad**2).sum(dim=-1).topk(k, dim=1).indices


@dataclass
class _Add(Attack):
    """Shared body of Add-CD / Add-HD (see the module docstring).

    Hyperparameters (defaults = MRPD ``paper`` preset):
        num_add: points added (= critical points copied); clamped to ``N``.
        init_weight, max_weight: initial distance weight ``w`` and initial upper bound.
        binary_steps: binary search steps (each restarts Adam from the critical points + N(0, 1e-7)).
        num_iter: Adam iterations per binary step.
        lr: Adam learning rate.
        loss, kappa: adversarial loss (``"ce"`` or ``"margin"``) and its margin (targeted).
        seed: seeds the targets and the start noise per (seed, sample index).
        target_rule: targets drawn when none are given (targeted mode): ``random`` (uniform
            over the other classes, PROTOCOL.md) or ``runner-up`` (the class the model ranks
            second on the clean cloud: the easiest target).
        early_stop: a sample stops at its first successful iterate (see ``cw``).
    """

    num_add: int = count(512)
    init_weight: float = positive(5e3)
    max_weight: float = positive(4e4)
    binary_steps: int = count(10)
    num_iter: int = count(500)
    lr: float = positive(1e-2)
    loss: str = choice("ce", LOSS_KINDS)
    kappa: float = nonnegative(0.0)
    seed: int = param(0)
    target_rule: str = choice("random", TARGET_RULES)
    early_stop: bool = param(False)

    targeted = True  # class attribute: both presets are targeted
    _stream = "add-start"

    def _distance(self, added: Tensor, points: Tensor) -> Tensor:
        raise NotImplementedError

    def __post_init__(self) -> None:
        super().__post_init__()
        check_search_params(self)

    def attack(
        self, model: nn.Module, points: Tensor, labels: Tensor, targets: Tensor | None, *, indices: Tensor
    ) -> tuple[Tensor, Tensor]:
        assert targets is not None
        n = points.shape[1]
        idx = critical_point_indices(model, points, targets, self.num_add)
        critical = index_points(points, idx).detach()  # [B, k, 3]
        make_adv: Callable[[Tensor, Tensor], Tensor] = lambda added, rows: torch.cat([points[rows], added], dim=1)
        res = binary_search_attack(
            model,
            points,
            labels,
            targets,
            indices=indices,
            param=critical,
            make_adv=make_adv,
            distance=lambda adv, rows: self._distance(adv[:, n:], points[rows]),
            adv_loss=lambda logits, rows: adversarial_loss(logits, labels[rows], targets[rows], self.loss, self.kappa),
            init_weight=self.init_weight,
            max_weight=self.max_weight,
            binary_steps=self.binary_steps,
            num_iter=self.num_iter,
            lr=self.lr,
            seed=self.seed,
            stream=self._stream,
            early_stop=self.early_stop,
        )
        # the original cloud is fixed: copy it exactly (no arithmetic touched it, but be explicit)
        out = torch.cat([points, res.points[:, n:]], dim=1)
        return out, res.iterations


@register_attack("add-cd", tags=("strong",))
@dataclass
class AddCD(_Add):
    """C&W Add-CD: add points near the critical points under an adv2ori Chamfer penalty.

    See ``_Add`` for the hyperparameters; distance = mean over added points of the squared
    distance to the nearest original point.
    """

    init_weight: float = 5e3
    max_weight: float = 4e4
    _stream = "add-cd-start"

    def _distance(self, added: Tensor, points: Tensor) -> Tensor:
        return chamfer_distance(added, points, mode="adv2ori")


@register_attack("add-hd", tags=("strong",))
@dataclass
class AddHD(_Add):
    """C&W Add-HD: add points near the critical points under an adv2ori Hausdorff penalty.

    See ``_Add`` for the hyperparameters; distance = max over added points of the squared
    distance to the nearest original point.
    """

    init_weight: float = 2e2
    max_weight: float = 9e2
    _stream = "add-hd-start"

    def _distance(self, added: Tensor, points: Tensor) -> Tensor:
        return hausdorff_distance(added, points, mode="adv2ori")
