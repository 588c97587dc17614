"""The ``bench`` command line: each command parses its options, calls one function of the
library (:mod:`benchmark.api`) and renders what it returns (:mod:`benchmark.render`).

The run configuration is resolved as the library resolves it (``api.configure``: profile <
--config < --set < flags). Errors the user can fix are printed as one line naming the fix
(exit status 2); a run with failed cells exits 1; an interrupted run keeps its finished work
(130). Registries are filled by ``benchmark.core.registry.populate_registries`` (the library
calls the same function: nothing imports this module but the launcher).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark import api, render
from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.env import DeviceError
from benchmark.core.registry import REGISTRIES, DuplicateNameError, PluginError, UnknownNameError, populate_registries
from benchmark.parser import build_parser, parse_shard

EXIT_USAGE = 2
EXIT_FAILED_CELLS = 1

USER_ERRORS = (ConfigError, UnknownNameError, DuplicateNameError, PluginError, FileNotFoundError, DeviceError)

#: ``bench list datasets`` leaves out the options every reader takes.
_COMMON_DATASET_ARGS = ("root", "num_points", "sampling", "normalize", "seed", "cache_dir")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """``api.configure`` with the parsed options: profile < --config < --set < flags."""
    flags: dict[str, Any] = {"seed": args.seed, "device": args.device, "cache_dir": args.cache_dir,
                             "dataset": {"name": args.dataset, "root": args.data_root}, "plugins": args.plugin or None}
    for key, option in (("defense", "defense"), ("attack", "attack"), ("protocol", "protocol"),
                        ("batch_size", "batch_size"), ("limit", "limit"), ("out_dir", "out"),
                        ("victim", "victim"), ("surrogate", "surrogate"), ("eot", "eot")):
        flags[key] = getattr(args, option, None)
    return api.configure(args.profile, config=args.config, overrides=args.overrides, **flags)


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _failed(failures: Sequence[Any], console: Any) -> int:
    if not failures:
        return 0
    console.print(f"[red]{len(failures)} cell(s) failed[/]; see the 'error' column of the results")
    return EXIT_FAILED_CELLS


# ---------------------------------------------------------------------------------------------
# the grid: run, ablate, teachers
# ---------------------------------------------------------------------------------------------
def _report_run(cfg: RunConfig, outcome: api.RunOutcome, console: Any) -> int:
    if outcome.rows is None:  # a torchrun worker rank: rank 0 prints the table
        return EXIT_FAILED_CELLS if outcome.failures else 0
    render.print_summary(outcome.rows, render.wide_console(), dataset=cfg.dataset.name, victim=cfg.victim,
                         profile=cfg.profile)
    render.print_replaced(outcome.replaced, outcome.new_rows, console)
    render.print_sanity(outcome.stored(), console)
    console.print(f"results: {outcome.results} (run {outcome.run_id})")
    _figures(outcome.plots, console)
    return _failed(outcome.failures, console)


def _figures(paths: Sequence[Path], console: Any) -> None:
    if paths:
        console.print(f"figures: {len(paths)} PNG files in {paths[0].parent}")


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.plots import parse_sweep

    cfg = config_from_args(args)
    if args.print_config:
        print(f"# config hash: {cfg.hash()}")
        print(cfg.to_yaml(), end="")
        return 0
    console = _stderr()
    options = {"shard": parse_shard(args.shard), "force": args.force, "fail_fast": args.fail_fast,
               "progress": not args.no_progress, "plots": not args.no_plots, "console": console}
    if not args.sweep:
        return _report_run(cfg, api.run(cfg, **options), console)
    try:
        key, values = parse_sweep(args.sweep)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    status = [0]
    swept = api.sweep(cfg, key, values, on_run=lambda one, outcome: status.append(_report_run(one, outcome, console)),
                      **options)
    _figures(swept.plots, console)
    return max(status)


def cmd_ablate(args: argparse.Namespace) -> int:
    """``bench ablate <defense>``: every declared variant as its own defense column, one table."""
    args.victim = args.surrogate = args.eot = None
    defense, args.defense = args.defense, None
    cfg = config_from_args(args)
    select = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    if args.list:
        render.print_variants(api.ablation_variants(defense, select, cfg.plugins))
        return 0
    console = _stderr()
    outcome = api.ablate(defense, cfg, variants=select, force=args.force, fail_fast=args.fail_fast,
                         progress=not args.no_progress, console=console)
    render.print_ablation(outcome.rows, render.wide_console(), defense=defense, variants=outcome.variants,
                          control=outcome.control, dataset=cfg.dataset.name)
    console.print(f"results: {outcome.results}; table: {outcome.table}")
    return _failed(outcome.failures, console)


def cmd_check(args: argparse.Namespace) -> int:
    """``bench check``: files, checkpoints and one batch through the grid, and its cost (``api.check``)."""
    report = api.check(config_from_args(args), console=_stderr())
    print(api.format_report(report))
    return 0 if report.ok else EXIT_FAILED_CELLS


def cmd_teachers(args: argparse.Namespace) -> int:
    """``bench teachers``: the teacher-robustness report (``benchmark.api.teacher_robustness``)."""
    args.defense = args.protocol = args.victim = args.surrogate = args.eot = None
    cfg = config_from_args(args)
    console = _stderr()
    report = api.teacher_robustness(cfg, views=args.views, train_limit=args.train_limit or None, console=console,
                                    progress=not args.no_progress)
    folder = api.diagnostics_dir(cfg.out_dir)
    print((folder / "teachers.md").read_text())
    console.print(f"wrote {folder}/teachers.{{json,md}} in {report['seconds']:.0f} s")
    return 0


# ---------------------------------------------------------------------------------------------
# one model: train, attack
# ---------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    report = api.train(args.model, config_from_args(args), force=args.force, console=_stderr())
    render.print_models(report.rows, render.wide_console(), dataset=report.dataset, n_test=report.n_test)
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    report = api.attack(args.attack, config_from_args(args), model=args.model, console=_stderr())
    render.print_attacks(report, render.wide_console())
    return 0


# ---------------------------------------------------------------------------------------------
# results folders: leaderboard, plot, merge, docs
# ---------------------------------------------------------------------------------------------
def cmd_leaderboard(args: argparse.Namespace) -> int:
    print(f"wrote {api.leaderboard(args.results, args.out, html=args.html)}")
    if args.html:
        print(f"wrote {args.html}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from benchmark.plots import MissingExtraError

    try:
        paths = api.plot(args.results, args.out, cache_dir=args.cache_dir, samples=args.samples)
    except MissingExtraError as err:
        print(f"bench plot: {err}", file=sys.stderr)
        return EXIT_USAGE
    for path in paths:
        print(path)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from benchmark.distributed import MergeError

    try:
        rows = api.merge(args.results, args.out)
    except MergeError as err:
        print(f"bench merge: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    console = render.wide_console()
    for (dataset, profile), part in rows.groupby(["dataset", "profile"], sort=True):
        render.print_summary(part, console, dataset=dataset, victim=",".join(sorted(set(part["victim"]))),
                             profile=profile)
    print(f"merged {len(rows)} rows into {Path(args.out)}")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    import benchmark.leaderboard  # noqa: F401  (registers the results' README sections)
    from benchmark.docs import check_docs, write_docs

    if args.check:
        drifted = check_docs(args.root)
        for name in drifted:
            print(f"{name}: generated sections differ from their sources; run `bench docs`", file=sys.stderr)
        return 1 if drifted else 0
    changed = write_docs(args.root)
    print(f"rewrote {', '.join(changed)}" if changed else "generated sections are up to date")
    return 0


# ---------------------------------------------------------------------------------------------
# the installation: list, info, cache
# ---------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    populate_registries(args.plugin)
    render.print_registry(args.kind, REGISTRIES[args.kind], render.wide_console(),
                          skip=_COMMON_DATASET_ARGS if args.kind == "datasets" else ())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rich.console import Console

    render.print_info(api.environment(args.cache_dir), Console())
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from benchmark.core.cache import cache_entries, clear_cache, resolve_cache_dir

    root = resolve_cache_dir(args.cache_dir)
    if args.action == "clear":
        files, size = clear_cache(root, args.kind)
        print(f"removed {files} files ({size / 2**20:.1f} MiB) from {root}")
        return 0
    entries = [e for e in cache_entries(root) if not args.kind or e["kind"] in args.kind]
    render.print_cache(root, entries, render.wide_console())
    return 0


COMMANDS = {"ablate": cmd_ablate, "attack": cmd_attack, "cache": cmd_cache, "check": cmd_check, "docs": cmd_docs,
            "info": cmd_info, "leaderboard": cmd_leaderboard, "list": cmd_list, "merge": cmd_merge, "plot": cmd_plot,
            "run": cmd_run, "teachers": cmd_teachers, "train": cmd_train}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failed cells, 2 user error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    from benchmark.core.data import DatasetError

    try:
        return COMMANDS[args.command](args)
    except (*USER_ERRORS, DatasetError) as err:
        print(f"bench {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"bench {args.command}: interrupted; finished work is kept in the cache", file=sys.stderr)
        return 130
