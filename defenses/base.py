"""The common defense interface: a ``Defense`` prepares a defended classifier from a context.

Contract (DESIGN.md): a defended model is an ``nn.Module`` mapping points ``[B, N, 3]`` to
logits ``[B, C]``, so every attack and every evaluation works on it unchanged. On top of
that it declares what the harness and an adaptive attacker need to know:

- ``kind``: ``"preprocess"`` (transforms the input, then the victim classifies) or
  ``"model"`` (changes the classifier itself: training-time defenses);
- ``gradient``: ``"exact"`` (differentiable end to end) or ``"bpda"`` (its forward runs the
  defense; an attacker differentiates it as the identity, Athalye et al. 2018);
- ``randomized``: whether two forwards of the same cloud may differ (an adaptive attacker
  then uses EOT: the expectation over ``eot`` draws).

A plug-in defense is a few lines::

    from dataclasses import dataclass
    from defenses import PreprocessDefense, register_defense

    @register_defense("jitter")
    @dataclass
    class Jitter(PreprocessDefense):
        '''Gaussian noise on every coordinate (randomised).'''
        sigma: float = 0.01
        randomized = True
        def preprocess(self, points, generator):
            return points + self.sigma * torch.randn(points.shape, generator=generator).to(points)

or, for anything else, a ``Defense`` whose ``prepare(ctx)`` returns any classifier module
(wrapped by :func:`as_defended` with the class's declarations).

This module holds the ``Defense`` classes; the rest of the interface lives one concept per
module and is re-exported here: :mod:`defenses.defended` (``DefendedModel``,
``PreprocessedModel``, ``check_points``), :mod:`defenses.context` (``DefenseContext``),
:mod:`defenses.cost` (``inference_cost``), :mod:`defenses.gradients` (BPDA, EOT).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from benchmark.core.params import check_fields

from .context import DefenseContext
from .cost import inference_cost
from .defended import GRADIENTS, KINDS, DefendedModel, PreprocessedModel, check_points
from .gradients import ExpectationOverTransformation, StraightThroughView, straight_through  # noqa: F401

__all__ = [
    "KINDS",
    "GRADIENTS",
    "Defense",
    "DefenseContext",
    "DefendedModel",
    "ExpectationOverTransformation",
    "ModelDefense",
    "PreprocessDefense",
    "PreprocessedModel",
    "as_defended",
    "check_points",
    "inference_cost",
    "straight_through",
]


# --------------------------------------------------------------------------- defenses


class Defense:
    """Base class of every defense: a dataclass of hyperparameters with ``prepare``.

    Class attributes declare what the prepared model is (see the module docstring):
    ``kind``, ``gradient``, ``randomized``. ``prepare(ctx)`` returns the defended
    classifier; returning a plain ``nn.Module`` is fine, :func:`as_defended` attaches the
    declarations.
    """

    kind: ClassVar[str] = "model"
    gradient: ClassVar[str] = "exact"
    randomized: ClassVar[bool] = False

    def __post_init__(self) -> None:
        """Check every hyperparameter against the domain its field declares
        (``benchmark.core.params``); subclasses with checks of their own call this first."""
        check_fields(self)

    def prepare(self, ctx: DefenseContext) -> nn.Module:
        """Build (train or load) the defended classifier for ``ctx``'s victim and data."""
        raise NotImplementedError(f"{type(self).__name__} must implement prepare(ctx)")

    def params(self) -> dict[str, Any]:
        """The hyperparameters (dataclass fields), for cache keys and result rows."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return {}

    def __call__(self, ctx: DefenseContext) -> DefendedModel:
        """``prepare(ctx)`` wrapped by :func:`as_defended`, on ``ctx.device``, in eval mode."""
        return as_defended(self.prepare(ctx), self).to(ctx.device).eval()


class PreprocessDefense(Defense):
    """A defense that transforms the clouds before the unchanged victim classifies them.

    Subclasses implement ``preprocess(points [B, N, 3], generator) -> [B, N', 3]``
    (vectorised over the batch; ``generator`` is the defense's CPU random stream).
    """

    kind: ClassVar[str] = "preprocess"
    gradient: ClassVar[str] = "bpda"
    #: output point ``i`` is input point ``i`` moved (BPDA passes gradients through unchanged);
    #: False (default): BPDA routes each output point's gradient to its nearest input point.
    aligned: ClassVar[bool] = False

    def preprocess(self, points: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement preprocess(points, generator)")

    def setup(self, ctx: DefenseContext) -> None:
        """Train or load whatever the preprocessing needs (default: nothing)."""

    def prepare(self, ctx: DefenseContext) -> nn.Module:
        self.setup(ctx)
        return PreprocessedModel(ctx.victim, self.preprocess, gradient=self.gradient, randomized=self.randomized,
                                 seed=ctx.seed, name=_registered_name(self), aligned=self.aligned)


class ModelDefense(Defense):
    """A defense that changes the classifier (training-time defenses); ``prepare`` returns it."""

    kind: ClassVar[str] = "model"
    gradient: ClassVar[str] = "exact"


def _registered_name(defense: object) -> str:
    """The name ``defense`` was built under (``build_defense``), else its class's first entry."""
    from benchmark.core.registry import DEFENSES

    if getattr(defense, "registry_name", None):
        return defense.registry_name

    for entry in DEFENSES.entries():
        if entry.obj is type(defense):
            return entry.name
    return type(defense).__name__.lower()


def as_defended(model: nn.Module, defense: Defense | None = None) -> DefendedModel:
    """``model`` as a :class:`DefendedModel`, declared as ``defense`` says (unchanged if it is one)."""
    if isinstance(model, DefendedModel):
        if defense is not None and not model.defense_name:
            model.defense_name = _registered_name(defense)
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{type(defense).__name__}.prepare(ctx) must return an nn.Module mapping [B, N, 3] to logits; "
            f"got {type(model).__name__}"
        )
    kind = getattr(defense, "kind", "model")
    return DefendedModel(model, kind=kind, gradient=getattr(defense, "gradient", "exact"),
                         randomized=getattr(defense, "randomized", False),
                         name=_registered_name(defense) if defense is not None else "")
