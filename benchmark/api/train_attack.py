"""``bench train`` and ``bench attack``: one model (or a few) outside the grid.

    train("pointnet,dgcnn", cfg) -> TrainReport     (trained, or loaded from the weights cache)
    attack("pgd,cw", cfg)        -> AttackReport    (crafted, or loaded from the adversarial cache)

Both go through :class:`benchmark.runner.Runner`'s data, zoo and crafting, so they share every
cache entry with ``bench run``. Re-exported by :mod:`benchmark.api`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmark.core.config import RunConfig

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AttackReport", "TrainReport", "attack", "train"]


def _console(console: Any) -> Any:
    from rich.console import Console

    return console if console is not None else Console(stderr=True)


@dataclass
class TrainReport:
    """``rows``: one per model: ``model``, ``params`` (count), ``score`` (its headline test
    score, as text), ``seconds`` (training time when trained), ``source`` (``trained`` /
    ``cache``), ``weights_sha256``; ``n_test``: the test clouds the scores are measured on."""

    rows: pd.DataFrame
    dataset: str
    n_test: int


def train(models: str | Sequence[str], cfg: RunConfig, *, force: bool = False, console: Any = None,
          progress: bool = True) -> TrainReport:
    """``bench train``: train the named models on ``cfg``'s dataset, or load them from the
    weights cache (the cache ``bench run`` uses) when the same configuration was trained
    before; the models a model depends on are trained first. ``"all"`` leaves out the parts
    a defense trains itself (e.g. PU-Net). ``force`` retrains cached models."""
    import pandas as pd
    import torch

    from benchmark.core.config import check_params
    from benchmark.core.registry import MODELS, populate_registries
    from benchmark.runner import Runner
    from models.zoo import describe_score

    populate_registries(cfg.plugins)
    names = MODELS.resolve(models)
    if "all" in (models.split(",") if isinstance(models, str) else list(models)):
        names = [n for n in names if not {"upsampler", "defense-part"} & set(MODELS.get(n).tags)]
    check_params("models", cfg.models, MODELS)
    runner = Runner(cfg, console=_console(console), progress=progress)
    runner.console.print(f"[bold]bench train[/] {', '.join(names)} on {cfg.dataset.name} device={runner.device}")
    runner.prepare_data()
    torch.manual_seed(cfg.seed)
    zoo = runner.build_zoo(force=force)
    rows = []
    for name in names:
        ready = zoo.get(name)
        rows.append({"model": name, "params": sum(p.numel() for p in ready.model.parameters()),
                     "score": describe_score(ready.meta), "seconds": ready.meta.get("seconds", "-"),
                     "source": "cache" if ready.cached else "trained", "weights_sha256": ready.weights_hash})
    return TrainReport(pd.DataFrame(rows), cfg.dataset.name, len(runner.splits["test"]))


@dataclass
class AttackReport:
    """``rows``: one per attack: ``attack``, ``success`` (rate on the source model), ``accuracy``
    (the source model's on the examples), mean ``l2`` / ``chamfer`` / ``hausdorff`` distances
    (NaN where undefined), ``seconds`` (crafting time), ``source`` (``crafted`` / ``cache``)."""

    rows: pd.DataFrame
    model: str
    dataset: str
    n: int  # test clouds attacked
    clean_accuracy: float


def attack(attacks: str | Sequence[str], cfg: RunConfig, *, model: str | None = None, console: Any = None,
           progress: bool = True) -> AttackReport:
    """``bench attack``: craft each attack's examples of the first ``cfg.limit`` test clouds
    against ``model`` (default: ``cfg.victim``), trained or loaded as ``bench run`` does, through
    the adversarial-example cache ``bench run``'s transfer protocol uses (same keys: a grid run
    afterwards reuses them, and the other way round)."""
    import pandas as pd
    import torch

    from attacks.factory import attack_spec
    from benchmark.core.config import check_params
    from benchmark.core.registry import ATTACKS, MODELS, populate_registries
    from benchmark.runner import Runner, predict

    populate_registries(cfg.plugins)
    names = ATTACKS.resolve(attacks)
    source = model or cfg.victim
    MODELS.get(source)
    check_params("attacks", cfg.attacks, ATTACKS)
    check_params("models", cfg.models, MODELS)
    for name in names:  # every parameter checked before any data or model work
        attack_spec(name, cfg.attacks.get(name), seed=cfg.seed)
    runner = Runner(dataclasses.replace(cfg, victim=source, attack=names), console=_console(console),
                    progress=progress)
    runner.console.print(f"[bold]bench attack[/] {', '.join(names)} on {source} ({cfg.dataset.name}) "
                         f"device={runner.device}")
    runner.prepare_data()
    torch.manual_seed(cfg.seed)
    runner.prepare_models()
    clean = predict(runner.victim.model, runner.points, cfg.batch_size, runner.device)
    rows = []
    for name in names:
        def on_batch(done: int, total: int, name: str = name) -> None:
            if progress:
                runner.console.print(f"  {name}: batch {done}/{total}")

        crafted = runner.transfer_examples(name, on_batch)
        rows.append({"attack": name, "success": crafted.success_rate,
                     "accuracy": float((crafted.pred == crafted.labels).float().mean()),
                     "l2": float("nan") if bool(crafted.l2.isnan().all()) else float(crafted.l2.nanmean()),
                     "chamfer": float(crafted.chamfer.mean()), "hausdorff": float(crafted.hausdorff.mean()),
                     "seconds": crafted.seconds, "source": "cache" if crafted.cached else "crafted"})
    return AttackReport(pd.DataFrame(rows), source, cfg.dataset.name, len(runner.labels),
                        float((clean == runner.labels).float().mean()))
