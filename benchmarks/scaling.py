"""How does attack cost grow with the cloud and the batch? Time and peak memory of PGD and kNN vs N and B.

PGD (``steps = --iters``) and kNN (``num_iter = --iters``) from the attack registry, on the
student (``point-transformer-student``) and, with ``--models ...,dgcnn``, on DGCNN, both
randomly initialised (timing only; the student gets random unit class embeddings), on
SynthShapes test clouds, CPU with 2 threads by default:

- vs the number of points N (``--points 1024,2048,4096``) at batch ``--point-batch 8``;
- vs the batch size B (``--batches 4,8,16,32``) at ``--batch-points 1024`` points.

Each configuration runs in a fresh subprocess (this script with ``--one``), so one
configuration's allocations never hide another's peak. In it: build the model and the
batch, warm up (one forward of the batch **without autograd**, and one 1-iteration call of
the same attack on a single 64-point cloud, which absorbs first-call costs such as lazy
imports), then

- memory: on the CPU, the process's peak resident set during the first attack call minus its
  resident set just before it, in MiB: what the attack adds on top of the model, the data and
  one inference pass (its autograd graph, optimiser state, distance blocks). On Linux the peak
  (``VmHWM``) is reset before the call (``/proc/self/clear_refs``), so an earlier, higher peak
  (generating larger clouds, loading the model) does not hide the call's; elsewhere it is the
  lifetime peak (``ru_maxrss``), which can. Either way it counts pages newly touched: with
  bench's allocator tunables (freed memory stays resident) memory freed before the call and
  reused by it does not count, so small differences between rows are not the attack's. On CUDA,
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus the memory
  allocated before the call;
- time: seconds per iteration = the algorithm's wall time (``AttackResult.seconds``: the
  iterations plus per-call set-up such as kNN's normal estimation) / iterations, best of
  ``--repeats`` calls; ``wall`` is the whole call (input checks, clean and final
  predictions, distances).

The growth factor per doubling between two sizes x1 < x2 is ``(v2 / v1) ** (1 / log2(x2 / x1))``
(1 = flat, 2 = linear, 4 = quadratic), per step and over the whole sweep.

Where the cost is O(N^2) per sample, and where chunking bounds memory
(``benchmark/core/neighbours.py``): every neighbour search (``knn``, ``knn_indices``,
``nearest_neighbor``, hence Chamfer and Hausdorff) picks indices without autograd from
``torch.cdist`` + ``topk``/``argmin`` over blocks of ``[B, chunk, N]`` distances, with
``chunk = _auto_chunk(B, N) = _MAX_BLOCK_ELEMENTS // (B * N)`` query points and
``_MAX_BLOCK_ELEMENTS = 4 Mi`` elements (16 MiB float32); the returned distances are
recomputed from the gathered points, so what autograd keeps is O(B * N * k), linear in N.
Time stays O(N^2) per sample; memory of the quadratic part is capped at one block. In this
sweep the cap binds only at N = 4096, B = 8 (B * N * N = 128 Mi: two chunks of 2,048
queries); N = 1024, 2048 at B = 8 (32 / 128 MiB) and every batch at N = 1024 (B = 32: 128 MiB)
fit one block.

- PGD on the student: nothing quadratic per iteration. The student groups the cloud into
  G = 32 FPS centres (32 sequential O(N) steps) with their K = 16 nearest points (one
  ``[B, 32, N]`` distance block), then runs a mini-PointNet on the G x K = 512 grouped points
  and a transformer on 1 + G tokens, both independent of N: expect its pass to grow less
  than linearly in N. The one O(N^2) search is the adv-to-clean nearest neighbour for the
  reported Chamfer / Hausdorff distances, once per call (``Attack.__call__``).
- kNN (``attacks/knn.py``): per iteration two O(N^2) searches per sample, both chunked: the
  adv-to-clean Chamfer (``nearest_neighbor``, shared by the loss and the bookkeeping) and
  the kNN-smoothness penalty (``knn(adv, k=5, exclude_self=True)``); once per call the clean
  cloud's normals (``estimate_normals``: a k = 10 search plus batched 3 x 3 ``eigh``), the
  final iterate's Chamfer and the base class's distances. Adam keeps two moments of the
  ``[B, N, 3]`` cloud.
- DGCNN: each of its 4 EdgeConv layers builds a k = 20 graph in feature space (D = 3, 64,
  64, 128): an O(N^2 * D) search per sample per forward, chunked the same way
  (``models/dgcnn.py`` -> ``knn_indices``). Its edge features ``[B, N, k, C]`` kept for the
  backward pass are linear in N but large (B = 8, N = 4096: 640 MiB for the 256-channel
  output alone): expect its memory to grow ~linearly and its time between linearly and
  quadratically.

Run::

    python benchmarks/scaling.py [--models point-transformer-student,dgcnn --iters 5 --threads 2]

Writes ``benchmarks/scaling.json`` (``--out``). Tune the allocator first (the ``bench``
launcher does it for its own runs): this script re-executes itself once with the same glibc
malloc tunables unless ``PCRB_NO_TUNE=1``; the subprocesses inherit them.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULT_MARK = "SCALING-RESULT "



def _maxrss_mib() -> float:
    """This process's peak resident set so far, MiB (Linux reports ``ru_maxrss`` in KiB)."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def _proc_status_mib(key: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status``, MiB (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set (``VmHWM``) to its current one (Linux >= 4.0:
    ``/proc/self/clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status_mib("VmHWM") is not None


def measure_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this (fresh) process: ``spec`` has model, attack, points, batch,
    iters, repeats, threads, device. Returns seconds per iteration, wall seconds and the peak
    memory the first attack call added (MiB)."""
    import torch
    import torch.nn.functional as F

    import attacks  # noqa: F401  (registers the attacks)
    import models  # noqa: F401
    from benchmark.core.data import load_dataset
    from attacks.factory import attack_spec
    from benchmark.core.registry import MODELS

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    batch, n, iters = int(spec["batch"]), int(spec["points"]), int(spec["iters"])
    data = load_dataset("synthshapes", "test", num_points=n, seed=0,
                        options={"train_size": 64, "test_size": max(batch, 33)})
    points = torch.from_numpy(data.points[:batch]).float().to(device)
    labels = torch.from_numpy(data.labels[:batch]).long().to(device)
    name = spec["model"]
    if name.startswith("point-transformer"):
        emb = F.normalize(torch.randn(data.num_classes, 256), dim=-1)
        model = MODELS.build(name, class_embeddings=emb, head="text")
    else:
        model = MODELS.build(name, num_classes=data.num_classes)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params = {"pgd": {"steps": iters}, "knn": {"num_iter": iters}}[spec["attack"]]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():  # warm-up: one inference pass of the batch ...
        model(points)
    # ... and one tiny call of the attack: first-call costs (lazy imports such as the optimiser's,
    # LAPACK for kNN's normals) would otherwise count in the first measured call
    tiny = {"pgd": {"steps": 1}, "knn": {"num_iter": 1}}[spec["attack"]]
    attack_spec(spec["attack"], tiny)(model, points[:1, : min(n, 64)].contiguous(), labels[:1])
    sync()
    # the peak over the first call against the memory in use just before it: on Linux the peak
    # resident set is reset first, so an earlier, higher peak (generating the data, loading the
    # model) does not hide the call's; elsewhere the process's lifetime peak (ru_maxrss)
    resettable = device.type != "cuda" and _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    elif resettable:
        before = _proc_status_mib("VmRSS")
    else:
        before = _maxrss_mib()
    walls, algos, successes = [], [], []
    for i in range(max(1, int(spec["repeats"]))):
        attack = attack_spec(spec["attack"], params)
        start = time.perf_counter()
        res = attack(model, points, labels)
        sync()
        walls.append(time.perf_counter() - start)
        algos.append(res.seconds)
        successes.append(float(res.success.float().mean()))
        if i == 0:  # the peak of the first call (the later ones reuse its memory)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**20
            elif resettable:
                peak = _proc_status_mib("VmHWM")
            else:
                peak = _maxrss_mib()
    # one forward + backward w.r.t. the points, for scale (after the memory reading)
    passes = []
    for _ in range(2):
        x = points.clone().requires_grad_(True)
        start = time.perf_counter()
        F.cross_entropy(model(x), labels, reduction="sum").backward()
        sync()
        passes.append(time.perf_counter() - start)
    return {
        "model": name, "attack": spec["attack"], "points": n, "batch": batch, "iterations": iters,
        "seconds_per_iter": min(algos) / iters, "wall_seconds": min(walls), "walls": walls,
        "pass_seconds": min(passes), "memory_mib": peak - before, "baseline_mib": before, "peak_mib": peak,
        "memory_kind": ("cuda max_memory_allocated" if device.type == "cuda"
                        else "peak RSS reset before the call" if resettable else "ru_maxrss"),
        "success": successes[0],
    }


def run_one(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``measure_one(spec)`` in a fresh subprocess (this script with ``--one``); a failure
    (exception, kill, timeout) comes back as ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {**spec, "error": f"exit {proc.returncode}: {tail}"}


def growth(xs: list[int], values: list[float | None]) -> dict[str, Any]:
    """Factor per doubling of x: per step between consecutive sizes and over the whole sweep
    (None where a value is missing or not positive)."""

    def factor(x1: int, v1: float | None, x2: int, v2: float | None) -> float | None:
        if v1 is None or v2 is None or v1 <= 0 or v2 <= 0 or x2 == x1:
            return None
        return round((v2 / v1) ** (1 / math.log2(x2 / x1)), 3)

    steps = [factor(xs[i], values[i], xs[i + 1], values[i + 1]) for i in range(len(xs) - 1)]
    return {"steps": steps, "overall": factor(xs[0], values[0], xs[-1], values[-1]) if len(xs) > 1 else None}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", default=None, metavar="JSON", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--models", default="point-transformer-student", help="comma list; add dgcnn to include it")
    ap.add_argument("--attacks", default="pgd,knn")
    ap.add_argument("--points", default="1024,2048,4096", help="N of the points sweep")
    ap.add_argument("--point-batch", type=int, default=8, help="batch of the points sweep")
    ap.add_argument("--batches", default="4,8,16,32", help="B of the batch sweep")
    ap.add_argument("--batch-points", type=int, default=1024, help="N of the batch sweep")
    ap.add_argument("--iters", type=int, default=5, help="iterations per attack (pgd steps, knn num_iter)")
    ap.add_argument("--repeats", type=int, default=2, help="attack calls per configuration (time: best of)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)

    if args.one is not None:
        print(RESULT_MARK + json.dumps(measure_one(json.loads(args.one))), flush=True)
        return 0

    from benchmark.core.env import allocator_status

    points, batches = _ints(args.points), _ints(args.batches)
    sweeps = {"points": [(n, args.point_batch) for n in points], "batch": [(args.batch_points, b) for b in batches]}
    model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    attack_names = [a.strip() for a in args.attacks.split(",") if a.strip()]
    print(f"{args.device}, {args.threads} threads, {args.iters} iterations per attack, best of {args.repeats}; "
          f"{allocator_status()}", flush=True)
    report: dict[str, Any] = {
        "what": "seconds per attack iteration and peak memory added by the attack call (MiB) vs points and batch",
        "device": args.device, "threads": args.threads, "allocator": allocator_status(),
        "cpu": platform.processor() or platform.machine(), "iterations": args.iters, "repeats": args.repeats,
        "runs": [], "growth": {},
    }
    done: dict[tuple[str, str, int, int], dict[str, Any]] = {}
    print(f"\n{'model':26s} {'attack':6s} {'N':>5s} {'B':>3s} {'s/iter':>8s} {'wall s':>8s} {'pass s':>8s} "
          f"{'MiB':>8s}  note", flush=True)
    for model in model_names:
        for attack in attack_names:
            entry: dict[str, Any] = {}
            for sweep, sizes in sweeps.items():
                rows = []
                for n, b in sizes:
                    key = (model, attack, n, b)
                    if key not in done:
                        spec = {"model": model, "attack": attack, "points": n, "batch": b, "iters": args.iters,
                                "repeats": args.repeats, "threads": args.threads, "device": args.device}
                        done[key] = run_one(spec, args.timeout)
                        r = done[key]
                        report["runs"].append(r)
                        if "error" in r:
                            print(f"{model:26s} {attack:6s} {n:5d} {b:3d} {'-':>8s} {'-':>8s} {'-':>8s} {'-':>8s}  "
                                  f"FAILED: {r['error']}", flush=True)
                        else:
                            print(f"{model:26s} {attack:6s} {n:5d} {b:3d} {r['seconds_per_iter']:8.3f} "
                                  f"{r['wall_seconds']:8.2f} {r['pass_seconds']:8.3f} {r['memory_mib']:8.1f}",
                                  flush=True)
                    rows.append(done[key])
                xs = [n if sweep == "points" else b for n, b in sizes]
                entry[sweep] = {
                    "sizes": xs,
                    "time": growth(xs, [r.get("seconds_per_iter") for r in rows]),
                    "memory": growth(xs, [r.get("memory_mib") for r in rows]),
                }
            report["growth"].setdefault(model, {})[attack] = entry

    print("\ngrowth per doubling (1 = flat, 2 = linear, 4 = quadratic): time / memory, per step and overall")
    for model, per_attack in report["growth"].items():
        for attack, entry in per_attack.items():
            for sweep, g in entry.items():
                what = f"N at B={args.point_batch}" if sweep == "points" else f"B at N={args.batch_points}"
                steps = " ".join(f"{_fmt(t, '.2f')}/{_fmt(m, '.2f')}"
                                 for t, m in zip(g["time"]["steps"], g["memory"]["steps"]))
                print(f"  {model:26s} {attack:6s} {what:14s} time x{_fmt(g['time']['overall'], '.2f')}  "
                      f"memory x{_fmt(g['memory']['overall'], '.2f')}   steps {steps}")
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    from benchmark.core.env import reexec_tuned

    reexec_tuned([sys.executable, *sys.argv])  # the allocator tunables bench uses (PCRB_NO_TUNE=1: off)
    sys.exit(main())
