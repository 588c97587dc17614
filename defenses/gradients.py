"""How an adaptive attacker differentiates a defense: BPDA and EOT (Athalye et al. 2018).

* :func:`straight_through` (BPDA): a tensor equal to the defense's output whose gradient
  with respect to the defense's input is the identity (mapped through nearest points when
  the defense reorders, removes or adds points).
* :class:`StraightThroughView`: a preprocessing defense seen through BPDA. It shares the
  defense's parameters and random stream and holds no state of its own, so several views
  (or threads) may use one defense at once.
* :class:`ExpectationOverTransformation` (EOT): mean logits over several forwards of a
  randomised model, whose gradient is the mean of the draws' gradients.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn

from benchmark.core.geometry import nearest_neighbor

__all__ = ["ExpectationOverTransformation", "StraightThroughView", "straight_through"]


class _Preprocessed(Protocol):
    """What :class:`StraightThroughView` needs of a defense (``defenses.base.PreprocessedModel``)."""

    classifier: nn.Module
    class_names: tuple[str, ...]

    def defend(self, points: Tensor, *, bpda: bool = False) -> Tensor: ...


class StraightThroughView(nn.Module):
    """``defended`` differentiated with BPDA: ``classifier(straight_through(x, preprocess(x)))``.

    Forward values equal ``defended(x)`` (same parameters, same random stream); only the
    gradient differs. Re-entrant: nothing is switched on the shared defense.
    """

    def __init__(self, defended: _Preprocessed) -> None:
        super().__init__()
        self.defended = defended
        self.class_names = defended.class_names

    def forward(self, points: Tensor) -> Tensor:
        return self.defended.classifier(self.defended.defend(points, bpda=True))


class ExpectationOverTransformation(nn.Module):
    """Mean logits over ``draws`` forwards of a randomised model (EOT, Athalye et al. 2018):
    its gradient is the average of the draws' gradients."""

    def __init__(self, model: nn.Module, draws: int) -> None:
        super().__init__()
        if draws < 1:
            raise ValueError(f"EOT needs at least one draw; got {draws}")
        self.model = model
        self.draws = int(draws)
        self.class_names = getattr(model, "class_names", ())

    def forward(self, points: Tensor) -> Tensor:
        return torch.stack([self.model(points) for _ in range(self.draws)]).mean(0)


class _StraightThrough(torch.autograd.Function):
    """Forward: the defended cloud. Backward: the identity, mapped through nearest points."""

    @staticmethod
    def forward(ctx: Any, points: Tensor, defended: Tensor, aligned: bool) -> Tensor:
        if aligned:
            if defended.shape != points.shape:
                raise ValueError(f"straight_through(aligned=True) needs the output shape of the input "
                                 f"{tuple(points.shape)}; got {tuple(defended.shape)}")
            ctx.index = None
        else:  # each output point's gradient goes to its nearest input point
            _, index = nearest_neighbor(defended.detach(), points.detach())
            ctx.index = index
        ctx.num_points = points.shape[1]
        return defended.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        if ctx.index is None:
            return grad, None, None
        out = grad.new_zeros(grad.shape[0], ctx.num_points, 3)
        out.scatter_add_(1, ctx.index.unsqueeze(-1).expand(-1, -1, 3), grad)
        return out, None, None


def straight_through(points: Tensor, defended: Tensor, aligned: bool = False) -> Tensor:
    """BPDA: a tensor equal to ``defended`` whose gradient w.r.t. ``points`` is the identity.

    Args:
        points: ``[B, N, 3]`` the defense's input.
        defended: ``[B, M, 3]`` the defense's output (``M`` may differ from ``N``).
        aligned: output point ``i`` is input point ``i`` moved (same shape, same order, e.g.
            jitter): the gradient passes through unchanged. Otherwise (the default: SOR
            moves the kept points to the front, DUP-Net and IF-Defense resample) each output
            point's gradient is added to its nearest input point, which is the identity on the
            points the defense kept or moved a little.

    Returns:
        ``[B, M, 3]`` equal to ``defended``.
    """
    return _StraightThrough.apply(points, defended, bool(aligned))
