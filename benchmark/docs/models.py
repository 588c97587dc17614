"""Generated sections of docs/models.md: how the embedded models train, read from the JSON the
scripts in ``benchmarks/`` write (the student's accuracy across CPU kernel paths)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark.docs.render import markdown_table, percent, register_section

#: The files of ``benchmarks/training_stability.py``: one CLIP shared by every run, then the
#: whole chain (``--retrain-clip``), with what each varies.
_STABILITY_FILES = (("training_stability.json", "the same CLIP for every run"),
                    ("training_stability_chain.json", "the CLIP retrained under each kernel path too"))


def _stability_table(data: dict[str, Any]) -> list[str]:
    rows = []
    for run in data["runs"]:
        env = " ".join(f"{k}={v}" for k, v in run["env"].items()) or "(machine default)"
        clip = data.get("clips", {}).get(run["kernel"]) or data["clip"]
        rows.append({
            "epochs": str(run["epochs"]), "kernel path": f"{run['kernel']}: `{env}`",
            "CLIP (zero-shot)": f"`{clip['sha256']}` ({percent(clip['test_zero_shot_accuracy'])})",
            "test accuracy": percent(run["test_accuracy"]), "validation": percent(run["val_accuracy"]),
            "validation, last epochs": " → ".join(f"{100 * v:.0f}" for v in run.get("val_by_epoch", [])[-4:]) or "–",
            "kept epoch": str(run["best_epoch"]), "weights sha256": f"`{run['sha256']}`",
            "seconds": f"{run['seconds']:.0f}",
            "spread (test)": f"{100 * data['recipes'][str(run['epochs'])]['spread']:.1f} points",
        })
    return markdown_table(rows)


@register_section("training-stability")
def training_stability(root: Path) -> str:
    """``benchmarks/training_stability*.json``: the student trained per recipe under each CPU kernel
    path (same data and seed; one shared CLIP, then the whole chain): its accuracies, kept epoch,
    weights hash, validation accuracy over its last epochs and the spread of its test accuracy per
    recipe."""
    parts = []
    for name, varies in _STABILITY_FILES:
        path = root / "benchmarks" / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        threads = f", {data['threads']} threads each" if data.get("threads") else ""
        parts += [f"From `{path.relative_to(root)}` (profile `{data['profile']}`, {data['cores']} cores{threads}, "
                  f"{data.get('processor') or data['cpu']}): `{data['model']}` trained from the same data and "
                  f"seed with {varies}, changing only the CPU kernel path (float rounding); 'spread': largest "
                  "minus smallest test accuracy of the recipe across kernel paths.", "", *_stability_table(data), ""]
    if not parts:
        return "No committed measurement yet: run `python benchmarks/training_stability.py`.\n"
    return "\n".join(parts[:-1]) + "\n"
