"""Does `bench` still fight for cores? One `bench` step beside another CPU job, with and without the thread choice.

Times one short `bench` step (default: one epoch of `bench train --model pointnet-lite --force`
on a private cache) as a user runs it, three ways:

- ``alone``: nothing else running (the launcher's own choice: all usable CPUs);
- ``busy, --threads N``: beside a CPU job that keeps ``--hog-threads`` threads busy (torch
  matrix products), with the thread count forced to all usable CPUs: what `bench` did before
  it chose its thread count;
- ``busy, automatic``: the same, with the launcher's choice (usable CPUs minus busy ones).

For the two busy runs the hog's own throughput (matrix products per second while the step
ran) is reported too: the machine's other user pays for oversubscription as well. Run::

    python benchmarks/thread_contention.py [--hog-threads 2]

Writes ``benchmarks/thread_contention.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

HOG = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(1024, 1024)
count, start = 0, time.perf_counter()
with open(sys.argv[2], "w") as out:
    while True:
        a = (a @ a).tanh_()
        count += 1
        if count % 10 == 0:
            out.seek(0); out.write(f"{count} {time.perf_counter() - start}"); out.truncate(); out.flush()
"""


def step(args: argparse.Namespace, cache: str, threads: int | None) -> tuple[float, str]:
    """Wall seconds of the `bench` step and the thread line `bench info` gives in the same situation."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(PCRB_CACHE_DIR=cache, COLUMNS="200")
    extra = [] if threads is None else ["--threads", str(threads)]
    info = subprocess.run([sys.executable, "-m", "benchmark", "info", *extra], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    row = next((ln for ln in info.stdout.splitlines() if "cpu threads" in ln), "")
    line = [cell.strip() for cell in row.split("│") if cell.strip()][-1] if "│" in row else row.strip()
    command = [sys.executable, "-m", "benchmark", *args.step.split(), *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    return seconds, " ".join(line.split())


def hog_rate(path: Path, since: tuple[int, float]) -> tuple[float, tuple[int, float]]:
    count, t = (float(x) for x in path.read_text().split())
    return (count - since[0]) / max(1e-9, t - since[1]), (int(count), t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", default="train --model pointnet-lite --force --set training.pointnet-lite.epochs=1")
    ap.add_argument("--hog-threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)
    from benchmark.core.env import usable_cpus

    cpus = usable_cpus()
    out: dict[str, Any] = {"what": "one bench step beside a CPU job, forced to all CPUs vs the launcher's choice",
                           "step": f"bench {args.step}", "cpus": cpus, "hog_threads": args.hog_threads,
                           "cpu": platform.machine(), "runs": {}}
    with tempfile.TemporaryDirectory() as cache:
        step(args, cache, None)  # warm-up: data generation and imports are not what is measured
        seconds, line = step(args, cache, None)
        out["runs"]["alone"] = {"seconds": round(seconds, 2), "threads": line}
        print(f"alone: {seconds:.1f} s ({line})", flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
            progress = Path(fh.name)
        hog = subprocess.Popen([sys.executable, "-c", HOG, str(args.hog_threads), str(progress)])
        try:
            time.sleep(5)  # let the hog reach full speed
            mark = (0, 0.0)
            _, mark = hog_rate(progress, mark)
            for name, threads in ((f"busy, --threads {cpus}", cpus), ("busy, automatic", None)):
                seconds, line = step(args, cache, threads)
                rate, mark = hog_rate(progress, mark)
                out["runs"][name] = {"seconds": round(seconds, 2), "threads": line, "hog_products_per_s": round(rate, 2)}
                print(f"{name}: {seconds:.1f} s ({line}); the other job ran {rate:.1f} products/s", flush=True)
        finally:
            hog.kill()
            progress.unlink(missing_ok=True)
    runs = out["runs"]
    forced, auto = runs[f"busy, --threads {cpus}"]["seconds"], runs["busy, automatic"]["seconds"]
    out["ratio_forced_over_automatic"] = round(forced / auto, 2)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
