"""What a defense's ``prepare`` gets (``DefenseContext``): the victim, the training split, the
run's device, seed, training settings and attack parameters, and the cache its trained parts
go to. Also importable from :mod:`defenses.base`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.core.cache import cached_training, entry_path
from benchmark.core.config import TrainConfig, config_hash
from benchmark.core.data import PointCloudDataset

__all__ = ["DefenseContext"]


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
