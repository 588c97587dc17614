"""What a run's cells are made of: the cell itself, batched prediction (a CUDA out-of-memory
error retries in halves), an attack's role, per-batch seeds, the configuration's name check,
and the checkout's commit. :class:`benchmark.runner.Runner` composes them.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.core.config import RunConfig, check_params
from benchmark.core.registry import ATTACKS, DATASETS, DEFENSES, MODELS, UnknownNameError
from benchmark.store import CLEAN

__all__ = ["Cell", "attack_role", "batch_seed", "check_names", "git_commit", "is_oom", "predict"]


@dataclass(frozen=True)
class Cell:
    """One result: ``defense`` classifying ``attack``'s clouds crafted under ``protocol``."""

    protocol: str
    defense: str
    attack: str  # "clean" for the clean clouds


def git_commit(path: Path | None = None) -> str:
    """The checkout's commit hash (short), or "" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=path or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


@torch.no_grad()
def predict(model: nn.Module, points: Tensor, batch_size: int, device: torch.device,
            before_batch: Callable[[int], None] | None = None) -> Tensor:
    """Predicted labels ``[N]`` of ``model`` on ``points [N, P, 3]`` in batches; a CUDA
    out-of-memory error retries that batch in halves. ``before_batch(start)`` runs before
    each top-level batch (e.g. to reseed a randomised defense)."""

    def run(x: Tensor) -> Tensor:
        try:
            return model(x.to(device)).argmax(1).cpu()
        except RuntimeError as err:
            if not is_oom(err) or x.shape[0] == 1:
                raise
            torch.cuda.empty_cache()
            half = x.shape[0] // 2
            return torch.cat([run(x[:half]), run(x[half:])])

    out = []
    for start in range(0, points.shape[0], batch_size):
        if before_batch is not None:
            before_batch(start)
        out.append(run(points[start : start + batch_size]))
    return torch.cat(out)


def attack_role(name: str) -> str:
    """``strong``, ``min-norm`` or ``weak`` (the attack's registry tags), ``""`` for the clean cells."""
    if name == CLEAN:
        return ""
    tags = ATTACKS.get(name).tags if name in ATTACKS else ()
    return "min-norm" if "min-norm" in tags else "strong" if "strong" in tags else "weak"


def batch_seed(seed: int, *parts: Any) -> int:
    digest = hashlib.blake2b(json.dumps([seed, *parts]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def check_names(cfg: RunConfig) -> None:
    """Every name ``cfg`` holds is registered (the dataset, the selected defenses and attacks,
    the victim and surrogate) and every ``attacks:`` / ``defenses:`` / ``models:`` /
    ``datasets:`` parameter is one its entry takes; else ``UnknownNameError`` / ``ConfigError``
    naming the close matches. Needs filled registries (``populate_registries``)."""
    DATASETS.get(cfg.dataset.name)
    for registry, spec in ((DEFENSES, cfg.defense), (ATTACKS, cfg.attack), (MODELS, [cfg.victim, cfg.surrogate])):
        for name in spec:
            if name != "all" and name not in registry:
                raise UnknownNameError(registry.unknown_message(name))
    for section, registry in (("attacks", ATTACKS), ("defenses", DEFENSES), ("models", MODELS),
                              ("datasets", DATASETS)):
        check_params(section, getattr(cfg, section), registry)
