"""PCRB as a library: every ``bench`` command is one call here (the CLI parses, calls, renders).

    configure(profile, overrides=..., **fields) -> RunConfig      # what `bench` resolves
    run(cfg) / sweep(cfg, key, values)                           # bench run [--sweep]
    train(models, cfg) / attack(attacks, cfg)                    # bench train / bench attack
    ablate(defense, cfg) / teacher_robustness(cfg)               # bench ablate / bench teachers
    check(cfg) -> CheckReport; format_report(report)             # bench check
    leaderboard(results) / plot(results) / merge(dirs, out)      # bench leaderboard / plot / merge

Same caches, same result files as the commands. ``evaluate`` is the one call a researcher
uses on their own model or defense (RobustBench style):

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
(same columns, same results store, same caches). Registries are filled by
``benchmark.core.registry.populate_registries`` (each call here runs it with the
configuration's plug-ins).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.api.ablation import AblationOutcome, ablate, ablation_variants
from benchmark.api.check import CheckReport, check, format_report
from benchmark.api.teachers import diagnostics_dir, teacher_robustness
from benchmark.api.train_attack import AttackReport, TrainReport, attack, train
from benchmark.core.config import ConfigError, RunConfig, resolve_config

if TYPE_CHECKING:  # pandas and torch load when a call needs them (`bench --help` stays quick)
    import pandas as pd
    from torch import nn

__all__ = [
    "AblationOutcome",
    "AttackReport",
    "CheckReport",
    "RunOutcome",
    "SweepOutcome",
    "TrainReport",
    "ablate",
    "ablation_variants",
    "attack",
    "check",
    "configure",
    "diagnostics_dir",
    "environment",
    "evaluate",
    "format_report",
    "leaderboard",
    "merge",
    "plot",
    "run",
    "sweep",
    "teacher_robustness",
    "train",
    "with_overrides",
]

PathLike = str | os.PathLike[str]


def _console(console: Any) -> Any:
    from rich.console import Console

    return console if console is not None else Console(stderr=True)


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
def configure(profile: str | None = None, *, config: PathLike | Mapping[str, Any] | None = None,
              overrides: Sequence[str] = (), **fields: Any) -> RunConfig:
    """The run configuration ``bench`` resolves: profile < ``config`` < ``overrides`` < ``fields``.

    Args:
        profile: ``smoke``, ``default``, ``paper``, ``ifd`` (None: the config's ``profile:``
            key, else ``default``).
        config: a YAML file (``--config``) or a mapping of the same shape.
        overrides: ``KEY=VALUE`` strings as ``--set`` takes (values parsed as YAML).
        fields: ``RunConfig`` fields as the flags give them (None values ignored), e.g.
            ``attack="pgd,cw"``, ``out_dir="/tmp/r"``, ``dataset="modelnet40"`` (a name) or
            ``dataset={"name": ..., "root": ...}``.

    Raises:
        ConfigError: an unknown key or a value outside its domain, naming the key.
    """
    if isinstance(fields.get("dataset"), str):
        fields["dataset"] = {"name": fields["dataset"]}
    if not isinstance(config, Mapping):
        return resolve_config(profile, config, list(overrides), fields)
    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(dict(config), handle)
    try:
        return resolve_config(profile, handle.name, list(overrides), fields)
    finally:
        os.unlink(handle.name)


def with_overrides(cfg: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """``cfg`` with ``KEY=VALUE`` overrides applied on top (``bench run --sweep``'s points)."""
    return configure(config=cfg.to_dict(), overrides=overrides)


# ---------------------------------------------------------------------------------------------
# bench run
# ---------------------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    """What one run did. ``rows`` is None on a torchrun worker rank (rank 0 reports)."""

    rows: pd.DataFrame | None  # this run's cells, one row each (finished ones found, new ones written)
    results: Path  # the dataset's results CSV
    run_id: str
    failures: list[tuple[Any, str]] = field(default_factory=list)  # (cell, error)
    replaced: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (stored row, new cell hash)
    new_rows: list[Mapping[str, Any]] = field(default_factory=list)  # the rows this run wrote or found
    plots: list[Path] = field(default_factory=list)  # figures drawn beside the results

    def stored(self) -> pd.DataFrame:
        """Every row of the results CSV (this run's and earlier ones)."""
        from benchmark.store import ResultStore

        return ResultStore(self.results.parent).read(self.results.stem)


def run(cfg: RunConfig, *, shard: tuple[int, int] | None = None, force: bool = False, fail_fast: bool = False,
        progress: bool = True, plots: bool = True, console: Any = None) -> RunOutcome:
    """``bench run``: every (protocol, defense, attack) cell of ``cfg``, written to
    ``<cfg.out_dir>/<dataset>.csv`` (finished cells with the same hash are reused), then the
    figures of the results folder (:func:`plot`) under ``<cfg.out_dir>/plots`` unless ``plots``
    is False. Inside a ``torchrun`` launch the test set is sharded over the processes.

    Args:
        shard: ``(i, K)``: evaluate only shard ``i`` of ``K`` (combine with :func:`merge`).
        force: recompute cells even when finished rows exist.
        fail_fast: raise the first error of a cell instead of recording a failed row.
    """
    import torch

    from benchmark import distributed
    from benchmark.core.env import resolve_device
    from benchmark.core.registry import populate_registries
    from benchmark.runner import Runner, check_names

    populate_registries(cfg.plugins)
    console = _console(console)
    console.print(f"[bold]bench run[/] profile={cfg.profile} dataset={cfg.dataset.name} "
                  f"device={resolve_device(cfg.device)} config={cfg.hash()}")
    check_names(cfg)
    torch.manual_seed(cfg.seed)
    if distributed.launched():  # torchrun: shard i/K = rank/world size, rank 0 merges and reports
        if shard is not None and tuple(shard) != (0, 1):
            raise ConfigError("--shard and a torchrun launch both shard the test set; use one of them")
        runner: Any = distributed.DistributedRunner(cfg, console=console, progress=progress, fail_fast=fail_fast,
                                                    force=force)
    else:
        runner = Runner(cfg, console=console, progress=progress, fail_fast=fail_fast, shard=shard or (0, 1),
                        force=force)
    rows = runner.run()
    outcome = RunOutcome(rows, runner.store.csv_path(cfg.dataset.name), runner.run_id, list(runner.failures),
                         list(runner.replaced), list(runner.rows))
    if rows is not None and plots:
        outcome.plots = _draw(cfg.out_dir, cfg.cache_dir, console)
    return outcome


def _draw(results: PathLike, cache_dir: PathLike | None, console: Any) -> list[Path]:
    """The figures of a results folder after a run; a failure to draw is a warning (the rows are written)."""
    try:
        return plot(results, cache_dir=cache_dir, log=lambda message: console.print(f"  {message}"))
    except Exception as err:  # noqa: BLE001 - the run's results stand without figures (e.g. no matplotlib)
        console.print(f"[yellow]no figures drawn[/] ({type(err).__name__}: {err})")
        return []


@dataclass
class SweepOutcome:
    """The runs of a sweep, one per value, and the figures of the sweep's results folder."""

    runs: list[RunOutcome]
    plots: list[Path] = field(default_factory=list)


def sweep(cfg: RunConfig, key: str, values: Sequence[Any], *, plots: bool = True,
          on_run: Callable[[RunConfig, RunOutcome], None] | None = None, **options: Any) -> SweepOutcome:
    """``bench run --sweep KEY=V1,V2``: one :func:`run` per value, ``cfg`` with ``KEY=V`` into
    ``<cfg.out_dir>/sweeps/<KEY>/<V>``, then the figures of ``cfg.out_dir`` (the sweep curves
    among them). ``on_run(cfg_v, outcome)`` is called after each run; ``options`` go to :func:`run`."""
    from benchmark.plots import sweep_out_dir

    outcome = SweepOutcome([])
    console = _console(options.pop("console", None))
    for value in values:
        console.print(f"[bold]sweep[/] {key}={value}")
        one = dataclasses.replace(with_overrides(cfg, [f"{key}={value}"]),
                                  out_dir=str(sweep_out_dir(cfg.out_dir, key, str(value))))
        done = run(one, plots=False, console=console, **options)
        if on_run is not None:
            on_run(one, done)
        outcome.runs.append(done)
    if plots and any(r.rows is not None for r in outcome.runs):
        outcome.plots = _draw(cfg.out_dir, cfg.cache_dir, console)
    return outcome


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
    out_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
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
    from benchmark.core.registry import populate_registries
    from benchmark.runner import Runner

    selection = [defenses] if isinstance(defenses, str) else list(defenses)
    extra: dict[str, Any] = {}
    if isinstance(model_or_defense, str):
        selection.append(model_or_defense)
    elif model_or_defense is not None:
        extra[name or _kebab(type(model_or_defense).__name__)] = model_or_defense
    cfg = configure(profile, config=config, overrides=overrides, attack=attacks,
                    defense=",".join(s for s in selection if s) or "none", protocol=protocol, limit=n, device=device,
                    seed=seed, dataset=dataset, cache_dir=None if cache_dir is None else str(cache_dir),
                    out_dir=None if out_dir is None else str(out_dir))
    populate_registries(cfg.plugins)
    return Runner(cfg, progress=progress, fail_fast=fail_fast, extra_defenses=extra).run()


def _kebab(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("-")
        out.append(ch.lower())
    return "".join(out).replace("_", "-") or "model"


# ---------------------------------------------------------------------------------------------
# results folders: leaderboard, figures, merged shards
# ---------------------------------------------------------------------------------------------
def leaderboard(results: PathLike = "results", out: PathLike = "leaderboard.md", *,
                html: PathLike | None = None) -> Path:
    """``bench leaderboard``: render ``<results>/*.csv`` and the run records into the markdown
    file ``out`` (the same results always give the same bytes); returns its path. ``html``:
    also write the same standings as one self-contained HTML page there
    (:func:`benchmark.leaderboard.html.write_html_leaderboard`)."""
    from benchmark.leaderboard import write_leaderboard

    path = write_leaderboard(results, out)
    if html is not None:
        from benchmark.leaderboard.html import write_html_leaderboard

        write_html_leaderboard(results, html)
    return path


def plot(results: PathLike = "results", out: PathLike | None = None, *, cache_dir: PathLike | None = None,
         samples: int = 3, log: Callable[[str], None] | None = None) -> list[Path]:
    """``bench plot``: every figure of a results folder (accuracy bars, robustness curves,
    sweeps, ``samples`` example clouds per attack from the adversarial cache) as PNG files
    under ``out`` (default ``<results>/plots``); returns their paths. Raises
    ``benchmark.plots.MissingExtraError`` without matplotlib."""
    import sys
    import warnings

    from benchmark.plots import make_plots

    with warnings.catch_warnings():  # a crowded figure keeps its layout; no warning for it
        warnings.filterwarnings("ignore", message="Tight layout not applied")
        return make_plots(results, out, cache_dir=cache_dir, samples=samples,
                          log=log or (lambda message: print(message, file=sys.stderr)))


def merge(results: Sequence[PathLike], out: PathLike) -> pd.DataFrame:
    """``bench merge``: the rows of ``bench run --shard i/K`` results folders (each with its
    ``runs/`` records) combined into the rows one process would have written, written to
    ``out``; returns them. Raises ``benchmark.distributed.MergeError`` naming what is missing."""
    from benchmark.distributed import merge_results

    return merge_results(list(results), out)


def environment(cache_dir: PathLike | None = None) -> list[tuple[str, str]]:
    """``bench info``: ``(what, value)`` facts: PCRB's version and its dependencies', the CPU
    threads (chosen by the launcher, or what it would choose), CUDA devices, the allocator
    setting, the cache directory, the shipped profiles and the size of every registry."""
    import torch

    from benchmark.core.cache import default_cache_dir
    from benchmark.core.config import available_profiles
    from benchmark.core.env import allocator_status, choose_threads, package_versions, thread_choice
    from benchmark.core.registry import REGISTRIES, populate_registries

    populate_registries()
    facts = [(name, torch.__version__ if name == "torch" else version) for name, version in package_versions().items()]
    chosen = thread_choice()
    if chosen is None:  # called as a library (tests): say what the launcher would choose now
        chosen = choose_threads()
        threads = f"{torch.get_num_threads()} now; `bench` would use {chosen.threads} ({chosen.reason})"
        facts.append(("cpu threads", threads))
    else:
        facts.append(("cpu threads", f"{torch.get_num_threads()} ({chosen.reason})"))
    if torch.cuda.is_available():
        names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
        facts.append(("cuda", f"{torch.version.cuda}; {names}"))
    else:
        facts.append(("cuda", "not available (CPU only)"))
    facts += [("device (auto)", "cuda" if torch.cuda.is_available() else "cpu"), ("allocator", allocator_status()),
              ("cache dir", str(cache_dir or default_cache_dir())), ("profiles", ", ".join(available_profiles()))]
    return facts + [(kind, f"{len(registry)} registered") for kind, registry in REGISTRIES.items()]
