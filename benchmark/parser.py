"""The ``bench`` argument parser: every command, its options and their help.

``build_parser()`` is all ``benchmark.cli`` needs from here; the parsed options become a
``RunConfig`` through ``benchmark.api.configure`` (profile < --config < --set < flags).
"""
from __future__ import annotations

import argparse
from typing import Any

from benchmark.core.config import ConfigError, available_profiles
from benchmark.core.registry import REGISTRIES

__all__ = ["build_parser", "parse_shard"]


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


def build_parser() -> argparse.ArgumentParser:
    """``bench``'s parser: one sub-command per command of ``benchmark.cli.COMMANDS``."""
    from benchmark.core.version import pcrb_version

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
    parser.add_argument("--version", action="version", version=f"pcrb {pcrb_version()}")
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
    p_run.add_argument("--no-plots", action="store_true", help="do not draw the figures (bench plot) into "
                       "<out>/plots after the run")
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

    p_check = sub.add_parser(
        "check",
        help="prove a profile's grid can run here (files, checkpoints, one batch) and estimate its cost",
        description="Resolve every model and weight file the grid needs (victim, teachers, surrogate, the "
        "defenses' networks), load every checkpoint and the dataset, push one batch through every defense and "
        "attack on --device, and print the model passes per cloud, an estimate of the grid's time from the "
        "measured batch and the peak memory. What the run would train is trained for one epoch on a few clouds, "
        "in a scratch cache. Exit 0 when everything loads; otherwise 1, with one line per problem (all of them).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_config_options(p_check)
    p_check.add_argument("--victim", default=None, help="model under attack (see: bench list models)")
    p_check.add_argument("--defense", default=None, help="'all', a name or a comma list")
    p_check.add_argument("--attack", default=None, help="'all', a name or a comma list")
    p_check.add_argument("--protocol", default=None, help="transfer, blackbox, adaptive, all, or a comma list")
    p_check.add_argument("--batch-size", type=int, default=None, help="clouds per batch (the run's)")
    p_check.add_argument("--limit", type=int, default=None, metavar="N", help="the run's test clouds (for the estimate)")

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
    p_board.add_argument("--html", default=None, metavar="FILE",
                         help="also write a self-contained HTML page (sortable tables, intervals, curves; "
                         "no network needed to view it), e.g. leaderboard.html")

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
        help="draw accuracy bars, budget sweeps and example clouds (bench run draws them too)",
        description="Write PNG figures from the result tables: accuracy per attack per defense with 95% "
        "Wilson error bars, accuracy vs swept parameter (bench run --sweep), and clean vs adversarial "
        "clouds read from the adversarial-example cache. bench run draws them into <out>/plots after "
        "each run (--no-plots skips that).",
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


def parse_shard(text: str | None) -> tuple[int, int]:
    """``--shard i/K`` -> ``(i, K)``; ``(0, 1)`` when not given. Raises ``ConfigError`` naming the form."""
    if not text:
        return 0, 1
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/K (e.g. 0/4); got {text!r}") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard i/K needs 0 <= i < K; got {text!r}")
    return index, count
