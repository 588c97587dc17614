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
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attacks.base import MAX_ABS_COORDINATE
from benchmark.core.cache import cached_training, entry_path
from benchmark.core.config import TrainConfig, config_hash
from benchmark.core.data import PointCloudDataset
from benchmark.core.params import check_fields

from .gradients import ExpectationOverTransformation, StraightThroughView, straight_through

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


# --------------------------------------------------------------------------- context


@dataclass
class DefenseContext:
    """Everything ``Defense.prepare`` may use.

    Attributes:
        victim: the trained, undefended classifier (``[B, N, 3] -> [B, C]``); a defense must
            not modify it in place (copy it to fine-tune).
        train: the training split (a defense that trains carves its validation split from
            it, never from the test set).
        device: where the defended model runs.
        seed: the run's seed (every random draw of a defense derives from it).
        cache_dir: the cache root, or None for no caching (tests).
        victim_name: registry name of the victim.
        victim_hash: sha256 of the victim's weights (part of every trained defense's key).
        train_config: ``name -> TrainConfig``, the profile's ``training`` section.
        attack_params: the profile's ``attacks`` section (parameters per attack name), so
            adversarial training uses the run's budgets.
        zoo: the run's model zoo (``models.zoo.Zoo``) for defenses that need other models
            (teachers, autoencoders); None when the caller has none.
        progress: show progress bars.
        log: one-line messages for the user.
    """

    victim: nn.Module
    train: PointCloudDataset
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    cache_dir: Path | None = None
    victim_name: str = "victim"
    victim_hash: str = ""
    train_config: Callable[[str], TrainConfig] = lambda name: TrainConfig()
    attack_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    zoo: Any = None
    progress: bool = True
    log: Callable[[str], None] = print

    def attack(self, name: str, **overrides: Any) -> Any:
        """The attack ``name`` with the run's parameters (``attack_params``), ``overrides`` on
        top, and the run's seed unless those set one (``attacks.factory.build_attack``)."""
        from attacks.factory import build_attack

        resolve = None if self.zoo is None else (lambda model: self.zoo.get(model).model)
        return build_attack(name, {**dict(self.attack_params.get(name) or {}), **overrides}, seed=self.seed,
                            resolve_model=resolve)

    def cached_training(
        self,
        name: str,
        module: nn.Module,
        spec: Mapping[str, Any],
        train: Callable[[], dict[str, Any]],
        *,
        force: bool = False,
        uses_victim: bool = True,
    ) -> tuple[dict[str, Any], bool]:
        """Load ``module``'s trained state from the cache, or run ``train()`` and store it.

        The key hashes ``spec`` (the defense's parameters and training settings) with the
        victim's weights hash (unless ``uses_victim`` is False: a part trained on clouds alone,
        such as an upsampler, is reused across victims), the training data fingerprint, the seed
        and the module's parameter names and shapes. ``train()`` trains ``module`` in place and
        returns its metadata (scores, epochs). A corrupt entry is reported once and retrained.

        Returns:
            ``(meta, cached)``: the metadata and whether the state came from the cache.
        """
        if self.cache_dir is None:
            return train(), False
        key = {
            "defense": name,
            "spec": dict(spec),
            "victim": self.victim_hash if uses_victim else None,
            "dataset": self.train.fingerprint,
            "seed": self.seed,
            "arch": config_hash([(k, list(v.shape)) for k, v in module.state_dict().items()]),
        }
        path = entry_path(self.cache_dir, "defenses", f"{name}-{config_hash(key)}", ".safetensors")
        meta, cached, _ = cached_training(path, module, train, force=force, what=name)
        if cached:
            self.log(f"{name}: loaded cached training")
        return meta, cached


# --------------------------------------------------------------------------- defended models


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


@torch.no_grad()
def inference_cost(
    defended: nn.Module, victim: nn.Module, points: Tensor, *, repeats: int = 3, warmup: int = 1
) -> dict[str, float]:
    """Seconds per batch of ``defended`` and of the bare ``victim`` on ``points``, and their ratio.

    Both are timed alternately in one run (best of ``repeats`` after ``warmup``), so the ratio
    is robust to machine noise.
    """
    def timed(model: nn.Module) -> float:
        start = time.perf_counter()
        model(points)
        if points.is_cuda:
            torch.cuda.synchronize(points.device)
        return time.perf_counter() - start

    for _ in range(warmup):
        timed(victim), timed(defended)
    bare, defended_s = [], []
    for _ in range(repeats):
        bare.append(timed(victim))
        defended_s.append(timed(defended))
    b, d = min(bare), min(defended_s)
    return {"victim_seconds": b, "defended_seconds": d, "ratio": d / b if b > 0 else float("nan")}
