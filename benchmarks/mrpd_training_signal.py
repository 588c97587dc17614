"""Does MRPD's adversarial half carry signal? Candidate training attacks, on training clouds only.

MRPD's second half trains on examples crafted once against the undefended student. They can
only teach where they fool the student and a teacher still sees the right class. For each
candidate attack, crafted against the student on the first ``--limit`` training clouds (sample
``i`` attacked with index ``i``, as MRPD's crafted set is), this script records:

* the share of clouds the student gets wrong on them (``student_wrong``) and the attack's
  own success, mean L2 distance and crafting seconds;
* each teacher's accuracy on them and its rescue rate (of the student's errors, the share
  the teacher gets right), from :func:`defenses.mrpd.diagnostics.probe_table`;
* the embedding drift of student and teachers.

Only training clouds are used, so choosing MRPD's training attack from this table never
looks at the test set. Candidates: the profile's ``pgd`` (the paper's choice: targeted, L2
0.08), untargeted PGD at larger budgets, APGD (untargeted CE, absolute L2 budget). Run::

    python benchmarks/mrpd_training_signal.py [--profile default --limit 512]

Writes ``benchmarks/mrpd_training_signal.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: name -> (attack, parameter overrides on top of the profile's settings for that attack)
CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "pgd (profile: targeted, 0.08)": ("pgd", {}),
    "pgd untargeted 0.08": ("pgd", {"targeted": False}),
    "pgd untargeted 0.16": ("pgd", {"targeted": False, "budget": 0.16}),
    "pgd untargeted 0.32": ("pgd", {"targeted": False, "budget": 0.32}),
    "pgd untargeted 0.64": ("pgd", {"targeted": False, "budget": 0.64}),
    "apgd untargeted 0.32": ("apgd", {"budget": 0.32, "budget_scale": "absolute"}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--limit", type=int, default=512, help="the first N training clouds")
    ap.add_argument("--views", type=int, default=6, help="depth views of the multi-view image teacher")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)

    import torch

    from attacks.crafting import craft, crafting_key
    from benchmark.core.registry import populate_registries
    from benchmark.core.config import resolve_config, to_jsonable
    from benchmark.runner import Runner
    from defenses import build_defense
    from defenses.mrpd.diagnostics import CloudSet, probe_table, teacher_probes

    cfg = resolve_config(args.profile, None, [], {"defense": "mrpd", "attack": "pgd"})
    populate_registries(cfg.plugins)
    runner = Runner(cfg, progress=False)
    runner.prepare_data()
    runner.prepare_models()
    ctx = runner.defense_context()
    mrpd = build_defense("mrpd", **(cfg.defenses.get("mrpd") or {}))
    student = runner.victim.model
    probes = teacher_probes(runner.zoo, student, mrpd.point_teacher, args.views)
    n = min(args.limit, len(ctx.train))
    clean = torch.from_numpy(ctx.train.points[:n]).float()
    labels = torch.from_numpy(ctx.train.labels[:n]).long()
    sets = [CloudSet("clean", clean, labels)]
    crafted: dict[str, dict[str, Any]] = {}
    for name, (attack_name, overrides) in CANDIDATES.items():
        attack = ctx.attack(attack_name, **overrides)
        key = crafting_key(attack, model_hash=runner.victim.weights_hash, dataset_fingerprint=ctx.train.fingerprint,
                           split=ctx.train.split, subset=range(n))
        result = craft(attack, student, clean, labels, key=key, cache_dir=None, batch_size=args.batch_size,
                       indices=torch.arange(n))  # sample i attacked with index i, as MRPD's crafted set
        seconds = result.seconds
        sets.append(CloudSet(name, result.points.float(), labels, clean="clean"))
        crafted[name] = {"attack": attack_name, "params": to_jsonable(dataclasses.asdict(attack)),
                         "success": result.success_rate, "mean_l2": float(result.l2.mean()), "seconds": round(seconds, 1)}
        print(f"{name:32s} success {100 * crafted[name]['success']:5.1f}%  L2 {crafted[name]['mean_l2']:.3f}  "
              f"{seconds:.0f} s", flush=True)
    with torch.no_grad():
        rows = probe_table(probes, sets, reference="student", batch_size=args.batch_size, device=runner.device)
    by = {(r["set"], r["probe"]): r for r in rows}
    print(f"\n{'candidate':32s} student wrong | " + " | ".join(f"{p.name} acc / rescue" for p in probes[1:]))
    for name in ["clean", *CANDIDATES]:
        wrong = 1.0 - by[name, "student"]["accuracy"]
        cells = [f"{100 * by[name, p.name]['accuracy']:5.1f} / "
                 + ("  -  " if by[name, p.name]["rescue"] is None else f"{100 * by[name, p.name]['rescue']:5.1f}")
                 for p in probes[1:]]
        print(f"{name:32s} {100 * wrong:12.1f}% | " + " | ".join(cells))
    report = {
        "what": "candidate attacks for MRPD's adversarial half, crafted against the student on training clouds",
        "profile": args.profile, "student_weights_sha256": runner.victim.weights_hash,
        "point_teacher": mrpd.point_teacher, "training_clouds": n, "views": args.views, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "device": str(runner.device), "candidates": crafted, "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
