"""Defended models: a classifier plus the declarations an evaluation and an adaptive attacker
need (``DefendedModel``: kind, gradient, randomized; see :mod:`defenses.base`), the
preprocess-then-classify wrapper (``PreprocessedModel``) and the input check they share.

Every name is also importable from :mod:`defenses.base`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from attacks.base import MAX_ABS_COORDINATE
from defenses.gradients import ExpectationOverTransformation, StraightThroughView, straight_through

__all__ = ["GRADIENTS", "KINDS", "DefendedModel", "PreprocessedModel", "check_points"]

KINDS = ("preprocess", "model")
GRADIENTS = ("exact", "bpda")


def check_points(points: object, where: str = "defense") -> Tensor:
    """Validate a batch of clouds ``[B, N, 3]`` (float, finite, non-empty, unit-sphere scale:
    coordinates within ``attacks.base.MAX_ABS_COORDINATE``); returns it.

    Raises:
        ValueError: naming what is wrong and how to fix it.
    """
    if not isinstance(points, Tensor):
        raise ValueError(f"{where}: points must be a torch.Tensor [B, N, 3]; got {type(points).__name__}")  # noqa: TRY004
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{where}: points must have shape [B, N, 3] (batch, points, xyz); got {list(points.shape)}")
    if points.shape[0] == 0 or points.shape[1] == 0:
        raise ValueError(f"{where}: empty input {list(points.shape)}; pass at least one cloud of at least one point")
    if not points.is_floating_point():
        raise ValueError(f"{where}: points must be floating point; got {points.dtype}")
    if not bool(torch.isfinite(points).all()):
        raise ValueError(f"{where}: points contain NaN or inf values; clean the input clouds")
    largest = float(points.detach().abs().amax())
    if largest > MAX_ABS_COORDINATE:
        raise ValueError(
            f"{where}: points reach |coordinate| = {largest:.3g}, beyond {MAX_ABS_COORDINATE:.0e}; defenses expect "
            "unit-sphere-scale clouds: normalise them, e.g. with benchmark.core.data.normalize_unit_sphere_np"
        )
    return points


class DefendedModel(nn.Module):
    """A classifier plus the declarations an evaluation needs (see the module docstring).

    Args:
        classifier: the module producing logits (the victim, or a retrained / prompted model).
        kind: ``"preprocess"`` or ``"model"``.
        gradient: ``"exact"`` or ``"bpda"``.
        randomized: True when forwards of the same input may differ.
        name: the defense's registry name (for tables).
    """

    def __init__(
        self,
        classifier: nn.Module,
        *,
        kind: str = "model",
        gradient: str = "exact",
        randomized: bool = False,
        name: str = "",
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}; got {gradient!r}")
        self.classifier = classifier
        self.kind = kind
        self.gradient = gradient
        self.randomized = bool(randomized)
        self.defense_name = name
        self.class_names = tuple(getattr(classifier, "class_names", ()) or ())
        self.meta: dict[str, Any] = {}

    @property
    def num_classes(self) -> int | None:
        return getattr(self.classifier, "num_classes", None)

    def checked(self, points: Tensor) -> Tensor:
        """``points`` validated (:func:`check_points`) and cast to the classifier's floating dtype."""
        check_points(points, self.defense_name or "defense")
        param = next(self.classifier.parameters(), None)
        if param is not None and param.is_floating_point() and points.dtype != param.dtype:
            points = points.to(param.dtype)
        return points

    def forward(self, points: Tensor) -> Tensor:
        return self.classifier(self.checked(points))

    def reseed(self, seed: int) -> None:
        """Restart the defense's random stream at ``seed`` (no-op for deterministic defenses)."""

    def attackable(self, eot: int = 1) -> nn.Module:
        """The module an adaptive attacker differentiates: BPDA applied where declared, and for
        a randomised defense the mean logits over ``eot`` draws (EOT). Forward values equal this
        model's (for ``eot == 1``)."""
        model: nn.Module = self
        if self.randomized and eot > 1:
            model = ExpectationOverTransformation(model, eot)
        return model

    def extra_repr(self) -> str:
        return f"kind={self.kind}, gradient={self.gradient}, randomized={self.randomized}"


class PreprocessedModel(DefendedModel):
    """``victim(preprocess(points))``; ``preprocess`` may change the number of points.

    ``preprocess(points [B, N, 3], generator) -> [B, N', 3]`` gets a CPU ``torch.Generator``
    (the defense's own random stream, restarted by :meth:`reseed`). With
    ``gradient="bpda"``, :meth:`attackable` differentiates the preprocessing as the identity
    (:func:`straight_through`).
    """

    def __init__(
        self,
        victim: nn.Module,
        preprocess: Callable[[Tensor, torch.Generator], Tensor],
        *,
        gradient: str = "bpda",
        randomized: bool = False,
        seed: int = 0,
        name: str = "",
        aligned: bool = False,
    ) -> None:
        super().__init__(victim, kind="preprocess", gradient=gradient, randomized=randomized, name=name)
        self.preprocess = preprocess
        self.aligned = bool(aligned)
        self.generator = torch.Generator()
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))

    def defend(self, points: Tensor, *, bpda: bool = False) -> Tensor:
        """The preprocessed clouds ``[B, N', 3]``; ``bpda``: differentiated as the identity
        (:func:`~defenses.gradients.straight_through`) instead of through the preprocessing."""
        points = self.checked(points)
        out = self.preprocess(points, self.generator)
        return straight_through(points, out, aligned=self.aligned) if bpda else out

    def forward(self, points: Tensor) -> Tensor:
        return self.classifier(self.defend(points))

    def attackable(self, eot: int = 1) -> nn.Module:
        model: nn.Module = self
        if self.gradient == "bpda":
            model = StraightThroughView(self)
        if self.randomized and eot > 1:
            model = ExpectationOverTransformation(model, eot)
        return model
