"""Could the cold run's training be cheaper at the same accuracy?

A cold ``bench run --defense mrpd --attack all`` spends most of its time training the models the
embedded pipeline needs (``end_to_end.json``: the CLIP, the point teacher, the student). This
script trains each of them at its profile's number of epochs and at cheaper recipes (a fraction
of those epochs, the same cosine schedule compressed into them), from the same data and seed,
with the same dependencies (the point models read the CLIP trained at the profile's recipe,
taken from ``--cache-dir`` when it holds one), one run at a time in private caches, under the
machine's default kernel path and a fixed thread count.

A recipe would be chosen by its **validation** score (clouds carved from the model's own
training corpus; for the CLIP its zero-shot accuracy there); the test accuracy is recorded
beside it and must never choose. The JSON records per model and recipe: epochs, seconds,
validation score after every epoch, the kept (best) epoch, validation and test scores, weights
sha256; and per model the validation drop of each cheaper recipe against the profile's.

    python benchmarks/training_budget.py [--models clip,point-transformer-teacher,point-transformer-student]
                                         [--fractions 0.5,0.75]

Writes ``benchmarks/training_budget.json`` (``--out``); docs/performance.md's "Training
budget" table reads it (``bench docs``). ~30 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # the sibling script's helpers; the package
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
from training_stability import ROOT, default_cache, prepare_base, train

MODELS = ("clip", "point-transformer-teacher", "point-transformer-student")


def profile_epochs(profile: str, model: str) -> int:
    """The number of epochs ``profile`` trains ``model`` for."""
    from benchmark.core.config import resolve_config

    return int(resolve_config(profile).train_config(model).epochs)


def recipes(full: int, fractions: list[float]) -> list[int]:
    """Distinct epoch counts, cheapest first: each fraction of ``full`` (at least 1), then ``full``."""
    return sorted({max(1, round(full * f)) for f in fractions if 0 < f < 1} | {full})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list among {', '.join(MODELS)}")
    ap.add_argument("--fractions", default="0.5,0.75", help="cheaper recipes as fractions of the profile's epochs")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--cache-dir", default=None, help="where to take the profile's CLIP from (default: the user cache)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of every run (default: every usable CPU)")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    fractions = [float(f) for f in args.fractions.split(",")]
    from benchmark.core.env import usable_cpus

    cores = usable_cpus()
    threads = args.threads or cores
    profile = ["--profile", args.profile, "--threads", str(threads)]
    from benchmark.cells import git_commit

    out: dict[str, Any] = {
        "what": "each model of the cold run trained at its profile's epochs and at cheaper recipes (same data, seed, "
                "dependencies); validation chooses, test is only reported",
        "profile": args.profile, "cpu": platform.machine(), "processor": platform.processor(), "cores": cores,
        "threads": threads, "git_commit": git_commit(ROOT), "fractions": fractions,
        "launched": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "models": {},
    }
    source = Path(args.cache_dir) if args.cache_dir else default_cache()
    with tempfile.TemporaryDirectory(prefix="pcrb-budget-base-") as base_dir:
        with_clip = Path(base_dir) / "with-clip"  # datasets + the profile's CLIP (for the point models)
        out["clip_base"] = prepare_base(with_clip, source, profile)
        bare = Path(base_dir) / "bare"  # datasets only (the CLIP trains from scratch)
        (bare / "weights").mkdir(parents=True)
        if (with_clip / "datasets").is_dir():
            shutil.copytree(with_clip / "datasets", bare / "datasets")
        for model in models:
            full = profile_epochs(args.profile, model)
            runs = []
            for epochs in recipes(full, fractions):
                run = train(bare if model == "clip" else with_clip, epochs, "default", profile, model=model)
                runs.append(run)
                print(f"{model} {epochs}/{full} epochs: val {100 * run['val_accuracy']:.1f}% "
                      f"(best epoch {run['best_epoch']}), test {100 * run['test_accuracy']:.1f}%, "
                      f"{run['seconds']:.0f} s", flush=True)
            reference = next(r for r in runs if r["epochs"] == full)
            for run in runs:
                run["val_drop"] = round(reference["val_accuracy"] - run["val_accuracy"], 4)
                run["seconds_saved"] = round(reference["seconds"] - run["seconds"], 1)
            out["models"][model] = {"profile_epochs": full, "score": "zero-shot accuracy" if model == "clip"
                                    else "accuracy", "runs": runs}
            Path(args.out).write_text(json.dumps(out, indent=1) + "\n")  # each model's runs as they finish
    return 0


if __name__ == "__main__":
    sys.exit(main())
