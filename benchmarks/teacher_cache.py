"""What does the teacher-feature cache save? MRPD epoch time with the teachers running vs cached.

MRPD distils from frozen teachers (the CLIP image tower on depth projections, the larger
point transformer). Their embeddings of every training cloud never change, so PCRB computes
them once (``benchmark.core.cache.cached_features``) and a *warm* epoch runs only the student and
the small prompted text tower. Without the cache (as in the released MRPD code), every epoch
runs the teachers on every cloud it sees. In one process, on one machine:

- ``epoch``: one MRPD epoch with the teachers' features at hand (the trained MRPD's own
  per-epoch wall time, training + validation, from a real ``prepare`` of the profile's MRPD
  with ``--epochs`` epochs, half clean and half adversarial);
- ``teachers``: one pass of the teachers an epoch needs over the training clouds (image
  teacher on the projected clouds + point teacher), timed directly;
- ``load``: what the warm run spent getting all features (memory-map + checksum);
- cold epoch = ``epoch + teachers``; warm epoch = ``epoch + load / epochs``.

The embedded CLIP is tiny (64 x 64 depth images), so its teacher pass is cheap next to the
student's training. ``--image-teacher ViT-B-32`` (or any open_clip architecture) also times
that tower, with random weights (timing only, nothing is downloaded), on the projection at
its own resolution, and reports the ratio an MRPD with that teacher would see: the cache's
real value grows with the teacher (the paper's EVA02-E-14-plus is ~4.4 B parameters).

Also reported: the first and the second ``prepare`` of that MRPD as a user sees them (the
first computes and caches the features, the second loads them). Run::

    python benchmarks/teacher_cache.py [--profile default --epochs 2 --threads 2 --image-teacher ViT-B-32]

It uses the profile's model zoo and crafted training set from the user cache (training them
if absent), and a temporary cache for the features and the MRPD under test. Writes
``benchmarks/teacher_cache.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--epochs", type=int, default=2, help="MRPD epochs per prepare (half clean, half adversarial)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-teacher", default="ViT-B-32",
                    help="an open_clip architecture to time as the image teacher too ('' to skip)")
    ap.add_argument("--big-clouds", type=int, default=128, help="clouds to time the big image teacher on")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F

    from benchmark.core.registry import populate_registries
    from benchmark.core.config import resolve_config
    from benchmark.core.projection import DepthProjector
    from benchmark.runner import Runner
    from defenses import build_defense

    torch.set_num_threads(args.threads)
    cfg = resolve_config(args.profile, None, [], {"defense": "mrpd", "attack": "pgd", "device": "cpu",
                                                   "out_dir": tempfile.mkdtemp(prefix="pcrb-bench-")})
    populate_registries(cfg.plugins)
    runner = Runner(cfg, progress=False)
    runner.prepare_data()
    runner.prepare_models()
    base_ctx = runner.defense_context()  # the run's own defense context
    train = base_ctx.train
    params = {**(cfg.defenses.get("mrpd") or {}), "epochs": args.epochs}
    print(f"{args.profile} profile, CPU, {torch.get_num_threads()} threads, {len(train)} training clouds x "
          f"{train.points.shape[1]} points; MRPD {args.epochs} epochs", flush=True)

    scratch = Path(tempfile.mkdtemp(prefix="pcrb-teacher-cache-"))
    try:
        real = Path(runner.cache_dir)
        (real / "adversarial").mkdir(parents=True, exist_ok=True)
        os.symlink(real / "adversarial", scratch / "adversarial")  # the crafted training set: shared, reused
        ctx = dataclasses.replace(base_ctx, cache_dir=scratch, progress=False, log=lambda *_: None)

        def prepare() -> dict[str, Any]:
            return build_defense("mrpd", **params)(ctx).meta

        # the crafted set once, outside the timings (prompt-at and MRPD share it)
        from defenses.adversarial_training import crafted_training_set
        defense = build_defense("mrpd", **params)
        crafted_training_set(ctx, defense.crafting_attack(ctx), batch_size=cfg.train_config("mrpd").batch_size)

        cold, cold_s = _timed(prepare)
        shutil.rmtree(scratch / "defenses")  # retrain, but keep the features
        warm, warm_s = _timed(prepare)
        if not warm["diagnostics"].get("teacher_seconds") or cold["cached"] or warm["cached"]:
            raise RuntimeError("the MRPD under test came from the cache; nothing was measured")

        # one teacher pass over the training clouds, timed directly
        clip = runner.zoo.get("clip")
        projection = dataclasses.replace(runner.zoo.ctx.projection, image_size=clip.model.image_size, views=defense.views)
        projector = DepthProjector(projection)
        teacher = runner.zoo.get(defense.point_teacher).model.eval()
        clouds = torch.from_numpy(np.asarray(train.points))

        @torch.no_grad()
        def over_train(encode: Any) -> None:
            for batch in clouds.split(64):
                encode(batch)

        _, image_s = _timed(lambda: over_train(lambda x: F.normalize(clip.model.encode_image(projector(x)), dim=-1)))
        _, point_s = _timed(lambda: over_train(lambda x: F.normalize(teacher.embed(x), dim=-1)))
        epochs = [float(h["seconds"]) for h in warm["history"]]
        epoch = float(np.median(epochs))
        load = float(warm["diagnostics"]["teacher_seconds"])
        cold_epoch = epoch + image_s + point_s
        warm_epoch = epoch + load / max(len(epochs), 1)
        report: dict[str, Any] = {
            "what": "MRPD epoch wall time with the teachers running every epoch (cold) vs their cached features (warm)",
            "profile": args.profile, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "training_clouds": len(train),
            "points": int(train.points.shape[1]), "epochs": args.epochs,
            "epoch_seconds": epochs, "image_teacher_pass_s": round(image_s, 2), "point_teacher_pass_s": round(point_s, 2),
            "feature_load_s": round(load, 3), "first_prepare": {"seconds": round(cold_s, 1),
                                                                "teacher_seconds": cold["diagnostics"]["teacher_seconds"]},
            "second_prepare": {"seconds": round(warm_s, 1), "teacher_seconds": load},
            "cold_epoch_s": round(cold_epoch, 2), "warm_epoch_s": round(warm_epoch, 2),
            "ratio": round(cold_epoch / warm_epoch, 2),
        }
        rows = [("embedded CLIP (tiny, 64 px)", image_s, cold_epoch, warm_epoch)]
        if args.image_teacher:
            import open_clip

            big = open_clip.create_model(args.image_teacher, pretrained=None).eval()
            size = big.visual.image_size
            size = size[0] if isinstance(size, (tuple, list)) else int(size)
            big_projector = DepthProjector(dataclasses.replace(projection, image_size=size))
            sample = clouds[: args.big_clouds]

            @torch.no_grad()
            def big_pass() -> None:
                for batch in sample.split(32):
                    big.encode_image(big_projector(batch))

            _, big_s = _timed(big_pass)
            big_image_s = big_s * len(train) / len(sample)
            big_cold = epoch + big_image_s + point_s
            report["big_image_teacher"] = {"arch": args.image_teacher, "pixels": size,
                                           "parameters_m": round(sum(p.numel() for p in big.visual.parameters()) / 1e6, 1),
                                           "pass_s": round(big_image_s, 1), "timed_clouds": len(sample),
                                           "cold_epoch_s": round(big_cold, 1), "ratio": round(big_cold / warm_epoch, 1)}
            rows.append((f"{args.image_teacher} image tower ({size} px, random weights)", big_image_s, big_cold,
                         warm_epoch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nstudent epoch (features at hand) {epoch:.1f} s; point teacher pass {point_s:.1f} s; "
          f"feature load {load:.2f} s; first / second MRPD prepare {cold_s:.0f} / {warm_s:.0f} s")
    print(f"{'image teacher':48s} {'teacher pass':>12s} {'cold epoch':>11s} {'warm epoch':>11s} {'ratio':>6s}")
    for name, teacher_s, c, w in rows:
        print(f"{name:48s} {teacher_s:11.1f}s {c:10.1f}s {w:10.1f}s {c / w:5.1f}x")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
