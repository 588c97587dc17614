"""The ``bench`` command line: ``list``, ``info``, ``run``.

A thin layer: it parses options, resolves the run configuration (profile < --config <
--set < flags) and hands over to the library. Errors the user can fix are printed as one
line naming the fix (exit status 2); an interrupted run keeps its finished work (130).
Registries are filled by ``benchmark.core.registry.populate_registries`` (the library calls the
same function: nothing imports this module but the launcher).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from benchmark.core.env import DeviceError
from benchmark.core.config import ConfigError, RunConfig, available_profiles, check_params, resolve_config
from benchmark.core.registry import (
    REGISTRIES,
    DuplicateNameError,
    PluginError,
    Registry,
    UnknownNameError,
    populate_registries,
)

EXIT_USAGE = 2

USER_ERRORS = (ConfigError, UnknownNameError, DuplicateNameError, PluginError, FileNotFoundError, DeviceError)


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------
def _add_config_options(p: argparse.ArgumentParser) -> None:
    """The options every command that resolves a run configuration takes."""
    p.add_argument("--profile", default=None, choices=available_profiles(),
                   help="named preset of every parameter (smoke: seconds; default: embedded CPU run; "
                   "paper: the MRPD paper's settings; ifd: IF-Defense's attack settings). "
                   "Default: the --config file's 'profile:' key, else 'default'")
    p.add_argument("--config", default=None, metavar="FILE", help="YAML file merged over the profile")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set attacks.pgd.budget=0.04 "
                   "(value parsed as YAML); repeatable")
    p.add_argument("--dataset", default=None, help="dataset name (see: bench list datasets)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="folder holding the dataset's files")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:<i>")
    p.add_argument("--seed", type=int, default=None, help="seed of every random choice")
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="where datasets, weights, features and "
                   "adversarial examples are cached (default: $PCRB_CACHE_DIR or the user cache dir)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import this module first (it may register models, defenses, ...); repeatable")


def _add_threads_option(p: argparse.ArgumentParser, default: Any = None) -> None:
    # read by the launcher (benchmark/__main__.py) before the command runs; declared here for --help
    p.add_argument("--threads", type=int, default=default, metavar="N",
                   help="intra-op CPU threads (default: OMP_NUM_THREADS, else the CPUs this process may use "
                   "minus those other processes keep busy; `bench info` shows the choice)")


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve profile < --config < --set < flags for ``run`` and ``train``."""
    flags = {
        "seed": args.seed,
        "device": args.device,
        "cache_dir": args.cache_dir,
        "dataset": {"name": args.dataset, "root": args.data_root},
        "plugins": args.plugin or None,
    }
    for key, option in (("defense", "defense"), ("attack", "attack"), ("protocol", "protocol"),
                        ("batch_size", "batch_size"), ("limit", "limit"), ("out_dir", "out"),
                        ("victim", "victim"), ("surrogate", "surrogate"), ("eot", "eot")):
        flags[key] = getattr(args, option, None)
    return resolve_config(args.profile, args.config, args.overrides, flags)


def build_parser() -> argparse.ArgumentParser:
    from benchmark.core.env import package_versions

    parser = argparse.ArgumentParser(
        prog="bench",
        description="PCRB, the Point Cloud Robustness Bench: attack 3D point cloud classifiers, "
        "defend them, and write honest result tables.",
        epilog="Examples:\n"
        "  bench run --defense mrpd --attack all          # embedded dataset, CPU is enough\n"
        "  bench run --dataset modelnet40 --data-root ~/data/modelnet40_ply_hdf5_2048 \\\n"
        "            --defense all --attack all --device cuda --profile paper\n"
        "  bench list attacks                             # what the registries hold\n"
        "  bench info                                     # versions, device, cache dir\n"
        "Run 'bench <command> --help' for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pcrb {package_versions()['pcrb']}")
    _add_threads_option(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p_list = sub.add_parser(
        "list",
        help="list what a registry holds (models, datasets, attacks, defenses)",
        description="List the registered models, datasets, attacks or defenses with a one-line "
        "description and their key default parameters.",
    )
    p_list.add_argument("kind", choices=sorted(REGISTRIES), help="which registry to list")
    p_list.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import this module first (it may register more entries); repeatable")

    p_info = sub.add_parser(
        "info",
        help="print versions, devices, the allocator setting and the cache dir",
        description="Print the versions of PCRB and its dependencies, the devices torch sees, the "
        "CPU allocator setting, the cache directory, the shipped profiles and registry sizes.",
    )
    p_info.add_argument("--cache-dir", default=None, help="cache directory to report (default: $PCRB_CACHE_DIR "
                        "or the user cache dir)")

    p_run = sub.add_parser(
        "run",
        help="run attacks against defended models and write result tables",
        description="Resolve the run configuration (profile < --config file < --set overrides < the "
        "flags below), prepare the dataset and models, craft adversarial examples and evaluate "
        "every defense. --defense/--attack take 'all', one name or a comma list.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_config_options(p_run)
    p_run.add_argument("--victim", default=None, help="model under attack (see: bench list models)")
    p_run.add_argument("--surrogate", default=None, help="source model of the blackbox protocol")
    p_run.add_argument("--defense", default=None, help="'all', a name or a comma list (see: bench list defenses)")
    p_run.add_argument("--attack", default=None, help="'all', a name or a comma list (see: bench list attacks)")
    p_run.add_argument("--protocol", default=None, help="transfer, blackbox, adaptive, all, or a comma list")
    p_run.add_argument("--batch-size", type=int, default=None, help="clouds per batch")
    p_run.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N test clouds")
    p_run.add_argument("--out", default=None, metavar="DIR", help="where result tables are written")
    p_run.add_argument("--eot", type=int, default=None, help="adaptive protocol: draws per gradient (EOT) "
                       "for randomised defenses")
    p_run.add_argument("--shard", default=None, metavar="i/K", help="evaluate only shard i of K (job arrays; "
                       "combine with: bench merge)")
    p_run.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...", help="run once per value, each as "
                       "--set KEY=V, into <out>/sweeps/KEY/V (plot the curves with: bench plot)")
    p_run.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    p_run.add_argument("--force", action="store_true", help="recompute cells even when finished rows exist")
    p_run.add_argument("--no-progress", action="store_true", help="no live progress display")
    p_run.add_argument("--print-config", action="store_true",
                       help="print the resolved configuration and its hash, then stop")

    p_ablate = sub.add_parser(
        "ablate",
        help="run a defense once per variant of its switches (the paper's ablations) as one table",
        description="Evaluate every ablation the defense declares (for mrpd: without each teacher, without "
        "the gate, fixed vs dynamic weights, prompt sizes, ...) as its own defense column beside none, with "
        "the run's attacks, test clouds and protocol. Rows go to <out>/ablations/<defense>/<dataset>.csv and "
        "the table to <out>/ablations/<defense>/ablation.md. Finished cells and trained variants are reused.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p_ablate.add_argument("defense", help="a defense that declares ablations (e.g. mrpd)")
    _add_config_options(p_ablate)
    p_ablate.add_argument("--variants", default=None, metavar="V1,V2", help="only these variants (the full method "
                          "always runs); default: all (see: bench ablate <defense> --list)")
    p_ablate.add_argument("--list", action="store_true", help="list the declared variants and stop")
    p_ablate.add_argument("--attack", default="all", help="'all', a name or a comma list")
    p_ablate.add_argument("--protocol", default=None, help="transfer (default), adaptive, ... or a comma list")
    p_ablate.add_argument("--batch-size", type=int, default=None, help="clouds per batch")
    p_ablate.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N test clouds")
    p_ablate.add_argument("--out", default=None, metavar="DIR", help="results folder (the table goes to "
                          "<out>/ablations/<defense>/)")
    p_ablate.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    p_ablate.add_argument("--force", action="store_true", help="recompute cells even when finished rows exist")
    p_ablate.add_argument("--no-progress", action="store_true", help="no live progress display")

    p_teachers = sub.add_parser(
        "teachers",
        help="MRPD's teachers and student on every attack set: accuracy, rescue rate, embedding drift",
        description="Classify the clean test clouds, each attack's transferred examples, the training clouds "
        "and MRPD's crafted training examples with the undefended student, the student with MRPD's prompts, the "
        "image teacher (1 view and --views views) and the point teacher; report accuracy, the rescue rate (of "
        "the student's errors, the share a teacher gets right) and the drift of each embedding. Uses the cached "
        "examples of a finished grid (crafts what is missing). Writes <out>/diagnostics/mrpd/teachers.{json,md}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_config_options(p_teachers)
    p_teachers.add_argument("--attack", default="all", help="'all', a name or a comma list")
    p_teachers.add_argument("--views", type=int, default=6, help="depth views of the multi-view image teacher")
    p_teachers.add_argument("--train-limit", type=int, default=512, metavar="N",
                            help="the first N training clouds (0 = all)")
    p_teachers.add_argument("--batch-size", type=int, default=None, help="clouds per batch")
    p_teachers.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N test clouds")
    p_teachers.add_argument("--out", default=None, metavar="DIR", help="results folder (the report goes to "
                            "<out>/diagnostics/mrpd/)")
    p_teachers.add_argument("--no-progress", action="store_true", help="no live progress display")

    p_train = sub.add_parser(
        "train",
        help="train (or load from the cache) models and report their accuracy",
        description="Train the named models on the configured dataset, or load them from the weights "
        "cache when the same configuration was trained before, and print their accuracy. Models a "
        "model depends on (the CLIP teacher of the point transformers) are trained first. Training "
        "settings: --set training.default.epochs=N or training.<model>.<field>=value.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p_train.add_argument("--model", required=True, help="a model name or a comma list (see: bench list models)")
    _add_config_options(p_train)
    p_train.add_argument("--force", action="store_true", help="retrain even when cached weights exist")

    p_attack = sub.add_parser(
        "attack",
        help="craft adversarial examples against one model and report success and distances",
        description="Train or load the model, craft (or load from the adversarial cache) each attack's "
        "examples on the test split, and print success rate, accuracy and mean L2 / Chamfer / "
        "Hausdorff distances. Attack parameters come from the profile and --set attacks.<name>.<field>.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p_attack.add_argument("--attack", required=True, help="'all', a name or a comma list (see: bench list attacks)")
    p_attack.add_argument("--model", default=None, help="source model (default: the config's victim)")
    _add_config_options(p_attack)
    p_attack.add_argument("--limit", type=int, default=None, metavar="N", help="attack only the first N test clouds")
    p_attack.add_argument("--batch-size", type=int, default=None, help="clouds per batch")

    p_board = sub.add_parser(
        "leaderboard",
        help="regenerate leaderboard.md from the result tables",
        description="Render the result tables (<results>/*.csv and the run records in <results>/runs) into a "
        "markdown leaderboard: per dataset and protocol, defenses ranked by worst-case robust accuracy over "
        "the strong attacks, with a paired McNemar test against none, the paper's average, the median minimal "
        "L2 distance, 95% Wilson intervals, every parameter and the command to reproduce. The same results "
        "always give the same file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p_board.add_argument("--results", default="results", metavar="DIR", help="results folder of bench run")
    p_board.add_argument("--out", default="leaderboard.md", metavar="FILE", help="markdown file to write")

    p_docs = sub.add_parser(
        "docs",
        help="rewrite the README's generated sections from the files the code writes",
        description="Rewrite every '<!-- begin generated: NAME -->' section of README.md and docs/*.md from "
        "its source (benchmark JSON, result tables); --check only reports the sections that drifted.",
    )
    p_docs.add_argument("--check", action="store_true", help="exit 1 when a generated section differs from its source")
    p_docs.add_argument("--root", default=".", metavar="DIR", help="the project's root folder")

    p_plot = sub.add_parser(
        "plot",
        help="draw accuracy bars, budget sweeps and example clouds (needs: pip install 'pcrb[plots]')",
        description="Write PNG figures from the result tables: accuracy per attack per defense with 95% "
        "Wilson error bars, accuracy vs swept parameter (bench run --sweep), and clean vs adversarial "
        "clouds read from the adversarial-example cache.",
    )
    p_plot.add_argument("--results", default="results", metavar="DIR", help="results folder of bench run "
                        "(default: results)")
    p_plot.add_argument("--out", default=None, metavar="DIR", help="figure folder (default: <results>/plots)")
    p_plot.add_argument("--cache-dir", default=None, metavar="DIR", help="cache holding the adversarial "
                        "examples (default: $PCRB_CACHE_DIR or the user cache dir)")
    p_plot.add_argument("--samples", type=int, default=3, help="clouds per attack in the example figures "
                        "(default: 3; 0: none)")

    p_merge = sub.add_parser(
        "merge",
        help="combine the results of bench run --shard i/K into single-process rows",
        description="Merge the rows of shard runs (bench run --shard i/K, one results folder each, with its "
        "runs/ records) into the rows one process would have written: summed counts, recomputed "
        "accuracy and intervals, per-sample outcomes in the test order.",
    )
    p_merge.add_argument("--results", nargs="+", required=True, metavar="DIR", help="the shards' results folders")
    p_merge.add_argument("--out", required=True, metavar="DIR", help="results folder to write the merged rows to")

    p_cache = sub.add_parser(
        "cache",
        help="list or clear cache entries (datasets, weights, defenses, features, adversarial examples)",
        description="`bench cache ls` lists every entry of the cache with its kind and size; `bench cache clear "
        "[--kind KIND ...]` removes entries (all kinds unless named). Entries are recomputed on demand.",
    )
    p_cache.add_argument("action", choices=("ls", "clear"))
    p_cache.add_argument("--kind", action="append", default=None, metavar="KIND",
                         help="only this kind (datasets, weights, defenses, features, adversarial, "
                         "adversarial-parts); repeatable")
    p_cache.add_argument("--cache-dir", default=None, metavar="DIR", help="the cache (default: $PCRB_CACHE_DIR or "
                         "the user cache dir)")
    for command in sub.choices.values():  # `bench run --threads 2` as well as `bench --threads 2 run`
        _add_threads_option(command, default=argparse.SUPPRESS)
    return parser


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------
_COMMON_DATASET_ARGS = {"root", "num_points", "sampling", "normalize", "seed", "cache_dir"}


def _format_defaults(defaults: dict[str, Any], skip: set[str] = frozenset(), width: int = 70) -> str:
    parts = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in defaults.items() if k not in skip]
    text = ", ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    populate_registries(args.plugin)
    registry: Registry = REGISTRIES[args.kind]
    table = Table(title=f"{args.kind} ({len(registry)} registered)", title_justify="left")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("description")
    table.add_column("key defaults", style="dim")
    skip = _COMMON_DATASET_ARGS if args.kind == "datasets" else set()
    for entry in registry.entries():
        table.add_row(entry.name, entry.description, _format_defaults(dict(entry.defaults), skip))
    console = Console(width=max(120, Console().width))
    console.print(table)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from benchmark.core.cache import default_cache_dir
    from benchmark.core.env import allocator_status, package_versions

    populate_registries()
    table = Table(title="PCRB environment", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for name, version in package_versions().items():
        table.add_row(name, torch.__version__ if name == "torch" else version)
    from benchmark.core.env import choose_threads, thread_choice

    chosen = thread_choice()
    if chosen is None:  # called as a library (tests): say what the launcher would choose now
        chosen = choose_threads()
        table.add_row("cpu threads", f"{torch.get_num_threads()} now; `bench` would use {chosen.threads} "
                      f"({chosen.reason})")
    else:
        table.add_row("cpu threads", f"{torch.get_num_threads()} ({chosen.reason})")
    if torch.cuda.is_available():
        names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
        table.add_row("cuda", f"{torch.version.cuda}; {names}")
    else:
        table.add_row("cuda", "not available (CPU only)")
    table.add_row("device (auto)", "cuda" if torch.cuda.is_available() else "cpu")
    table.add_row("allocator", allocator_status())
    table.add_row("cache dir", str(args.cache_dir or default_cache_dir()))
    table.add_row("profiles", ", ".join(available_profiles()))
    for kind, registry in REGISTRIES.items():
        table.add_row(kind, f"{len(registry)} registered")
    Console().print(table)
    return 0


def _check_names(cfg: RunConfig) -> dict[str, list[str]]:
    """Validate every name in the config: the selected names per registry.

    Unknown names and parameters raise (with close matches).
    """
    from benchmark.core.registry import ATTACKS, DATASETS, DEFENSES, MODELS

    def resolve(registry: Registry, spec: list[str]) -> list[str]:
        names: list[str] = []
        for name in spec:
            if name != "all" and name not in registry:
                raise UnknownNameError(registry.unknown_message(name))
            names.extend(registry.resolve(name))
        return names

    DATASETS.get(cfg.dataset.name)
    selected = {
        "defenses": resolve(DEFENSES, cfg.defense),
        "attacks": resolve(ATTACKS, cfg.attack),
        "models": resolve(MODELS, [cfg.victim, cfg.surrogate]),
    }
    for section, registry in (("attacks", ATTACKS), ("defenses", DEFENSES), ("models", MODELS),
                              ("datasets", DATASETS)):
        check_params(section, getattr(cfg, section), registry)
    return selected


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    if getattr(args, "sweep", None):
        return _run_sweep(args)
    cfg = _config_from_args(args)
    console = Console(stderr=True)
    if args.print_config:
        print(f"# config hash: {cfg.hash()}")
        print(cfg.to_yaml(), end="")
        return 0
    populate_registries(cfg.plugins)
    from benchmark.core.env import resolve_device

    device = resolve_device(cfg.device)
    console.print(f"[bold]bench run[/] profile={cfg.profile} dataset={cfg.dataset.name} device={device} "
                  f"config={cfg.hash()}")
    _check_names(cfg)
    import torch

    from benchmark.runner import Runner

    torch.manual_seed(cfg.seed)
    from benchmark import distributed

    if distributed.launched():  # torchrun: shard i/K = rank/world size, rank 0 merges and reports
        if args.shard:
            raise ConfigError("--shard and a torchrun launch both shard the test set; use one of them")
        runner = distributed.DistributedRunner(cfg, console=console, progress=not args.no_progress,
                                               fail_fast=args.fail_fast, force=args.force)
    else:
        runner = Runner(cfg, console=console, progress=not args.no_progress, fail_fast=args.fail_fast,
                        shard=_parse_shard(args.shard), force=args.force)
    rows = runner.run()
    if rows is None:  # a torchrun worker rank: rank 0 prints the table
        return 1 if runner.failures else 0
    print_summary(rows, cfg, Console(width=max(120, Console().width)))
    _print_replaced(runner.replaced, runner.rows, console)
    _print_sanity(runner.store.read(cfg.dataset.name), console)
    console.print(f"results: {runner.store.csv_path(cfg.dataset.name)} (run {runner.run_id})")
    if runner.failures:
        console.print(f"[red]{len(runner.failures)} cell(s) failed[/]; see the 'error' column of the results")
        return 1
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    """``bench ablate <defense>``: every declared variant as its own defense column, one table."""
    from rich.console import Console
    from rich.table import Table

    from benchmark.ablate import (
        ablation_dir,
        ablation_markdown,
        ablation_summary,
        column_name,
        mechanism_markdown,
        variants_of,
    )
    from benchmark.core.registry import DEFENSES

    args.defense_name = args.defense
    args.defense = "none"
    args.victim = args.surrogate = args.eot = None
    cfg = _config_from_args(args)
    populate_registries(cfg.plugins)
    name = args.defense_name
    if name not in DEFENSES:
        raise UnknownNameError(DEFENSES.unknown_message(name))
    control = getattr(DEFENSES.get(name).obj, "ablation_control", None)  # e.g. prompt-at for mrpd
    if control:
        cfg = dataclasses.replace(cfg, defense=["none", control])
    select = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    try:
        variants = variants_of(name, select)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    console = Console(stderr=True)
    if args.list:
        for variant, ablation in variants.items():
            changes = ", ".join(f"{k}={v}" for k, v in ablation.changes.items()) or "-"
            print(f"{variant:18s} {changes:45s} {ablation.what}")
        return 0
    out = ablation_dir(cfg.out_dir, name)
    cfg = dataclasses.replace(cfg, out_dir=str(out))
    _check_names(cfg)
    import torch

    from benchmark.runner import Runner
    from defenses import build_defense

    base = dict(cfg.defenses.get(name) or {})
    full = next(iter(variants))
    extra = {}
    for variant, ablation in variants.items():
        obj = build_defense(name, **{**base, **dict(ablation.changes)})
        obj.registry_name = column_name(name, variant, full)
        extra[obj.registry_name] = obj
    console.print(f"[bold]bench ablate {name}[/] {len(variants)} variants, profile={cfg.profile} "
                  f"dataset={cfg.dataset.name} config={cfg.hash()}")
    torch.manual_seed(cfg.seed)
    runner = Runner(cfg, console=console, progress=not args.no_progress, fail_fast=args.fail_fast,
                    extra_defenses=extra, force=args.force)
    rows = runner.run()
    everything = runner.store.read(cfg.dataset.name)
    mine = everything[everything["defense"].isin(["none", *([control] if control else []), *extra])] \
        if len(everything) else rows
    mine = mine[mine["profile"] == cfg.profile] if len(mine) else mine
    mine = mine[mine["n"] == len(runner.indices)] if len(mine) else mine  # this run's clouds only
    markdown = ablation_markdown(mine, name, variants, title=f"{name} ablations", control=control)
    (out / "ablation.md").write_text(markdown + "\n" if not markdown.endswith("\n") else markdown)
    mechanisms = getattr(DEFENSES.get(name).obj, "mechanisms", None)
    if mechanisms and set(mechanisms.values()) <= set(variants):  # else some mechanisms go unmeasured
        (out / "mechanisms.md").write_text(mechanism_markdown(mine, name, variants, mechanisms, control))
    wide = Console(width=max(120, Console().width))
    for protocol, part in mine[mine["status"] == "ok"].groupby("protocol", sort=False):
        summary = ablation_summary(part, name, variants, control)
        table = Table(title=f"{name} ablations · {cfg.dataset.name} · {protocol} · accuracy %", title_justify="left")
        for col in ("variant", "clean", "mean robust", "worst case", "delta mean", "p mean", "p worst",
                    *((f"p mean vs {control}", f"p worst vs {control}") if control else ()), "paper mean", "what"):
            table.add_column(col, justify="left" if col in ("variant", "what") else "right")
        for _, r in summary.iterrows():
            cells = [("-" if r[c] != r[c] else (f"{r[c]:+.1f}" if c == "delta mean" else f"{r[c]:.1f}"))
                     for c in ("clean", "mean robust", "worst case", "delta mean")]
            cells += [("-" if r[c] != r[c] else (f"{r[c]:.2g}" + ("*" if r[c] < 0.05 else "")))
                      for c in ("p mean", "p worst", *(("p mean control", "p worst control") if control else ()))]
            cells.append("-" if r["paper mean"] != r["paper mean"] else f"{r['paper mean']:.1f}")
            table.add_row(str(r["variant"]), *cells, str(r["what"]))
        wide.print(table)
    console.print(f"results: {runner.store.csv_path(cfg.dataset.name)}; table: {out / 'ablation.md'}")
    if runner.failures:
        console.print(f"[red]{len(runner.failures)} cell(s) failed[/]; see the 'error' column of the results")
        return 1
    return 0


def _run_sweep(args: argparse.Namespace) -> int:
    """``bench run --sweep KEY=V1,V2``: one run per value (``--set KEY=V``) into ``<out>/sweeps/KEY/V``."""
    from rich.console import Console

    from benchmark.plots import parse_sweep, sweep_out_dir

    try:
        key, values = parse_sweep(args.sweep)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    base = _config_from_args(args).out_dir
    status = 0
    for value in values:
        Console(stderr=True).print(f"[bold]sweep[/] {key}={value}")
        one = argparse.Namespace(**{**vars(args), "sweep": None, "overrides": [*args.overrides, f"{key}={value}"],
                                    "out": str(sweep_out_dir(base, key, value))})
        status = max(status, cmd_run(one))
    return status


def cmd_teachers(args: argparse.Namespace) -> int:
    """``bench teachers``: the teacher-robustness report (``benchmark.api.teacher_robustness``)."""
    from rich.console import Console

    from benchmark.api import diagnostics_dir, teacher_robustness

    if args.views < 1:
        raise ConfigError(f"--views must be >= 1; got {args.views}")
    args.defense, args.protocol = "mrpd", None
    args.victim = args.surrogate = args.eot = None
    cfg = _config_from_args(args)
    populate_registries(cfg.plugins)
    console = Console(stderr=True)
    report = teacher_robustness(cfg, views=args.views, train_limit=args.train_limit or None, console=console,
                                progress=not args.no_progress)
    print((diagnostics_dir(cfg.out_dir) / "teachers.md").read_text())
    console.print(f"wrote {diagnostics_dir(cfg.out_dir)}/teachers.{{json,md}} in {report['seconds']:.0f} s")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark.leaderboard import write_leaderboard

    path = write_leaderboard(args.results, args.out)
    print(f"wrote {path}")
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


def cmd_plot(args: argparse.Namespace) -> int:
    from benchmark.plots import MissingExtraError, make_plots

    try:
        paths = make_plots(args.results, args.out, cache_dir=args.cache_dir, samples=args.samples,
                           log=lambda m: print(m, file=sys.stderr))
    except MissingExtraError as err:
        print(f"bench plot: {err}", file=sys.stderr)
        return EXIT_USAGE
    for path in paths:
        print(path)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from rich.console import Console

    from benchmark.distributed import MergeError, merge_results
    from benchmark.store import ResultStore

    try:
        rows = merge_results(args.results, args.out)
    except MergeError as err:
        print(f"bench merge: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    console = Console(width=max(120, Console().width))
    for (dataset, profile), part in rows.groupby(["dataset", "profile"], sort=True):
        cfg = argparse.Namespace(dataset=argparse.Namespace(name=dataset), victim=",".join(sorted(set(part["victim"]))),
                                 profile=profile)
        print_summary(part, cfg, console)
    print(f"merged {len(rows)} rows into {ResultStore(args.out).out_dir}")
    return 0


def _parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/K (e.g. 0/4); got {text!r}") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard i/K needs 0 <= i < K; got {text!r}")
    return index, count


def print_summary(rows: Any, cfg: RunConfig, console: Any) -> None:
    """Per protocol: rows = clean + attacks + mean + worst case, columns = defenses, cells =
    accuracy % with the 95% Wilson interval's half-width; plus the attack's success on ``none``."""
    from rich.markup import escape
    from rich.table import Table

    from benchmark.store import summary_table, with_labels

    if rows is None or len(rows) == 0:
        console.print("no results")
        return
    for protocol, part in rows.groupby("protocol", sort=False):
        table = summary_table(part)
        if table.empty:
            continue
        ok = with_labels(part[part["status"] == "ok"])
        n = int(ok["n"].iloc[0]) if len(ok) else 0
        title = (f"{cfg.dataset.name} · {protocol} · victim {cfg.victim} · profile {cfg.profile} · n={n} · "
                 f"accuracy % (± 95% Wilson half-width)")
        out = Table(title=title, title_justify="left")
        out.add_column("attack", no_wrap=True)
        for d in table.columns:  # escaped: a variant label "[k=3]" is no rich markup
            out.add_column(escape(str(d)), justify="right", no_wrap=True)
        out.add_column("success on none", justify="right")
        for attack, values in table.iterrows():
            cells = []
            for d, v in values.items():
                match = ok[(ok["attack"] == attack) & (ok["defense"] == d)]
                if v != v:  # NaN
                    cells.append("-")
                elif attack == "median min L2":  # a distance (cloud units), not a percentage
                    cells.append(f"{v:.3f}")
                elif len(match):
                    half = 50 * (float(match["ci_high"].iloc[-1]) - float(match["ci_low"].iloc[-1]))
                    cells.append(f"{v:.1f} ±{half:.1f}")
                else:
                    cells.append(f"{v:.1f}")
            success = ok[(ok["attack"] == attack) & (ok["defense_name"] == "none")]["attack_success"]
            ok_success = success.dropna()
            cells.append(f"{100 * float(ok_success.iloc[-1]):.1f}" if len(ok_success) else "")
            style = "bold" if attack in ("mean over attacks", "worst case", "worst case (strong)", "median min L2") else None
            out.add_row(escape(str(attack)), *cells, style=style)
        console.print(out)


def _text(value: Any) -> str:
    """A stored text cell as a string ("" for a missing value: None or the NaN a CSV read gives)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _print_replaced(replaced: Sequence[tuple[dict[str, Any], str]], new_rows: Sequence[Mapping[str, Any]],
                    console: Any) -> None:
    """Say which stored rows this run replaced, ``(old row, new cell hash)``: the same cells under
    the same variant label (a variant with other parameters than its profile's is a new row,
    never a replacement), and why: the old one failed, the profile's own settings changed, code,
    weights or data changed, or nothing did (``--force``)."""
    if not replaced:
        return
    new_by_hash = {row.get("cell_hash"): row for row in new_rows}

    def params_changed(old: Mapping[str, Any], new_hash: str) -> bool:
        new = new_by_hash.get(new_hash)
        return new is not None and any(_text(old.get(k)) != _text(new.get(k)) for k in ("attack_params", "defense_params"))

    failed = sum(1 for old, _ in replaced if old.get("status") != "ok")
    ok = [(old, h) for old, h in replaced if old.get("status") == "ok"]
    settings = sum(1 for old, h in ok if params_changed(old, h))
    changed = sum(1 for old, h in ok if old.get("cell_hash") != h and not params_changed(old, h))
    same = len(ok) - settings - changed
    cells = ", ".join(f"{old.get('protocol')}/{old.get('defense')}/{old.get('attack')}" for old, _ in replaced[:6])
    more = f" and {len(replaced) - 6} more" if len(replaced) > 6 else ""
    console.print(f"[yellow]replaced {len(replaced)} stored row(s) of the same cells[/] ({cells}{more}): "
                  f"{failed} had failed, {settings} were computed with the profile's earlier settings, {changed} "
                  f"with the same settings before code, weights or data changed, {same} with identical parameters "
                  "(recomputed: --force). Rows with other parameters than their profile's are kept as labelled "
                  "variants, never replaced.")


def _print_sanity(rows: Any, console: Any) -> None:
    """The sanity checklist (``benchmark.sanity``) over every stored row of the dataset, as warnings."""
    from benchmark.sanity import sanity_warnings

    for warning in sanity_warnings(rows):
        console.print(f"[yellow]sanity check[/] {warning}", highlight=False)


def _prepare_data(cfg: RunConfig, console: Any) -> dict[str, Any]:
    """Load (generate or read, then cache) both splits of the configured dataset and summarise them."""
    from benchmark.core.cache import resolve_cache_dir
    from benchmark.core.data import load_run_split

    cache_dir = resolve_cache_dir(cfg.cache_dir)
    splits = {}
    for split in ("train", "test"):
        with console.status(f"preparing {cfg.dataset.name} ({split})"):
            ds = load_run_split(cfg, split, cache_dir)
        console.print(f"  {split}: {len(ds)} clouds x {ds.num_points} points, {ds.num_classes} classes, "
                      f"fingerprint {ds.fingerprint}")
        splits[split] = ds
    return splits


def cmd_train(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from benchmark.core.env import resolve_device
    from benchmark.core.registry import MODELS

    cfg = _config_from_args(args)
    populate_registries(cfg.plugins)
    names = MODELS.resolve(args.model)
    if "all" in str(args.model).split(","):  # defense parts (PU-Net) are trained by their defense
        names = [n for n in names if not {"upsampler", "defense-part"} & set(MODELS.get(n).tags)]
    device = resolve_device(cfg.device)
    console = Console(stderr=True)
    console.print(f"[bold]bench train[/] {', '.join(names)} on {cfg.dataset.name} device={device}")
    check_params("models", cfg.models, MODELS)
    data = _prepare_data(cfg, console)
    from models.zoo import describe_score

    torch.manual_seed(cfg.seed)
    zoo = _zoo(cfg, data, device, console, force=args.force)
    table = Table(title=f"models on {cfg.dataset.name} ({len(data['test'])} test clouds)", title_justify="left")
    for column in ("model", "params", "score", "seconds", "source", "weights sha256"):
        table.add_column(column)
    for name in names:
        ready = zoo.get(name)
        meta = ready.meta
        table.add_row(name, f"{sum(p.numel() for p in ready.model.parameters()):,}", describe_score(meta),
                      f"{meta.get('seconds', '-')}", "cache" if ready.cached else "trained", ready.weights_hash[:12])
    Console(width=max(120, Console().width)).print(table)
    return 0


def _zoo(cfg: RunConfig, data: dict[str, Any], device: Any, console: Any, force: bool = False) -> Any:
    from benchmark.core.cache import resolve_cache_dir
    from benchmark.core.data import load_run_split
    from models.zoo import Zoo, ZooContext

    cache_dir = resolve_cache_dir(cfg.cache_dir)
    return Zoo(ZooContext(train=data["train"], test=data["test"], cache_dir=cache_dir,
                          device=device, seed=cfg.seed, params=cfg.models, train_config=cfg.train_config,
                          force=force, log=lambda msg: console.print(f"  {msg}"),
                          source=lambda overrides: load_run_split(cfg, "train", cache_dir, overrides)))


def cmd_attack(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from attacks.crafting import craft, crafting_key
    from attacks.factory import attack_spec, build_attack
    from benchmark.core.cache import resolve_cache_dir
    from benchmark.core.env import resolve_device
    from benchmark.core.registry import ATTACKS, MODELS

    cfg = _config_from_args(args)
    populate_registries(cfg.plugins)
    names = ATTACKS.resolve(args.attack)
    source = args.model or cfg.victim
    MODELS.get(source)
    check_params("attacks", cfg.attacks, ATTACKS)
    check_params("models", cfg.models, MODELS)
    for name in names:  # every parameter checked before any data or model work
        attack_spec(name, cfg.attacks.get(name), seed=cfg.seed)
    device = resolve_device(cfg.device)
    console = Console(stderr=True)
    console.print(f"[bold]bench attack[/] {', '.join(names)} on {source} ({cfg.dataset.name}) device={device}")
    data = _prepare_data(cfg, console)
    torch.manual_seed(cfg.seed)
    zoo = _zoo(cfg, data, device, console)
    model = zoo.get(source)
    test = data["test"] if cfg.limit is None else data["test"].subset(range(min(cfg.limit, len(data["test"]))))
    points, labels = test.tensors(device)
    with torch.no_grad():
        clean = torch.cat([model.model(points[i : i + cfg.batch_size]).argmax(1)
                           for i in range(0, len(points), cfg.batch_size)])
    clean_acc = float((clean == labels).float().mean())
    table = Table(title=f"attacks on {source} ({len(test)} test clouds, clean accuracy {100 * clean_acc:.1f}%)",
                  title_justify="left")
    for column in ("attack", "success", "accuracy", "L2", "Chamfer", "Hausdorff", "seconds", "source"):
        table.add_column(column)
    for name in names:
        attack = build_attack(name, cfg.attacks.get(name), seed=cfg.seed,
                              resolve_model=lambda model_name: zoo.get(model_name).model)
        key = crafting_key(attack, model_hash=model.weights_hash, dataset_fingerprint=data["test"].fingerprint,
                           split="test", subset=None if cfg.limit is None else list(range(len(test))), name=name)
        result = craft(attack, model.model, points, labels, key=key, cache_dir=resolve_cache_dir(cfg.cache_dir),
                       batch_size=cfg.batch_size, progress=True)
        accuracy = float((result.pred == result.labels).float().mean())
        table.add_row(name, f"{100 * float(result.success.float().mean()):.1f}%", f"{100 * accuracy:.1f}%",
                      "-" if bool(result.l2.isnan().all()) else f"{float(result.l2.nanmean()):.4f}",
                      f"{float(result.chamfer.mean()):.5f}",
                      f"{float(result.hausdorff.mean()):.5f}", f"{result.seconds:.1f}",
                      "cache" if result.cached else "crafted")
    Console(width=max(120, Console().width)).print(table)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from benchmark.core.cache import cache_entries, clear_cache, resolve_cache_dir

    root = resolve_cache_dir(args.cache_dir)
    if args.action == "clear":
        files, size = clear_cache(root, args.kind)
        print(f"removed {files} files ({size / 2**20:.1f} MiB) from {root}")
        return 0
    entries = [e for e in cache_entries(root) if not args.kind or e["kind"] in args.kind]
    table = Table(title=f"cache {root}: {len(entries)} entries, "
                  f"{sum(e['bytes'] for e in entries) / 2**20:.1f} MiB", title_justify="left")
    for column in ("kind", "entry", "MiB", "created"):
        table.add_column(column, justify="right" if column == "MiB" else "left")
    for e in entries:
        created = "partial (a killed write; bench cache clear removes it)" if e.get("partial") else e["created"]
        table.add_row(e["kind"], e["name"], f"{e['bytes'] / 2**20:.2f}", created)
    Console(width=max(120, Console().width)).print(table)
    return 0


COMMANDS = {"ablate": cmd_ablate, "attack": cmd_attack, "cache": cmd_cache, "docs": cmd_docs, "info": cmd_info,
            "leaderboard": cmd_leaderboard, "list": cmd_list, "merge": cmd_merge, "plot": cmd_plot, "run": cmd_run,
            "teachers": cmd_teachers, "train": cmd_train}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
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
