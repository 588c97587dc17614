"""Adversarial training (PROTOCOL.md section 3): ``pgd-at`` (Madry, the victim fine-tuned), and
the training examples that ``prompt-at`` and ``mrpd`` (``defenses.mrpd``) craft once.

- ``pgd-at``: a copy of the victim is fine-tuned on PGD examples of every training batch,
  crafted against the model being trained with the run's ``pgd`` (its budget, loss and
  norm; ``steps``/``targeted`` may be overridden for training). An
  :class:`~models.heads.EmbeddingClassifier` trains its encoder only: the head (fixed
  class text embeddings) stays as it is.
- ``crafted_training_set`` / ``training_attack``: the examples crafted **once** against the
  undefended victim (the paper's transfer setting) for ``prompt-at`` and ``mrpd``'s second
  half; ``prompt-at`` itself is MRPD without teachers (``defenses.mrpd.control``).

``pgd-at`` carves their validation split from ``ctx.train`` (never the test set), keep the epoch
with the best validation robust accuracy (clean accuracy breaks ties), and are cached by
``ctx.cached_training`` under their parameters, the training settings and the attack's
parameters. Every random draw is seeded: the attacks' targets and random starts come from
per-sample generators (``attacks.base.sample_generator``), the rest from ``fit``'s seed, so
the same seed gives the same weights.
"""
from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attacks.base import Attack
from attacks.crafting import CraftedSet, attack_name, craft, crafting_key
from benchmark.core.cache import state_dict_sha256
from benchmark.core.config import TrainConfig, config_hash, to_jsonable
from benchmark.core.data import PointCloudDataset
from benchmark.core.training import fit, split_indices
from benchmark.core.params import count, fraction, param
from defenses import register_defense
from defenses.base import DefendedModel, DefenseContext, ModelDefense
from models.heads import EmbeddingClassifier

__all__ = [
    "PGDAT",
    "crafted_training_set",
    "robust_accuracy",
    "victim_weights_hash",
]

#: Bump when a training recipe here changes, so cached defenses are retrained.
RECIPE_VERSION = 1

#: Weight of clean accuracy in the validation score (robust + TIE * clean): breaks ties only.
_TIE = 1e-4


# --------------------------------------------------------------------------- helpers


def victim_weights_hash(ctx: DefenseContext) -> str:
    """``ctx.victim_hash``, or (when the caller gave none) sha256 of the victim's state dict."""
    return ctx.victim_hash or state_dict_sha256(ctx.victim.state_dict())


def robust_accuracy(
    model: nn.Module,
    attack: Attack,
    data: PointCloudDataset,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    indices: np.ndarray | None = None,
) -> tuple[float, float]:
    """White-box ``(robust, clean)`` accuracy in [0, 1] of ``model`` on ``data``.

    Args:
        model: ``[B, N, 3] -> [B, C]``; its mode and gradient flags are restored by the attack.
        attack: crafted against ``model`` itself.
        data: the clouds.
        batch_size: clouds per attack call (does not change the result).
        indices: ``[len(data)]`` the clouds' positions handed to the attack (they seed its
            targets and random starts); default ``arange(len(data))``.
    """
    idx = torch.from_numpy(np.arange(len(data)) if indices is None else np.asarray(indices)).long()
    robust = clean = 0
    for start in range(0, len(data), batch_size):
        stop = min(start + batch_size, len(data))
        points = torch.from_numpy(data.points[start:stop]).to(device)
        labels = torch.from_numpy(data.labels[start:stop]).to(device)
        with torch.autocast(torch.device(device).type, enabled=False):
            result = attack(model, points, labels, indices=idx[start:stop])
            with torch.no_grad():
                clean += int((model(points).argmax(-1) == labels).sum())
        robust += int((result.pred.to(labels.device) == labels).sum())
    n = max(len(data), 1)
    return robust / n, clean / n


_CRAFTED: OrderedDict[str, CraftedSet] = OrderedDict()
_CRAFTED_KEEP = 2  # crafted training sets kept in memory (one run needs one)


def crafted_training_set(
    ctx: DefenseContext, attack: Attack, *, batch_size: int = 32, name: str | None = None
) -> CraftedSet:
    """Adversarial examples of every cloud of ``ctx.train``, crafted once against the undefended
    ``ctx.victim`` (MRPD's second-half training data).

    Sample ``i`` is attacked with index ``i`` (its position in ``ctx.train``), so the result
    does not depend on the validation split or the batch size. Kept in memory for the run
    (keyed by attack, victim weights and data) and, with ``ctx.cache_dir``, in the
    adversarial-example cache, so ``prompt-at`` and MRPD share one crafting.

    Args:
        batch_size: clouds per attack call (does not change the examples).
        name: the cache entry's name (default: the attack's registry name).

    Returns:
        ``CraftedSet`` on the CPU: ``points`` ``[len(ctx.train), N, 3]``.
    """
    key = crafting_key(attack, model_hash=victim_weights_hash(ctx), dataset_fingerprint=ctx.train.fingerprint,
                       split=ctx.train.split, name=name)
    memo = config_hash(key)
    if memo in _CRAFTED:
        _CRAFTED.move_to_end(memo)
        return _CRAFTED[memo]
    crafted = craft(attack, ctx.victim, ctx.train.points, ctx.train.labels, key=key, cache_dir=ctx.cache_dir,
                    batch_size=batch_size, progress=ctx.progress)
    ctx.log(f"{key['attack']}: {'loaded' if crafted.cached else 'crafted'} {len(crafted)} training examples "
            f"against the victim (success {100 * crafted.success_rate:.1f}%, {crafted.seconds:.0f} s)")
    _CRAFTED[memo] = crafted
    while len(_CRAFTED) > _CRAFTED_KEEP:
        _CRAFTED.popitem(last=False)
    return crafted


#: attacks a training-time defense may craft its examples with (``adv_attack``)
TRAINING_ATTACKS = ("pgd", "apgd")


def training_attack(ctx: DefenseContext, name: str, steps: int | None, targeted: bool | None,
                    budget: float | None) -> Attack:
    """The run's ``name`` attack (``pgd`` or ``apgd``) for crafting training examples, with the
    overrides that are not None; ``budget`` is an absolute L2 radius over all coordinates (for
    ``apgd``, whose registered budget scales with the cloud size, it sets ``budget_scale``)."""
    if name not in TRAINING_ATTACKS:
        raise ValueError(f"adv_attack must be one of {TRAINING_ATTACKS}; got {name!r}")
    overrides: dict[str, Any] = {"steps": steps, "targeted": targeted, "budget": budget}
    if budget is not None and name == "apgd":
        overrides["budget_scale"] = "absolute"
    return ctx.attack(name, **{k: v for k, v in overrides.items() if v is not None})


def _spec(defense: ModelDefense, cfg: TrainConfig, attack: Attack) -> dict[str, Any]:
    """What a trained defense depends on besides victim, data and seed (``cached_training`` adds those)."""
    return {
        "recipe": RECIPE_VERSION,
        "params": to_jsonable(defense.params()),
        "train": to_jsonable(dataclasses.asdict(cfg)),
        "attack": {"name": attack_name(attack), "params": to_jsonable(dataclasses.asdict(attack))},
    }


def _epoch_counter(num_train: int, cfg: TrainConfig) -> Callable[[], int]:
    """A function returning the current epoch of ``fit`` when called once per training step
    (``fit`` takes ``max(1, len(train) // batch_size)`` steps per epoch)."""
    per_epoch = max(1, num_train // cfg.batch_size)
    calls = [0]

    def epoch() -> int:
        calls[0] += 1
        return (calls[0] - 1) // per_epoch

    return epoch


def _score(robust: float, clean: float) -> float:
    return robust + _TIE * clean


def _result_meta(result: Any, scores: list[tuple[float, float]], cfg: TrainConfig) -> dict[str, Any]:
    best = scores[result.best_epoch] if scores and result.best_epoch >= 0 else (None, None)
    return {
        "epochs": cfg.epochs,
        "best_epoch": result.best_epoch,
        "val_robust_accuracy": best[0],
        "val_clean_accuracy": best[1],
        "train_loss": result.train_loss[-1] if result.train_loss else None,
    }


def _defended(model: nn.Module, meta: dict[str, Any], cached: bool) -> DefendedModel:
    defended = DefendedModel(model, kind="model", gradient="exact", randomized=False)
    defended.meta = {**meta, "cached": cached}
    return defended


# --------------------------------------------------------------------------- pgd-at


@register_defense("pgd-at")
@dataclass
class PGDAT(ModelDefense):
    """PGD adversarial training (Madry et al.): the victim fine-tuned on the run's PGD examples.

    Hyperparameters:
        steps: PGD steps while training and validating (None = the run's ``pgd`` steps);
            the step size follows the run's ``pgd`` (``eps / steps`` unless it sets one).
        targeted: False (default) trains on untargeted examples, as Madry et al.; None = as
            the run's ``pgd`` (targeted in the ``paper`` preset).
        mix_clean: weight ``w`` of the clean loss: ``(1 - w) * CE(adv) + w * CE(clean)``
            (0 = adversarial examples only, as Madry et al.).
        val_limit: at most this many validation clouds are attacked after each epoch to pick
            the best checkpoint (robust accuracy against the model being trained).

    Epochs, learning rate and batch size: ``training.pgd-at`` (over ``training.default``).
    The examples of each batch are crafted with the model in eval mode (BatchNorm running
    statistics), in fp32, from per-sample seeds that change with the epoch.
    """

    steps: int | None = count(None)
    targeted: bool | None = param(False, optional=True)
    mix_clean: float = fraction(0.0)
    val_limit: int | None = count(256, optional=True)

    def training_attack(self, ctx: DefenseContext) -> Attack:
        """The run's ``pgd`` with this defense's overrides (``steps``, ``targeted``)."""
        overrides: dict[str, Any] = {}
        if self.steps is not None:
            overrides["steps"] = self.steps
        if self.targeted is not None:
            overrides["targeted"] = self.targeted
        return ctx.attack("pgd", **overrides)

    def prepare(self, ctx: DefenseContext) -> nn.Module:
        cfg = ctx.train_config("pgd-at")
        attack = self.training_attack(ctx)
        model = copy.deepcopy(ctx.victim).to(ctx.device)
        model.requires_grad_(False)
        trainable = list(model.encoder.parameters()) if isinstance(model, EmbeddingClassifier) else list(model.parameters())
        for p in trainable:
            p.requires_grad_(True)

        def train() -> dict[str, Any]:
            return self._train(ctx, model, trainable, attack, cfg)

        meta, cached = ctx.cached_training("pgd-at", model, _spec(self, cfg, attack), train)
        model.requires_grad_(False)
        return _defended(model.eval(), meta, cached)

    def _train(
        self, ctx: DefenseContext, model: nn.Module, params: list[nn.Parameter], attack: Attack, cfg: TrainConfig
    ) -> dict[str, Any]:
        train_idx, val_idx = split_indices(ctx.train, cfg.val_fraction, ctx.seed)
        train = ctx.train.subset(train_idx)
        if self.val_limit is not None:
            val_idx = val_idx[: self.val_limit]
        global_idx = torch.from_numpy(train_idx).long()
        epoch_of_step = _epoch_counter(len(train), cfg)
        w = self.mix_clean

        def step(points: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
            # fresh targets / starts every epoch, still a pure function of (seed, cloud, epoch)
            seeds = global_idx[idx] + epoch_of_step() * len(ctx.train)
            with torch.autocast(points.device.type, enabled=False):
                adv = attack(model, points.float(), labels, indices=seeds).points
            loss = (1 - w) * nn.functional.cross_entropy(model(adv), labels, label_smoothing=cfg.label_smoothing)
            if w > 0:
                loss = loss + w * nn.functional.cross_entropy(model(points), labels, label_smoothing=cfg.label_smoothing)
            return loss

        val = ctx.train.subset(val_idx) if len(val_idx) else None
        scores: list[tuple[float, float]] = []

        def validate() -> float:
            assert val is not None
            scores.append(robust_accuracy(model, attack, val, batch_size=cfg.batch_size, device=ctx.device,
                                          indices=val_idx))
            return _score(*scores[-1])

        result = fit(model, train, cfg, step, params=params, validate=validate if val is not None else None,
                     device=ctx.device, seed=ctx.seed, description="pgd-at", progress=ctx.progress, log=ctx.log)
        return _result_meta(result, scores, cfg)
