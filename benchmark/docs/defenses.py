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


def _same_training(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two run records' metadata describe one training (a cached load repeats it)."""
    keys = ("seconds", "epochs_run", "epochs", "best_epoch", "val_clean_accuracy", "val_robust_accuracy")
    return all(a.get(k) == b.get(k) for k in keys)


@register_section("defense-training")
def defense_training(root: Path) -> str:
    """Per defense that trains, the model the newest committed run record used: its training seconds,
    epochs, validation accuracies and, for the defenses with a network of their own, what that network
    reached. The run that trained it is cited where a committed record did; a model loaded from the
    cache and trained elsewhere (e.g. by a benchmark script) cites the record that loaded it."""
    runs = sorted((root / "results" / "runs").glob("*.json"), reverse=True)
    newest: dict[str, tuple[Path, str, dict[str, Any]]] = {}
    trained: dict[str, list[tuple[Path, str, dict[str, Any]]]] = {}
    for path in runs:
        record = json.loads(path.read_text())
        for name, entry in (record.get("defenses") or {}).items():
            meta = (entry or {}).get("meta") or {}
            if meta.get("seconds") is None:
                continue
            found_here = (path, str(record.get("config", {}).get("profile")), meta)
            newest.setdefault(name, found_here)
            if meta.get("cached") is False:
                trained.setdefault(name, []).append(found_here)
    found: dict[str, tuple[Path, str, dict[str, Any]]] = {}
    for name, (path, profile, meta) in newest.items():
        same = [t for t in trained.get(name, []) if _same_training(t[2], meta)]
        found[name] = same[0] if same else (path, f"{profile}, loaded from the cache", meta)
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
    intro = ("Per defense that trains, the model the newest run record under `results/runs/` used (`bench run` writes "
             "one per run), cited by the record that trained it, or by the one that loaded it from the cache when it "
             "was trained outside a committed run: the training seconds its metadata records, epochs run, accuracy in "
             "percent on its validation clouds (clean; under its training attack), and what its own network reached.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"
