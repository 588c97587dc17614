"""``bench check``: can this configuration's grid run here, and what will it cost?

    report = check(cfg)        # -> CheckReport; report.problems == [] when everything loads
    print(format_report(report))

Before hours of GPU time go into a grid, :func:`check` proves in minutes that it can run:

1. every configured weight file exists (``models.*``, ``defenses.*``, ``attacks.*`` fields named
   ``checkpoint`` / ``pretrained`` / ``weights``), and every ``training.<model>.source`` suits the
   run's dataset reader; each miss is a problem naming its key and the fix;
2. the dataset loads through its reader (a missing or malformed file is a problem naming the file
   and the expected layout); the victim and every model the grid resolves (teachers, surrogate,
   AdvPC's autoencoder) load or build, each checkpoint into its architecture;
3. ONE batch goes through every selected defense (prepared as the run prepares it) and every
   attack, on the chosen device, while the victim's forward calls are counted.

It goes through :class:`benchmark.runner.Runner` (``prepare_data``, ``prepare_models``,
``defense(name)``, the attack factory), with three changes that keep it a check: the test set is
one batch; whatever the run would *train* (models without a checkpoint, MRPD's prompts, PU-Net,
...) trains for at most one epoch on the first ``train_clouds`` clouds of the run's own training
split; and all it computes lives in a scratch cache deleted afterwards (the parsed dataset is kept
in the real cache, where the run reuses it). Time and memory per batch do not depend on how well
a model is trained.

**What the grid costs.** An attack's victim passes per cloud follow from its iteration fields
(``binary_steps`` / ``restarts`` x ``num_iter`` / ``steps``): it runs on the batch at outer x
inner = 1 x 2, 1 x 4 and 2 x 2 iterations with early stop off, and the counted passes are
extrapolated linearly to the configured values (an attack without those fields, or with at most
8 iterations, runs once as configured). With ``early_stop`` on, the count is an upper bound.
Seconds per batch = seconds per counted pass x passes. The grid's estimate adds, per protocol,
the crafting on each source (the victim; the surrogate, scaled by its pass time; under
``adaptive`` each defended model, scaled by a forward and backward through it, EOT included) and
the evaluation of every defense on the clean clouds and every attack's examples. Memory: the
process's peak RSS on CPU; on CUDA ``torch.cuda.max_memory_allocated`` per step (the run's batch
and models, so the run's peak per step is the same; training excluded).

This file is the check's steps (~440 lines: they share one runner and one report); what it
returns and prints is :mod:`benchmark.api.check_report`.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmark.api.check_report import AttackCheck, CheckReport, DefenseCheck, ModelCheck, format_report
from benchmark.core.config import RunConfig

__all__ = ["AttackCheck", "CheckReport", "DefenseCheck", "ModelCheck", "check", "format_report", "path_problems",
           "source_problems"]

#: Parameter names (or ``_<name>`` suffixes) that hold the path of a weights file.
PATH_FIELDS = ("checkpoint", "pretrained", "weights")
#: An attack's iteration fields: outer loops (binary search steps, restarts) and inner iterations.
OUTER_FIELDS = ("binary_steps", "restarts")
INNER_FIELDS = ("num_iter", "steps")
#: Probe iteration counts: the attack runs at (outer, inner) = (1, 2), (1, 4) and (2, 2).
_INNER_PROBE, _OUTER_PROBE = (2, 4), (1, 2)


# --------------------------------------------------------------------------- configured files


def _is_path_field(key: str) -> bool:
    return any(key == f or key.endswith(f"_{f}") for f in PATH_FIELDS)


def path_problems(cfg: RunConfig) -> list[tuple[str, str, str]]:
    """``(key, path, message)`` per configured weights file that is not a file: the message names the
    key, what reads it and the fix (fields of ``models.*``, ``defenses.*``, ``attacks.*`` named as
    :data:`PATH_FIELDS`)."""
    from benchmark.core.registry import ATTACKS, DEFENSES, MODELS

    problems = []
    for section, registry in (("models", MODELS), ("defenses", DEFENSES), ("attacks", ATTACKS)):
        for name, params in sorted((getattr(cfg, section) or {}).items()):
            for key, value in sorted((params or {}).items()):
                if not _is_path_field(key) or not isinstance(value, str) or not value:
                    continue
                path = Path(value).expanduser()
                if path.is_file():
                    continue
                what = registry.get(name).description if name in registry else ""
                state = "is a directory; expected the weights file in it" if path.is_dir() else "does not exist"
                where = f"{section}.{name}.{key}"
                problems.append((where, str(path), (f"{where}: {path} {state} (read by {registry.kind} '{name}'"
                                 f"{': ' + what if what else ''}); fix: --set {where}=/path/to/file")))
    return problems


#: ``load_dataset`` arguments a ``training.<model>.source`` may set besides the reader's own options.
_LOAD_ARGUMENTS = ("root", "num_points", "sampling", "normalize", "seed")


def source_problems(cfg: RunConfig) -> list[str]:
    """One line per ``training.<model>.source`` that names an option the run's dataset reader does
    not take (``train_size`` is SynthShapes'): the run would fail when it trains that model."""
    from benchmark.core.registry import DATASETS, UnknownNameError

    if cfg.dataset.name not in DATASETS:
        return []
    entry, problems = DATASETS.get(cfg.dataset.name), []
    for name, section in sorted(cfg.training.items()):
        source = dict((section or {}).get("source") or {})
        if not source or source.pop("dataset", cfg.dataset.name) != cfg.dataset.name:
            continue  # a source for another dataset is not applied (models.zoo.Zoo.source_options)
        options = {k: v for k, v in source.items() if k not in _LOAD_ARGUMENTS}
        try:
            entry.check_params({**cfg.dataset_options(), **options})
        except UnknownNameError as err:
            problems.append(f"training.{name}.source: {err} The source distribution is described for another "
                            f"dataset; train on the run's own split with --set training.{name}.source=null")
    return problems


# --------------------------------------------------------------------------- measuring


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _peak_cuda(device: Any, report: CheckReport) -> Iterator[list[float | None]]:
    """Yields ``[None]``, set on exit to the step's peak CUDA memory in MiB (stays None on CPU); the
    largest peak so far, before and during the step, is kept in ``report.peak_memory_mib``."""
    import torch

    out: list[float | None] = [None]
    cuda = torch.device(device).type == "cuda"
    if cuda:
        _note_peak(report, torch.cuda.max_memory_allocated(device) / 2**20)
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if cuda:
        out[0] = torch.cuda.max_memory_allocated(device) / 2**20
        _note_peak(report, out[0])


def _note_peak(report: CheckReport, mib: float) -> None:
    report.peak_memory_mib = mib if math.isnan(report.peak_memory_mib) else max(report.peak_memory_mib, mib)


@contextmanager
def _counted(model: Any, batch: int) -> Iterator[list[float]]:
    """Yields ``[passes]``: forward calls of ``model`` inside the block, each weighted by its
    share of a ``batch``-cloud batch (an attack whose finished clouds leave the batch counts less)."""
    count = [0.0]

    def hook(module: Any, args: tuple[Any, ...]) -> None:
        if args and hasattr(args[0], "shape"):
            count[0] += args[0].shape[0] / batch

    handle = model.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def _best_seconds(fn: Any, device: Any, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _pass(model: Any, points: Any, labels: Any) -> None:
    """One forward and backward (w.r.t. the points) of a summed cross-entropy: an attack's step."""
    import torch

    x = points.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), labels, reduction="sum").backward()


def _iteration_fields(spec: Any) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """``((outer field, value) | None, (inner field, value) | None)`` of an attack's hyperparameters."""
    values = dataclasses.asdict(spec)

    def first(names: tuple[str, ...]) -> tuple[str, int] | None:
        for name in names:
            value = values.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return name, value
        return None

    return first(OUTER_FIELDS), first(INNER_FIELDS)


def _probe_attack(runner: Any, name: str, params: Mapping[str, Any], report: CheckReport) -> AttackCheck:
    """Run attack ``name`` on the runner's batch against its victim (see the module docstring)."""
    import torch

    from attacks.factory import attack_spec, build_attack

    cfg, victim, device = runner.cfg, runner.victim.model, runner.device
    spec = attack_spec(name, params, seed=cfg.seed)
    outer, inner = _iteration_fields(spec)
    off = {"early_stop": False} if hasattr(spec, "early_stop") else {}
    full_outer, full_inner = (outer[1] if outer else 1), (inner[1] if inner else 1)
    if (outer is None and inner is None) or full_outer * full_inner <= _OUTER_PROBE[1] * _INNER_PROBE[1]:
        settings = [(full_outer, full_inner)]  # cheap enough: run it as configured
    else:
        settings = [(_OUTER_PROBE[0], _INNER_PROBE[0]), (_OUTER_PROBE[0], _INNER_PROBE[1]),
                    (_OUTER_PROBE[1], _INNER_PROBE[0])]
    points, labels = runner.points.to(device), runner.labels.to(device)
    indices = torch.from_numpy(runner.indices)
    batch = len(points)
    passes, seconds = [], []
    with _peak_cuda(device, report) as memory:
        for o, i in settings:
            probe = {**params, **off, **({outer[0]: o} if outer else {}), **({inner[0]: i} if inner else {})}
            attack = build_attack(name, probe, seed=cfg.seed, resolve_model=lambda model: runner.zoo.get(model).model)
            with _counted(victim, batch) as count:
                start = time.perf_counter()
                attack(victim, points, labels, indices=indices)
                _sync(device)
                seconds.append(time.perf_counter() - start)
            passes.append(count[0])
    if len(settings) == 1:
        full, batch_seconds = passes[0], seconds[0]
    else:
        per_inner = (passes[1] - passes[0]) / (_INNER_PROBE[1] - _INNER_PROBE[0])
        per_outer = (passes[2] - passes[0]) / (_OUTER_PROBE[1] - _OUTER_PROBE[0]) - per_inner * _INNER_PROBE[0]
        fixed = passes[0] - _OUTER_PROBE[0] * (per_outer + per_inner * _INNER_PROBE[0])
        full = fixed + full_outer * (per_outer + per_inner * full_inner)
        batch_seconds = sum(seconds) / max(sum(passes), 1e-9) * full
    return AttackCheck(name, "ok", passes=full, at_most=bool(getattr(spec, "early_stop", False)),
                       batch_seconds=batch_seconds, memory_mib=memory[0])


# --------------------------------------------------------------------------- the check


def _check_config(cfg: RunConfig, scratch: Path) -> RunConfig:
    """``cfg`` as the check runs it: one test batch, scratch cache and results, at most one epoch
    of any training, on the run's own training split."""
    training = {name: dict(section or {}) for name, section in cfg.training.items()}
    training.setdefault("default", {})
    for name, section in training.items():
        if name == "default" or "epochs" in section:
            section["epochs"] = min(int(section.get("epochs", cfg.train_config(name).epochs)), 1)
        section["source"] = None
    return dataclasses.replace(cfg, limit=cfg.batch_size, cache_dir=str(scratch), out_dir=str(scratch / "results"),
                               training=training)


def _problem(report: CheckReport, where: str, message: str) -> None:
    """Add ``where: message`` as one line, unless it is about a missing weights file already reported."""
    line = " ".join(f"{where}: {message}".split())
    if not any(path in line for path in report.missing_files):
        report.problems.append(line)


def check(cfg: RunConfig, *, console: Any = None, train_clouds: int | None = None) -> CheckReport:
    """Load everything ``cfg``'s grid needs, run one batch through every defense and attack, and
    estimate the grid's cost (module docstring). Never raises for a problem it can name: each one
    is a line of ``CheckReport.problems`` (all of them, not just the first).

    Args:
        train_clouds: the training clouds whatever the run trains sees here (default: one batch).
    """
    from rich.console import Console

    from benchmark.core.cache import resolve_cache_dir
    from benchmark.core.env import resolve_device
    from benchmark.core.registry import populate_registries

    start = time.perf_counter()
    populate_registries(cfg.plugins)
    console = console if console is not None else Console(stderr=True)
    report = CheckReport(cfg.profile, cfg.dataset.name, str(resolve_device(cfg.device)), cfg.batch_size, 0,
                         list(cfg.protocol), train_clouds or cfg.batch_size)
    for key, path, line in path_problems(cfg):
        report.problems.append(line)
        report.missing_files.append(path)
    report.problems += source_problems(cfg)
    real_cache = resolve_cache_dir(cfg.cache_dir)
    with tempfile.TemporaryDirectory(prefix="pcrb-check-") as tmp:
        scratch = Path(tmp)
        (real_cache / "datasets").mkdir(parents=True, exist_ok=True)
        (scratch / "datasets").symlink_to(real_cache / "datasets", target_is_directory=True)
        try:
            _run_check(cfg, _check_config(cfg, scratch), report, console)
        finally:
            (scratch / "datasets").unlink()
    report.peak_memory_mib, report.memory_kind = _peak_memory(report)
    report.seconds = time.perf_counter() - start
    return report


def _run_check(cfg: RunConfig, check_cfg: RunConfig, report: CheckReport, console: Any) -> None:
    import torch

    from benchmark.core.config import ConfigError
    from benchmark.core.registry import UnknownNameError

    runner = _recording_runner(check_cfg, console)
    try:
        runner.check_parameters()
    except (ConfigError, UnknownNameError, ValueError) as err:
        _problem(report, "configuration", str(err))
        return
    try:
        runner.prepare_data()
    except Exception as err:  # noqa: BLE001 - reported as a problem, the check goes on
        _problem(report, f"dataset {cfg.dataset.name}", f"{type(err).__name__}: {err}")
        return
    test, train = runner.splits["test"], runner.splits["train"]
    report.n_test = len(test) if cfg.limit is None else min(cfg.limit, len(test))
    runner.splits["train"] = train.subset(range(min(report.train_clouds, len(train))))
    runner.splits["test"] = test.subset(runner.indices)
    try:
        runner.prepare_models()
    except Exception as err:  # noqa: BLE001 - reported as a problem, the check goes on
        _problem(report, f"victim {cfg.victim}", f"{type(err).__name__}: {err}")
        report.defenses = [DefenseCheck(n, "skipped") for n in runner.defense_names()]
        report.attacks = [AttackCheck(n, "skipped") for n in runner.attack_names()]
        _record_models(cfg, runner, report)
        return
    victim, device = runner.victim.model, runner.device
    points, labels = runner.points.to(device), runner.labels.to(device)
    with torch.no_grad():
        report.forward_seconds = _best_seconds(lambda: victim(points), device)
    report.pass_seconds = _best_seconds(lambda: _pass(victim, points, labels), device)
    if "blackbox" in cfg.protocol:
        try:
            surrogate = runner.zoo.get(cfg.surrogate).model.eval().requires_grad_(False)
            report.surrogate_ratio = _best_seconds(lambda: _pass(surrogate, points, labels), device) / report.pass_seconds
        except Exception as err:  # noqa: BLE001 - reported as a problem, the check goes on
            _problem(report, f"surrogate {cfg.surrogate}", f"{type(err).__name__}: {err}")
    for name in runner.defense_names():
        report.defenses.append(_check_defense(runner, name, report))
    for name in runner.attack_names():
        try:
            report.attacks.append(_probe_attack(runner, name, cfg.attacks.get(name) or {}, report))
        except Exception as err:  # noqa: BLE001 - reported as a problem, the check goes on
            _problem(report, f"attacks.{name}", f"{type(err).__name__}: {err}")
            report.attacks.append(AttackCheck(name, "failed"))
    _record_models(cfg, runner, report)
    _estimate(cfg, report)


def _check_defense(runner: Any, name: str, report: CheckReport) -> DefenseCheck:
    device, cfg = runner.device, runner.cfg
    with _peak_cuda(device, report) as memory:
        prepared = runner.defense(name)
        if prepared.error is not None:
            _problem(report, f"defenses.{name}", prepared.error)
            return DefenseCheck(name, "failed", seconds=prepared.seconds, memory_mib=memory[0])
        model = prepared.model
        adaptive = math.nan
        if "adaptive" in cfg.protocol:
            try:
                attackable = model.attackable(eot=cfg.eot)
                points, labels = runner.points.to(device), runner.labels.to(device)
                adaptive = _best_seconds(lambda: _pass(attackable, points, labels), device, repeats=1) / report.pass_seconds
            except Exception as err:  # noqa: BLE001 - reported as a problem, the check goes on
                _problem(report, f"defenses.{name}", f"no gradient for the adaptive protocol: {type(err).__name__}: {err}")
    weights = ", ".join(v for k, v in sorted(prepared.params.items()) if _is_path_field(k) and isinstance(v, str) and v)
    return DefenseCheck(name, "ok", weights, prepared.seconds, prepared.cost_ratio, adaptive_ratio=adaptive,
                        randomized=bool(getattr(model, "randomized", False)), memory_mib=memory[0])


def _recording_runner(cfg: RunConfig, console: Any) -> Any:
    """A :class:`benchmark.runner.Runner` that remembers every model its zoo resolves (victim,
    teachers, helpers), in order, in ``runner.resolved``."""
    from benchmark.runner import Runner

    class RecordingRunner(Runner):
        def build_zoo(self, force: bool = False) -> Any:
            zoo = super().build_zoo(force)
            get, self.resolved = zoo.get, {}

            def recording(name: str) -> Any:
                model = get(name)
                self.resolved.setdefault(name, model)
                return model

            zoo.get = recording  # an instance attribute: the zoo's own lookups (a student's CLIP) use it too
            return zoo

    return RecordingRunner(cfg, console=console, progress=False)


def _record_models(cfg: RunConfig, runner: Any, report: CheckReport) -> None:
    for name, zm in getattr(runner, "resolved", {}).items():
        if zm.meta.get("checkpoint"):
            source = f"checkpoint {zm.meta['checkpoint']}"
        else:
            epochs = runner.cfg.train_config(name).epochs
            run = cfg.train_config(name).epochs
            source = (f"trained for this check ({epochs} epoch on {len(runner.splits['train'])} clouds; the run "
                      f"trains {run} epoch{'' if run == 1 else 's'})")
        report.models.append(ModelCheck(name, source, sum(p.numel() for p in zm.model.parameters())))


def _estimate(cfg: RunConfig, report: CheckReport) -> None:
    """The grid's crafting and evaluation seconds (module docstring), from the measured batch."""
    attacks = [a for a in report.attacks if a.status == "ok"]
    defenses = [d for d in report.defenses if d.status == "ok"]
    report.cells = len(cfg.protocol) * len(report.defenses) * (len(report.attacks) + 1)
    per_source = sum(a.batch_seconds for a in attacks) * report.batches
    crafted: set[str] = set()
    craft = evaluation = 0.0
    for protocol in cfg.protocol:
        if protocol == "transfer":
            sources = {"victim": 1.0}
        elif protocol == "blackbox":
            sources = {"surrogate": report.surrogate_ratio}
        else:
            sources = {("victim" if d.name == "none" else f"adaptive:{d.name}"): 1.0 if d.name == "none"
                       else d.adaptive_ratio for d in defenses}
        for key, ratio in sources.items():
            if key not in crafted and not math.isnan(ratio):
                crafted.add(key)
                craft += per_source * ratio
        evaluation += report.batches * report.forward_seconds * (len(attacks) + 1) * sum(
            d.cost_ratio for d in defenses if not math.isnan(d.cost_ratio))
    report.crafting_seconds, report.evaluation_seconds = craft, evaluation


def _peak_memory(report: CheckReport) -> tuple[float, str]:
    """``(MiB, what)``: the largest CUDA allocation of the check on CUDA, else the process's peak RSS."""
    if report.device.startswith("cuda"):
        import torch

        _note_peak(report, torch.cuda.max_memory_allocated(report.device) / 2**20)
        return report.peak_memory_mib, "max CUDA allocated"
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "peak RSS"
