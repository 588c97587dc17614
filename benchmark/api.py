"""The one call a researcher uses on their own model or defense (RobustBench style).

    >>> import torch
    >>> from benchmark.api import evaluate
    >>> class Centroid(torch.nn.Module):            # any [B, N, 3] -> [B, C] classifier
    ...     def __init__(self, num_classes=33):
    ...         super().__init__()
    ...         self.head = torch.nn.Linear(3, num_classes)
    ...     def forward(self, points):
    ...         return self.head(points.abs().mean(dim=1))
    >>> rows = evaluate(Centroid(), attacks="pgd", profile="smoke", n=8,
    ...                 out_dir=tmp, progress=False)
    >>> sorted(set(rows["defense"])), sorted(set(rows["attack"]))
    (['centroid', 'none'], ['clean', 'pgd'])
    >>> bool(rows["accuracy"].between(0, 1).all())
    True

The model is evaluated as a defense of the profile's victim: under ``transfer`` it
classifies the examples crafted against the undefended victim; under ``adaptive`` the
attacks are run against it directly. The rows are exactly what ``bench run`` writes
(same columns, same results store, same caches).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from torch import nn

__all__ = ["evaluate"]


def evaluate(
    model_or_defense: nn.Module | Any | str | None = None,
    *,
    dataset: str | None = None,
    attacks: str | Sequence[str] = "all",
    defenses: str | Sequence[str] = (),
    protocol: str | Sequence[str] = "transfer",
    n: int | None = None,
    device: str = "auto",
    seed: int = 0,
    profile: str = "default",
    name: str | None = None,
    overrides: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    fail_fast: bool = True,
) -> pd.DataFrame:
    """Attack ``model_or_defense`` (beside the undefended victim) and return the result rows.

    Args:
        model_or_defense: a classifier ``nn.Module`` (``[B, N, 3] -> [B, C]`` logits for the
            dataset's classes), a ``defenses.Defense`` instance, or a registered defense name;
            None evaluates only the ``defenses`` selection.
        dataset: dataset name (default: the profile's).
        attacks: ``"all"``, a name, a comma list or a list of names.
        defenses: more registered defenses to evaluate beside it (``none`` is always there).
        protocol: ``transfer``, ``blackbox``, ``adaptive``, ``all`` or a list.
        n: evaluate the first ``n`` test clouds (default: the profile's ``limit``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:<i>``.
        seed: seed of every random choice.
        profile: ``smoke``, ``default``, ``paper``, ``ifd``.
        name: the column name of the model in the results (default: its class name, kebab case).
        overrides: ``KEY=VALUE`` strings as ``bench run --set`` takes.
        config: a mapping merged like a ``--config`` file (after the profile).
        out_dir: where the results CSV goes (default: the profile's ``out_dir``).
        cache_dir: the cache root (default: ``$PCRB_CACHE_DIR`` or the user cache dir).
        progress: show the live progress display.
        fail_fast: raise the first error instead of recording a failed row.

    Returns:
        One row per (protocol, defense, attack) cell; columns as ``benchmark.store.COLUMNS``.
    """
    import tempfile

    import yaml

    from benchmark.cli import populate_registries
    from benchmark.config import resolve_config
    from benchmark.runner import Runner

    selection = [defenses] if isinstance(defenses, str) else list(defenses)
    extra: dict[str, Any] = {}
    if isinstance(model_or_defense, str):
        selection.append(model_or_defense)
    elif model_or_defense is not None:
        label = name or _kebab(type(model_or_defense).__name__)
        extra[label] = model_or_defense
    flags: dict[str, Any] = {
        "attack": attacks, "defense": ",".join(s for s in selection if s) or "none", "protocol": protocol,
        "limit": n, "device": device, "seed": seed, "dataset": {"name": dataset},
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "out_dir": None if out_dir is None else str(out_dir),
    }
    config_file = None
    if config:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(dict(config), handle)
            config_file = handle.name
    try:
        cfg = resolve_config(profile, config_file, list(overrides), flags)
    finally:
        if config_file:
            os.unlink(config_file)
    populate_registries(cfg.plugins)
    runner = Runner(cfg, progress=progress, fail_fast=fail_fast, extra_defenses=extra)
    return runner.run()


def _kebab(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("-")
        out.append(ch.lower())
    return "".join(out).replace("_", "-") or "model"
