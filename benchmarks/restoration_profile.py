"""Where does a restoring defense spend its time? IF-Defense and DUP-Net, part by part, per batch.

The two preprocessing defenses that dominate a grid's evaluation time (``defense_cost.py``:
tens of times the bare victim) are timed piece by piece on one batch of the profile's test
clouds (``--batch 16``), on the CPU (2 threads by default), prepared as ``bench run`` prepares
them (``Runner.defense``: trained weights from the cache, or trained first):

- ``if-defense``: statistical outlier removal and the fit into the cube; the occupancy
  network's encoder (point features -> three feature planes -> U-Net); one search of the
  repulsion term's neighbour candidates (repeated every ``knn_refresh`` steps); one Adam step's
  occupancy decoder forward + gradient at every point; one step's repulsion forward +
  gradient; the whole restoration. ``calls`` says how often a batch runs each part, so
  ``seconds x calls`` is the part's share; what the parts leave of the whole (the Adam updates,
  the BCE, Python) is the rest.
- ``dup-net``: SOR and the resampling; each PU-Net set-abstraction level (farthest point
  sampling, ball query, the MLP on the distinct ball members); the feature propagation; the
  expansion branches and the coordinate regression; the final farthest point sampling back to
  the input's size; the whole preprocessing.

Beside each part its GFLOP (matrix products and convolutions, ``defense_cost.matmul_flops``)
and the bare victim's seconds and GFLOP on the same batch, so a part's cost reads as "victims".
Every time is the best of ``--repeats`` (after one warm-up). Run::

    python benchmarks/restoration_profile.py [--profile default --batch 16 --threads 2 --repeats 3]

Writes ``benchmarks/restoration_profile.json`` (``--out``); ``bench docs`` renders it in
docs/performance.md. Re-executes itself once with bench's glibc malloc tunables unless
``PCRB_NO_TUNE=1``.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def if_defense_parts(restoration: Any, points: Any) -> list[tuple[str, int, Callable[[], Any]]]:
    """``(part, calls per batch, fn)`` of IF-Defense's restoration of ``points [B, N, 3]``."""
    import torch

    from benchmark.core.geometry import index_points, knn_indices
    from defenses.sor import sor_mask
    from defenses.surface import fit_to_cube, repulsion_loss, surface_objective

    cfg, network = restoration.config, restoration.network
    mask = sor_mask(points, cfg.sor_k, cfg.sor_alpha, squared=True)
    cube, _, _ = fit_to_cube(points, mask, cfg.padding_scale)
    encoded = cube[:, : cfg.input_points]
    planes = network.encode(encoded)
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(mask.float(), cfg.num_points, replacement=True, generator=g)
    query = index_points(cube, idx)
    width = min(max(cfg.knn_candidates, cfg.repulsion_k), cfg.num_points - 1)
    candidates = knn_indices(query, width, exclude_self=True)
    weight = float(cfg.num_points if cfg.occupancy_weight is None else cfg.occupancy_weight)

    def decoder_step() -> Any:  # the restoration's objective without its repulsion term
        with torch.enable_grad():
            p = query.detach().requires_grad_(True)
            loss = surface_objective(p, lambda q: network.decode(q, planes), threshold=cfg.threshold,
                                     occupancy_weight=weight, repulsion_weight=0.0)
            return torch.autograd.grad(loss.sum(), p)[0]

    def repulsion_step() -> Any:
        with torch.enable_grad():
            p = query.detach().requires_grad_(True)
            loss = repulsion_loss(p, cfg.repulsion_k, cfg.repulsion_radius, cfg.repulsion_h, candidates=candidates)
            return torch.autograd.grad(cfg.repulsion_weight * loss.sum(), p)[0]

    refreshes = -(-cfg.steps // max(1, cfg.knn_refresh))
    return [
        ("SOR + fit into the cube", 1,
         lambda: fit_to_cube(points, sor_mask(points, cfg.sor_k, cfg.sor_alpha), cfg.padding_scale)),
        ("occupancy encoder (planes + U-Net)", 1, lambda: network.encode(encoded)),
        (f"neighbour candidates ({width} nearest, every {cfg.knn_refresh} steps)", refreshes,
         lambda: knn_indices(query, width, exclude_self=True)),
        ("occupancy decoder + gradient (one step)", cfg.steps, decoder_step),
        ("repulsion + gradient (one step)", cfg.steps, repulsion_step),
    ]


def dup_net_parts(defense: Any, points: Any) -> list[tuple[str, int, Callable[[], Any]]]:
    """``(part, calls per batch, fn)`` of DUP-Net's preprocessing of ``points [B, N, 3]``."""
    import torch

    from benchmark.core.geometry import farthest_point_sample, index_points
    from defenses.sor import resample_kept, sor_mask
    from models.punet import ball_query_first

    punet = defense.punet
    inputs = resample_kept(points, sor_mask(points, defense.sor_k, defense.sor_alpha, squared=True),
                           defense.num_points)
    parts: list[tuple[str, int, Callable[[], Any]]] = [
        ("SOR + resample", 1, lambda: resample_kept(points, sor_mask(points, defense.sor_k, defense.sor_alpha),
                                                    defense.num_points)),
    ]
    xyz, feats = inputs, None
    levels_xyz, levels_feats = [], []
    for i, (level, (count, radius)) in enumerate(zip(punet.SA_modules, punet.level_sizes(inputs.shape[1]))):
        count = min(count, xyz.shape[1])
        parts.append((f"set abstraction level {i + 1} ({count} balls of {level.nsample})", 1,
                      lambda xyz=xyz, f=feats, n=count, r=radius, lv=level: lv(xyz, f, n, r)))
        centres = xyz
        if count < xyz.shape[1]:
            parts.append((f"  of which farthest point sampling ({xyz.shape[1]} -> {count})", 1,
                          lambda xyz=xyz, count=count: farthest_point_sample(xyz, count)))
            centres = index_points(xyz, farthest_point_sample(xyz, count))
        parts.append(("  of which ball query", 1,
                      lambda xyz=xyz, c=centres, r=radius, k=level.nsample: ball_query_first(xyz, c, r, k)))
        xyz, feats = level(xyz, feats, count, radius)
        levels_xyz.append(xyz)
        levels_feats.append(feats)
    parts.append(("feature propagation", 1, lambda: [fp(inputs, levels_xyz[i + 1], levels_feats[i + 1])
                                                     for i, fp in enumerate(punet.FP_Modules)]))
    features = punet.point_features(inputs)
    parts.append(("expansion branches", 1, lambda: [branch(features) for branch in punet.FC_Modules]))
    expanded = torch.cat([branch(features) for branch in punet.FC_Modules], dim=1)
    parts.append(("coordinate regression", 1, lambda: punet.pcd_layer(expanded)))
    dense = punet.pcd_layer(expanded)
    keep = points.shape[1] if defense.output_points is None else defense.output_points
    if keep and keep < dense.shape[1]:
        parts.append((f"final farthest point sampling ({dense.shape[1]} -> {keep})", 1,
                      lambda: farthest_point_sample(dense, keep)))
    return parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--batch", type=int, default=16, help="clouds per batch (the profile's first test clouds)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of each part (best of)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a profile field, as bench run --set")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)

    import torch

    from benchmark.core.config import resolve_config
    from benchmark.core.env import allocator_status
    from benchmark.core.registry import populate_registries
    from benchmark.runner import Runner
    from benchmarks.defense_cost import matmul_flops

    torch.set_num_threads(args.threads)
    scratch = tempfile.mkdtemp(prefix="pcrb-restoration-profile-")
    try:
        cfg = resolve_config(args.profile, None, args.overrides,
                             {"defense": "if-defense,dup-net", "attack": "pgd", "device": "cpu", "out_dir": scratch})
        populate_registries(cfg.plugins)
        runner = Runner(cfg, progress=False)
        runner.prepare_data()
        runner.prepare_models()
        victim = runner.victim.model
        points = runner.points[: args.batch].to(runner.device)
        report: dict[str, Any] = {
            "what": "seconds per batch of each part of a restoring defense (best of repeats), GFLOP, the bare victim's",
            "profile": args.profile, "overrides": list(args.overrides), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "allocator": allocator_status(),
            "cpu": platform.processor() or platform.machine(), "batch": int(points.shape[0]),
            "points": int(points.shape[1]), "repeats": args.repeats, "defenses": {},
        }
        with torch.no_grad():
            report["victim_seconds"] = best_seconds(lambda: victim(points), args.repeats)
            report["victim_gflop"] = round(matmul_flops(lambda: victim(points)), 3)
            for name, parts_of in (("if-defense", if_defense_parts), ("dup-net", dup_net_parts)):
                prepared = runner.defense(name)
                if prepared.error is not None:
                    report["defenses"][name] = {"status": "failed", "error": prepared.error}
                    continue
                owner = prepared.model.preprocess.__self__
                generator = torch.Generator().manual_seed(cfg.seed)
                whole = best_seconds(lambda: prepared.model.preprocess(points, generator), args.repeats)
                rows = []
                for part, calls, fn in parts_of(owner, points):
                    seconds = best_seconds(fn, args.repeats)
                    # "  of which ..." rows are inside the row before them (a level's sampling, ball query)
                    rows.append({"part": part.strip(), "within_previous": part.startswith(" "), "calls": calls,
                                 "seconds": seconds, "total_seconds": seconds * calls,
                                 "gflop": round(matmul_flops(fn) * calls, 3)})
                    print(f"  {name}: {part.strip()}: {calls} x {1000 * seconds:.1f} ms", flush=True)
                counted = sum(r["total_seconds"] for r in rows if not r["within_previous"])
                report["defenses"][name] = {"status": "ok", "whole_seconds": whole, "parts": rows,
                                            "other_seconds": max(0.0, whole - counted)}
                print(f"  {name}: whole {whole:.3f} s, parts {counted:.3f} s, victim {report['victim_seconds']:.4f} s",
                      flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from benchmark.core.env import reexec_tuned

    reexec_tuned([sys.executable, *sys.argv])  # the allocator tunables bench uses (PCRB_NO_TUNE=1: off)
    sys.exit(main())
