"""Generated sections of docs/models.md: how the embedded models train, read from the JSON the
scripts in ``benchmarks/`` write (the student's accuracy across CPU kernel paths)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmark.docs.render import markdown_table, percent, register_section


@register_section("training-stability")
def training_stability(root: Path) -> str:
    """``benchmarks/training_stability.json``: the student trained per recipe under each CPU kernel
    path (same CLIP, data and seed): its accuracies, kept epoch, weights hash and the spread."""
    path = root / "benchmarks" / "training_stability.json"
    if not path.exists():
        return "No committed measurement yet: run `python benchmarks/training_stability.py`.\n"
    data = json.loads(path.read_text())
    rows = []
    for run in data["runs"]:
        env = " ".join(f"{k}={v}" for k, v in run["env"].items()) or "(machine default)"
        spread = data["recipes"][str(run["epochs"])]["spread"]
        rows.append({
            "epochs": str(run["epochs"]), "kernel path": f"{run['kernel']}: `{env}`",
            "test accuracy": percent(run["test_accuracy"]), "validation": percent(run["val_accuracy"]),
            "kept epoch": str(run["best_epoch"]), "weights sha256": f"`{run['sha256']}`",
            "seconds": f"{run['seconds']:.0f}", "spread (test)": f"{100 * spread:.1f} points",
        })
    clip = data["clip"]
    intro = (f"From `{path.relative_to(root)}` (profile `{data['profile']}`, {data['cores']} cores, "
             f"{data.get('processor') or data['cpu']}): `{data['model']}` trained from the same CLIP "
             f"(`{clip['sha256']}`, zero-shot {percent(clip['test_zero_shot_accuracy'])}), data and seed, "
             "changing only the CPU kernel path (float rounding); 'spread': largest minus smallest test "
             "accuracy of the recipe across kernel paths.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"
