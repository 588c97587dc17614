"""``bench teachers``: do MRPD's teachers see through the attacks that fool the student?

    teacher_robustness(cfg) -> the report written to <out>/diagnostics/mrpd/teachers.{json,md}

Re-exported by :mod:`benchmark.api`; the CLI renders the markdown it writes.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from benchmark.core.config import ConfigError, RunConfig, to_jsonable

__all__ = ["REFERENCE", "diagnostics_dir", "teacher_robustness"]

REFERENCE = "student"  # the probe rescue rates are measured against


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
        ConfigError: ``views`` < 1.
        ValueError: the victim is not MRPD's prompt-capable student in the CLIP space.
    """
    import torch

    from benchmark.core.registry import populate_registries
    from benchmark.runner import Runner
    from defenses.adversarial_training import crafted_training_set
    from defenses.mrpd.diagnostics import CloudSet, Probe, probe_markdown, probe_table, teacher_probes

    if views < 1:
        raise ConfigError(f"--views must be >= 1; got {views}")
    populate_registries(cfg.plugins)
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

