"""Generated section of docs/defenses.md: what each defense that trains learned, and in how long,
read from the committed run records (``results/runs/*.json``, written by `bench run`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark.docs.render import markdown_table, register_section


def _quality(name: str, meta: dict[str, Any]) -> str:
    """What the defense's own network reached, where its metadata says."""
    if meta.get("iou") is not None:
        return (f"occupancy IoU {meta['iou']:.2f} on {meta.get('iou_clouds', '?')} held-out shapes (constant "
                f"'all inside': {meta.get('iou_all_inside', float('nan')):.2f})")
    if meta.get("chamfer_before") is not None and meta.get("chamfer_after") is not None:
        return f"upsampling Chamfer {meta['chamfer_before']:.4f} → {meta['chamfer_after']:.4f}"
    return "–"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}"


@register_section("defense-training")
def defense_training(root: Path) -> str:
    """Per defense that trains, from the newest committed run record in which it was trained (not
    loaded from the cache): its training seconds, epochs, validation accuracies and, for the
    defenses with a network of their own, what that network reached."""
    runs = sorted((root / "results" / "runs").glob("*.json"), reverse=True)
    found: dict[str, tuple[Path, str, dict[str, Any]]] = {}
    for path in runs:
        record = json.loads(path.read_text())
        for name, entry in (record.get("defenses") or {}).items():
            meta = (entry or {}).get("meta") or {}
            if name not in found and meta.get("seconds") is not None and meta.get("cached") is False:
                found[name] = (path, str(record.get("config", {}).get("profile")), meta)
    if not found:
        return "No committed run record trained a defense yet: run `bench run --defense all`.\n"
    rows = []
    for name in sorted(found):
        path, profile, meta = found[name]
        epochs = meta.get("epochs_run", meta.get("epochs"))
        rows.append({"defense": f"`{name}`", "run record": f"`{path.name}` ({profile})",
                     "training seconds": f"{meta['seconds']:.0f}",
                     "epochs": "–" if epochs is None else str(epochs),
                     "val clean": _pct(meta.get("val_clean_accuracy")),
                     "val robust": _pct(meta.get("val_robust_accuracy")), "its network": _quality(name, meta)})
    intro = ("From the newest run record under `results/runs/` that trained each defense (`bench run` writes one per "
             "run; a defense loaded from the cache is skipped): the training seconds its metadata records, epochs run, accuracy in "
             "percent on its validation clouds (clean; under its training attack), and what its own network reached.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"
