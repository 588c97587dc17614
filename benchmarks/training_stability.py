"""Does the embedded victim's accuracy depend on the CPU it was trained on?

Trains `point-transformer-student` (the default run's victim) several times from the same
CLIP, seed and data, changing only what another machine changes: the CPU kernel path, i.e.
float rounding (``ATEN_CPU_CAPABILITY`` for PyTorch's own kernels, ``MKL_CBWR`` for MKL's
matrix products). A recipe whose accuracy moves with rounding makes every committed number
machine-dependent: a user on another CPU gets another victim and another leaderboard. Each
recipe (a number of epochs; ``--recipes``) is trained under each kernel path (``--kernels``);
the JSON records each model's test / validation accuracy, best epoch, validation accuracy
after every epoch, weights sha256 and seconds, and per recipe the spread (max - min) of the
test accuracy across kernel paths. Run::

    python benchmarks/training_stability.py [--recipes 12,30] [--kernels default,avx2]

Every run trains in a private cache holding the same CLIP: the one of ``--cache-dir`` (default:
the user cache) when it holds one for the profile, else one trained here first under the
default kernel path. With ``--retrain-clip`` each kernel path trains its own CLIP first (the
whole chain, as on another machine; ``--out benchmarks/training_stability_chain.json`` is
what the docs read for that). Writes ``benchmarks/training_stability.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = "point-transformer-student"
# environment of each kernel path; "default" leaves the machine's choice
KERNELS: dict[str, dict[str, str]] = {
    "default": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512"},
}


def bench(args: list[str], cache: Path, env_extra: dict[str, str]) -> str:
    """Run ``bench <args>`` on ``cache``; its combined output (raises with the tail on failure)."""
    env = {k: v for k, v in os.environ.items() if k not in {"ATEN_CPU_CAPABILITY", "MKL_CBWR"}}
    env.update(PCRB_CACHE_DIR=str(cache), COLUMNS="200", **env_extra)
    command = [sys.executable, "-m", "benchmark", *args, "--cache-dir", str(cache)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr


def default_cache() -> Path:
    """The cache `bench` uses without --cache-dir (PCRB_CACHE_DIR or the user cache)."""
    from benchmark.core.cache import default_cache_dir

    return Path(default_cache_dir())


def prepare_base(base: Path, source: Path, profile: list[str], kernel: str | None = None) -> dict[str, Any]:
    """``base`` ends holding the datasets and the trained CLIP every run starts from: the CLIP of
    ``source`` (assumed trained under this machine's default kernel path; trained here if
    missing), or with another ``kernel`` one trained here under that kernel path (what another
    machine trains)."""
    (base / "weights").mkdir(parents=True, exist_ok=True)
    if (source / "datasets").is_dir():
        shutil.copytree(source / "datasets", base / "datasets", dirs_exist_ok=True)
    if kernel in (None, "default") and (source / "weights").is_dir():  # the machine default: source's CLIP
        for path in (source / "weights").glob("clip-*"):
            shutil.copy2(path, base / "weights" / path.name)
    start = time.perf_counter()
    # loads a copied CLIP when its key matches, else trains one
    bench(["train", "--model", "clip", *profile], base, KERNELS[kernel or "default"])
    metas = sorted((base / "weights").glob("clip-*.safetensors.json"), key=lambda p: p.stat().st_mtime)
    meta = json.loads(metas[-1].read_text())
    return {"sha256": meta["sha256"][:12], "seconds": round(time.perf_counter() - start, 1),
            "test_zero_shot_accuracy": meta["meta"].get("test_zero_shot_accuracy"),
            "trained_under": kernel or "default (shared by every run)"}


def train(base: Path, epochs: int, kernel: str, profile: list[str], model: str = MODEL) -> dict[str, Any]:
    """Train ``model`` with ``epochs`` under ``kernel`` in a copy of ``base``; its record (the
    validation / test scores are accuracies, zero-shot ones for the CLIP)."""
    with tempfile.TemporaryDirectory(prefix="pcrb-stability-") as scratch:
        cache = Path(scratch) / "cache"
        shutil.copytree(base, cache)
        start = time.perf_counter()
        bench(["train", "--model", model, *profile, "--set", f"training.{model}.epochs={epochs}"],
              cache, KERNELS[kernel])
        seconds = time.perf_counter() - start
        meta_path = next((cache / "weights").glob(f"{model}-*.safetensors.json"))
        record = json.loads(meta_path.read_text())
    meta = record["meta"]
    return {
        "epochs": epochs, "kernel": kernel, "env": KERNELS[kernel],
        "test_accuracy": meta.get("test_accuracy", meta.get("test_zero_shot_accuracy")),
        "val_accuracy": meta.get("val_accuracy", meta.get("val_zero_shot")),
        "best_epoch": meta["best_epoch"] + 1, "sha256": record["sha256"][:12],
        "val_by_epoch": [round(float(v), 4) for v in meta["val_by_epoch"]],
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="12,30", help="comma list of student epoch counts")
    ap.add_argument("--kernels", default="default,avx2", help=f"comma list of {sorted(KERNELS)}")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--cache-dir", default=None, help="where to take the CLIP from (default: the user cache)")
    ap.add_argument("--retrain-clip", action="store_true",
                    help="train the CLIP too under each kernel path (the whole chain another machine trains)")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads of every run (default: every usable CPU). Fixed, because a thread "
                         "count changes float rounding too, and `bench`'s automatic choice follows the load")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)
    recipes = [int(e) for e in args.recipes.split(",")]
    kernels = args.kernels.split(",")
    unknown = [k for k in kernels if k not in KERNELS]
    if unknown:
        ap.error(f"unknown kernel path(s) {unknown}; choose from {sorted(KERNELS)}")
    from benchmark.core.env import usable_cpus

    cores = usable_cpus()
    threads = args.threads or cores
    profile = ["--profile", args.profile, "--threads", str(threads)]  # every bench call's common options
    from benchmark.cells import git_commit

    out: dict[str, Any] = {
        "what": f"{MODEL} trained from the same data and seed under several CPU kernel paths (with --retrain-clip "
                "its CLIP retrained under each path too, else one CLIP shared)",
        "profile": args.profile, "model": MODEL, "cpu": platform.machine(), "processor": platform.processor(),
        "cores": cores, "threads": threads, "git_commit": git_commit(ROOT), "runs": [], "recipes": {},
    }
    source = Path(args.cache_dir) if args.cache_dir else default_cache()
    out["retrain_clip"] = args.retrain_clip
    out["clips"] = {}
    with tempfile.TemporaryDirectory(prefix="pcrb-stability-base-") as base_dir:
        bases: dict[str, Path] = {}
        for kernel in kernels:
            if args.retrain_clip or not bases:
                bases[kernel] = Path(base_dir) / kernel
                out["clips"][kernel] = prepare_base(bases[kernel], source, profile,
                                                    kernel if args.retrain_clip else None)
            else:
                bases[kernel], out["clips"][kernel] = bases[kernels[0]], out["clips"][kernels[0]]
        for epochs in recipes:
            for kernel in kernels:
                run = train(bases[kernel], epochs, kernel, profile)
                out["runs"].append(run)
                print(f"{epochs} epochs, {kernel}: test {100 * run['test_accuracy']:.1f}% "
                      f"(val {100 * run['val_accuracy']:.1f}%, best epoch {run['best_epoch']}, "
                      f"{run['seconds']:.0f} s, sha {run['sha256']})", flush=True)
    for epochs in recipes:
        accs = [r["test_accuracy"] for r in out["runs"] if r["epochs"] == epochs]
        out["recipes"][str(epochs)] = {"test_min": min(accs), "test_max": max(accs),
                                       "spread": round(max(accs) - min(accs), 4)}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["recipes"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
