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

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from benchmark.core.config import RunConfig, to_jsonable

__all__ = ["diagnostics_dir", "evaluate", "teacher_robustness"]

REFERENCE = "student"  # the probe rescue rates are measured against (teacher_robustness)


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

    from benchmark.core.registry import populate_registries
    from benchmark.core.config import resolve_config
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


def diagnostics_dir(out_dir: str | Path) -> Path:
    """Where ``bench teachers`` writes: ``<out>/diagnostics/mrpd``."""
    return Path(out_dir) / "diagnostics" / "mrpd"


def teacher_robustness(cfg: RunConfig, *, views: int = 6, train_limit: int | None = 512, console: Any = None,
                       progress: bool = True) -> dict[str, Any]:
    """``bench teachers``: do MRPD's teachers see through the attacks that fool the student?

    Gathers the clean test clouds, each attack's transferred examples (crafted against the
    victim: loaded from the adversarial-example cache when the grid has run), the training
    clouds and MRPD's crafted training examples, and classifies them with the student (no
    prompts), the student with MRPD's prompts, the image teacher on 1 and on ``views`` views
    and the point teacher (:func:`defenses.mrpd.diagnostics.probe_table`): accuracy, rescue
    rate, embedding drift. Writes ``teachers.json`` (rows, settings) and ``teachers.md`` (the
    tables) to ``<out>/diagnostics/mrpd/`` and returns the JSON's content. MRPD is trained
    or loaded, and missing examples crafted, exactly as ``bench run`` does.

    Args:
        cfg: the run configuration (its attacks, ``limit``, MRPD parameters, victim).
        views: depth views of the multi-view image teacher (the 1-view probe is always there).
        train_limit: the first N training clouds (and their crafted examples); None = all.

    Raises:
        ValueError: the victim is not MRPD's prompt-capable student in the CLIP space.
    """
    from benchmark.runner import Runner
    from defenses.adversarial_training import crafted_training_set
    from defenses.mrpd.diagnostics import CloudSet, Probe, probe_markdown, probe_table, teacher_probes

    started = time.perf_counter()
    cfg = dataclasses.replace(cfg, defense=["mrpd"], protocol=["transfer"])
    runner = Runner(cfg, console=console, progress=progress, fail_fast=True)
    runner.prepare_data()
    runner.prepare_models()
    prepared = runner.defense("mrpd")
    classifier = prepared.model.classifier
    student = runner.victim.model
    zoo, device = runner.zoo, runner.device
    mrpd = runner.defense_object("mrpd")
    ctx = runner.defense_context()
    probes = teacher_probes(zoo, student, mrpd.point_teacher, views, reference=REFERENCE)
    probes.insert(1, Probe("student+mrpd", classifier.embed, classifier.class_embeddings,
                           "the student with MRPD's point prompts, its learned-context class bank"))

    sets = [CloudSet("test: clean", runner.points, runner.labels)]
    success: dict[str, float] = {}
    for attack in runner.attack_names():
        crafted = runner.transfer_examples(attack)
        success[f"test: {attack}"] = crafted.success_rate
        sets.append(CloudSet(f"test: {attack}", crafted.points.float(), runner.labels, clean="test: clean"))
    train = ctx.train if train_limit is None else ctx.train.subset(range(min(train_limit, len(ctx.train))))
    n_train = len(train)
    sets.append(CloudSet("train: clean", torch.from_numpy(train.points).float(), torch.from_numpy(train.labels).long()))
    crafting = mrpd.crafting_attack(ctx)
    adv = crafted_training_set(ctx, crafting, batch_size=cfg.batch_size)
    success["train: mrpd examples"] = float(adv.success[:n_train].float().mean())
    sets.append(CloudSet("train: mrpd examples", adv.points[:n_train].float(), torch.from_numpy(train.labels).long(),
                         clean="train: clean"))

    with torch.no_grad():
        rows = probe_table(probes, sets, reference=REFERENCE, batch_size=cfg.batch_size, device=device,
                           log=lambda message: runner.console.print(f"  {message}"))
    for row in rows:
        row["attack_success"] = success.get(row["set"])
    meta = prepared.model.meta
    report = {
        "profile": cfg.profile, "dataset": cfg.dataset.name, "victim": cfg.victim, "device": str(device),
        "n_test": len(runner.labels), "n_train": n_train, "views": views, "reference": REFERENCE,
        "mrpd": {"params": to_jsonable(prepared.params), "best_epoch": meta.get("best_epoch"),
                 "epochs": meta.get("epochs")},
        "training_attack": to_jsonable(dataclasses.asdict(crafting)),
        "seconds": round(time.perf_counter() - started, 1), "rows": rows,
    }
    out = diagnostics_dir(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "teachers.json").write_text(json.dumps(report, indent=1) + "\n")
    intro = (f"# MRPD: do the teachers survive the attacks?\n\nWritten by `bench teachers` (profile `{cfg.profile}`, "
             f"dataset `{cfg.dataset.name}`, victim `{cfg.victim}`): the first {len(runner.labels)} test clouds and "
             f"each attack's examples transferred from the victim; the first {n_train} training clouds and the "
             "examples MRPD's adversarial half trains on (crafted against the undefended student). Rescue is "
             "measured against the undefended student.")
    markdown = probe_markdown(rows, probes, reference=REFERENCE, intro=intro)
    (out / "teachers.md").write_text(markdown + "\n")
    return report

