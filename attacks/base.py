"""The common attack interface: ``Attack`` does the bookkeeping, a subclass only the algorithm.

Contract with models (written down once): a model is an ``nn.Module`` mapping points
``[B, N, 3]`` float to logits ``[B, C]``; that is all an attack may assume, so a defended
model works unchanged.

    @register_attack("pgd")
    @dataclass
    class PGD(Attack):
        '''Projected gradient descent on the points (global L2 ball).'''
        budget: float = 0.08
        def attack(self, model, points, labels, targets, *, indices): ...

``Attack.__call__`` validates the inputs, puts the model in eval mode with parameter
gradients off (restoring both afterwards), moves the points to the model's device and
dtype, draws targets for a targeted attack (PROTOCOL.md section 1, "Targets"), times the
algorithm and measures the result (prediction, success, L2 / Chamfer / Hausdorff).
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchmark.core.geometry import nearest_neighbor
from benchmark.core.params import check_fields

__all__ = ["MAX_ABS_COORDINATE", "TARGET_RULES", "Attack", "AttackResult", "draw_targets", "runner_up_targets",
           "sample_generator", "seeded_uniform"]

#: Largest coordinate magnitude an attack accepts. Clouds are unit-sphere scale and budgets absolute:
#: beyond this, float32 cannot resolve a perturbation of attack size (spacing ~1e-3 at 1e4) and squared
#: distances overflow further out, so results would be silently meaningless.
MAX_ABS_COORDINATE = 1e4


@dataclass
class AttackResult:
    """What an attack returns, per sample of the batch.

    Attributes:
        points: ``[B, N', 3]`` adversarial clouds (``N'`` may differ from ``N``).
        success: ``[B]`` bool; targeted: ``pred == target``, untargeted: ``pred != label``.
        pred: ``[B]`` long, the model's prediction on ``points``.
        target: ``[B]`` long targets, or None for an untargeted attack.
        iterations: ``[B]`` long, iterations the attack reports for each sample.
        l2: ``[B]`` whole-cloud L2 norm of ``points - clean`` (cloud units); NaN when ``N' != N``.
        chamfer: ``[B]`` adv2ori Chamfer distance (squared units, PROTOCOL.md section 1).
        hausdorff: ``[B]`` adv2ori Hausdorff distance (squared units).
        seconds: wall time of the algorithm for the whole batch (validation and the final
            evaluation excluded).
    """

    points: Tensor
    success: Tensor
    pred: Tensor
    target: Tensor | None
    iterations: Tensor
    l2: Tensor
    chamfer: Tensor
    hausdorff: Tensor
    seconds: float

    @property
    def success_rate(self) -> float:
        """Fraction of successful samples."""
        return float(self.success.float().mean())


# --------------------------------------------------------------------------- seeded randomness


def _mixed_seed(stream: str, seed: int, index: int) -> int:
    """A stable 63-bit seed from (stream, seed, sample index), the same on every platform."""
    digest = hashlib.blake2b(f"{stream}:{int(seed)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def sample_generator(stream: str, seed: int, index: int) -> torch.Generator:
    """A CPU generator seeded by (stream, seed, sample index): one sample's own randomness."""
    return torch.Generator().manual_seed(_mixed_seed(stream, seed, index))


def seeded_uniform(
    shape: tuple[int, ...], indices: Tensor, seed: int, stream: str, *, device=None, dtype=torch.float32
) -> Tensor:
    """``U[0, 1)`` noise ``[B, *shape]`` where row ``b`` depends only on ``(stream, seed, indices[b])``,
    so a sample's noise does not depend on which batch it is in."""
    rows = [torch.rand(shape, generator=sample_generator(stream, seed, int(i))) for i in indices.tolist()]
    return torch.stack(rows).to(device=device, dtype=dtype)


def draw_targets(labels: Tensor, num_classes: int, seed: int = 0, indices: Tensor | None = None) -> Tensor:
    """Targets uniformly random among the classes other than the label (PROTOCOL.md section 1).

    Sample ``b``'s target depends only on ``(seed, indices[b], labels[b], num_classes)``, so
    every defense, run, shard and batch composition sees the same targets.

    Args:
        labels: ``[B]`` long in ``[0, num_classes)``.
        num_classes: ``C >= 2``.
        seed: the attack's seed.
        indices: ``[B]`` the samples' positions in the test set; default ``arange(B)``.

    Returns:
        ``[B]`` long on ``labels``' device, never equal to ``labels``.
    """
    if num_classes < 2:
        raise ValueError(f"a targeted attack needs at least 2 classes; the model has {num_classes}")
    if indices is None:
        indices = torch.arange(labels.shape[0])
    draws = [
        int(torch.randint(num_classes - 1, (1,), generator=sample_generator("targets", seed, int(i))))
        for i in indices.tolist()
    ]
    r = torch.tensor(draws, dtype=torch.long, device=labels.device)
    return r + (r >= labels).long()  # skip the label: uniform over the other C - 1 classes


#: how a targeted attack picks targets when none are given (its ``target_rule`` field)
TARGET_RULES = ("random", "runner-up")


def runner_up_targets(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B]`` long: the class with the highest logit other than the label (the easiest
    target). ``logits``: ``[B, C]`` on the clean clouds, ``C >= 2``; ``labels``: ``[B]``."""
    if logits.shape[1] < 2:
        raise ValueError(f"a targeted attack needs at least 2 classes; the model has {logits.shape[1]}")
    masked = logits.detach().clone()
    masked[torch.arange(labels.shape[0], device=masked.device), labels.to(masked.device)] = -math.inf
    return masked.argmax(dim=1).to(labels.device)


# --------------------------------------------------------------------------- the base class


def _model_device_dtype(model: nn.Module, points: Tensor) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return points.device, points.dtype


def _check_index_tensor(name: str, t: object, batch: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [B] and dtype int64; got {type(t).__name__}")  # noqa: TRY004 - one error type for bad input
    if t.dtype != torch.long:
        raise ValueError(f"{name} must have dtype torch.int64 (long); got {t.dtype}. Fix: {name}.long()")
    if t.shape != (batch,):
        raise ValueError(f"{name} must have shape [B] = [{batch}] to match points; got {list(t.shape)}")
    return t


class Attack:
    """Base class of every attack: subclasses are dataclasses of hyperparameters with an
    ``attack`` method holding only the algorithm.

    Subclasses set ``targeted`` (a class attribute, or a dataclass field when the attack
    supports both modes) and ``seed`` (field, default 0) when they draw random targets
    or noise, and implement::

        attack(model, points [B,N,3], labels [B], targets [B] | None, *, indices [B])
            -> (adv_points [B,N',3], iterations [B] long)

    ``attack`` is called with the model in eval mode, parameter gradients off, autograd
    enabled, and every tensor on the model's device.
    """

    targeted: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        """Check every hyperparameter against the domain its field declares
        (``benchmark.core.params``); subclasses with checks of their own call this first."""
        check_fields(self)

    def required_models(self) -> dict[str, str]:
        """Other models this attack needs, ``slot -> registry model name`` (AdvPC: its
        autoencoder). The harness resolves each through the model zoo once and hands it over
        with :meth:`bind_models` before the first call (``attacks.factory.build_attack``)."""
        return {}

    def bind_models(self, **modules: nn.Module) -> Attack:
        """Hand over the models :meth:`required_models` names (by slot); returns ``self``."""
        unknown = sorted(set(modules) - set(self.required_models()))
        if unknown:
            raise ValueError(f"{type(self).__name__} needs no model called {', '.join(unknown)}; "
                             f"it needs: {', '.join(self.required_models()) or 'none'}")
        return self

    def attack(
        self, model: nn.Module, points: Tensor, labels: Tensor, targets: Tensor | None, *, indices: Tensor
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """The algorithm: ``(adv_points, iterations)``, or ``(adv_points, iterations, success)``
        for attacks whose success rule is more than the prediction on ``adv_points`` (AdvPC,
        AOF); the base class then reports that ``success`` instead of its own rule."""
        raise NotImplementedError(f"{type(self).__name__} must implement attack()")

    def __call__(
        self,
        model: nn.Module,
        points: Tensor,
        labels: Tensor,
        targets: Tensor | None = None,
        *,
        indices: Tensor | None = None,
    ) -> AttackResult:
        """Attack ``model`` on a batch.

        Args:
            model: ``nn.Module``, ``[B, N, 3] -> [B, C]`` logits. Left unmodified.
            points: ``[B, N, 3]`` float, unit-sphere scale, finite.
            labels: ``[B]`` long in ``[0, C)``.
            targets: ``[B]`` long, ``!= labels`` (targeted attacks only); None draws them with
                ``draw_targets(labels, C, self.seed, indices)``, or takes the model's runner-up
                class on the clean cloud when the attack's ``target_rule`` is ``"runner-up"``.
            indices: ``[B]`` long, the samples' positions in the test set (seeds targets and
                noise per sample); default ``arange(B)``.

        Returns:
            ``AttackResult``.
        """
        points = self._check_points(points)
        batch = points.shape[0]
        labels = _check_index_tensor("labels", labels, batch)
        if indices is None:
            indices = torch.arange(batch)
        indices = _check_index_tensor("indices", indices, batch)
        if targets is not None and not self.targeted:
            raise ValueError(
                f"{type(self).__name__} is untargeted (targeted=False) but targets were given; "
                "pass targets=None or use targeted=True"
            )

        device, dtype = _model_device_dtype(model, points)
        points = points.detach().to(device=device, dtype=dtype)
        labels = labels.to(device)
        modes = [(m, m.training) for m in model.modules()]
        grads = [(p, p.requires_grad) for p in model.parameters()]
        try:
            model.eval()
            for p, _ in grads:
                p.requires_grad_(False)
            with torch.no_grad():
                clean_logits = model(points)
            num_classes = self._check_logits(clean_logits, batch)
            if not bool(torch.isfinite(clean_logits).all()):
                bad = (~torch.isfinite(clean_logits)).any(dim=1).nonzero().flatten().tolist()
                raise ValueError(
                    f"the model returned NaN or inf logits on the clean clouds (samples {bad}); "
                    "check the model's weights and that the clouds are at unit-sphere scale"
                )
            if bool(((labels < 0) | (labels >= num_classes)).any()):
                raise ValueError(
                    f"labels must lie in [0, C) = [0, {num_classes}) for this model; got values in "
                    f"[{int(labels.min())}, {int(labels.max())}]"
                )
            if self.targeted:
                if targets is None and getattr(self, "target_rule", "random") == "runner-up":
                    targets = runner_up_targets(clean_logits, labels)
                targets = self._resolve_targets(targets, labels, num_classes, indices, batch)

            start = time.perf_counter()
            with torch.enable_grad():
                out = self.attack(model, points, labels, targets, indices=indices)
            adv, iterations = out[0], out[1]
            own_success = out[2] if len(out) > 2 else None
            if adv.is_cuda:
                torch.cuda.synchronize(adv.device)
            seconds = time.perf_counter() - start

            adv = adv.detach()
            if not bool(torch.isfinite(adv).all()):
                bad = (~torch.isfinite(adv)).flatten(1).any(dim=1).nonzero().flatten().tolist()
                raise FloatingPointError(
                    f"{type(self).__name__} produced NaN or inf points (samples {bad}): the optimisation "
                    "diverged; lower its lr / step size, or report it as a bug with the attack's parameters"
                )
            with torch.no_grad():
                pred = model(adv).argmax(dim=1)
                success = pred == targets if self.targeted else pred != labels
                if own_success is not None:
                    success = own_success.to(success.device).bool()
                if adv.shape == points.shape:
                    l2 = (adv - points).flatten(1).norm(dim=1)
                else:
                    l2 = torch.full((batch,), math.nan, dtype=adv.dtype, device=adv.device)
                # adv2ori Chamfer (mean) and Hausdorff (max) share one nearest-neighbour search
                nearest, _ = nearest_neighbor(adv, points)
                chamfer = nearest.mean(dim=1)
                hausdorff = nearest.amax(dim=1)
        finally:
            for m, flag in modes:
                m.training = flag
            for p, flag in grads:
                p.requires_grad_(flag)
        return AttackResult(
            points=adv,
            success=success,
            pred=pred,
            target=targets,
            iterations=iterations.to(device=adv.device, dtype=torch.long),
            l2=l2,
            chamfer=chamfer,
            hausdorff=hausdorff,
            seconds=seconds,
        )

    # -- validation helpers ------------------------------------------------------------
    @staticmethod
    def _check_points(points: object) -> Tensor:
        if not isinstance(points, Tensor):
            raise ValueError(f"points must be a torch.Tensor of shape [B, N, 3]; got {type(points).__name__}")  # noqa: TRY004 - one error type for bad input
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must have shape [B, N, 3] (batch, points, xyz); got {list(points.shape)}")
        if points.shape[0] == 0:
            raise ValueError("points is an empty batch (B = 0); pass at least one cloud")
        if points.shape[1] == 0:
            raise ValueError("points has no points (N = 0); every cloud needs at least one point")
        if not points.is_floating_point():
            raise ValueError(f"points must be a floating-point tensor; got dtype {points.dtype}")
        if not bool(torch.isfinite(points).all()):
            bad = (~torch.isfinite(points)).flatten(1).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(f"points contain NaN or inf values (samples {bad}); clean the input clouds")
        largest = float(points.detach().abs().amax())
        if largest > MAX_ABS_COORDINATE:
            raise ValueError(
                f"points reach |coordinate| = {largest:.3g}, beyond {MAX_ABS_COORDINATE:.0e}: attacks expect "
                "unit-sphere-scale clouds (budgets are absolute); normalise them, e.g. with "
                "benchmark.core.data.normalize_unit_sphere_np"
            )
        return points

    @staticmethod
    def _check_logits(logits: object, batch: int) -> int:
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
            shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the model must map [B, N, 3] points to [B, C] logits; got {shape} for B = {batch}")
        return int(logits.shape[1])

    def _resolve_targets(
        self, targets: Tensor | None, labels: Tensor, num_classes: int, indices: Tensor, batch: int
    ) -> Tensor:
        if targets is None:
            return draw_targets(labels, num_classes, self.seed, indices)
        targets = _check_index_tensor("targets", targets, batch).to(labels.device)
        if bool(((targets < 0) | (targets >= num_classes)).any()):
            raise ValueError(f"targets must lie in [0, C) = [0, {num_classes}) for this model")
        if bool((targets == labels).any()):
            bad = (targets == labels).nonzero().flatten().tolist()
            raise ValueError(
                f"targets equal labels for samples {bad}; a targeted attack needs target != label "
                "(pass targets=None to draw them)"
            )
        return targets
