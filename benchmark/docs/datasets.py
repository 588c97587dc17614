"""Generated section of docs/datasets.md: how hard the embedded SynthShapes is for a small
PointNet (``benchmarks/synthshapes_difficulty.json``)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmark.docs.render import register_section


@register_section("synthshapes-difficulty")
def synthshapes_difficulty(root: Path) -> str:
    """Test accuracy of the script's PointNet-lite, the generation and training seconds, and every
    class below 100% (hardest first)."""
    path = root / "benchmarks" / "synthshapes_difficulty.json"
    if not path.exists():
        return "No committed measurement yet: run `python benchmarks/synthshapes_difficulty.py`.\n"
    data = json.loads(path.read_text())
    args, per_class = data["args"], data["per_class"]
    hard = sorted((acc, name) for name, acc in per_class.items() if acc < 1.0)
    perfect = len(per_class) - len(hard)
    lines = [
        (f"From `{path.relative_to(root)}` (torch {data['torch']}, {data['threads']} threads): a PointNet-lite (no "
        f"T-nets) trained {args['epochs']} epochs on {args['train_size']} SynthShapes clouds of {args['num_points']} "
        f"points (seed {args['seed']}, jitter {args['jitter']}) reaches **{100 * data['test_accuracy']:.1f}%** on "
        f"{args['test_size']} test clouds. Generating the data took {data['generation_seconds']:.1f} s (cached "
        f"afterwards), training {data['training_seconds']:.0f} s."),
        "",
        f"{perfect} of {len(per_class)} classes at 100%; the others, hardest first: "
        + (", ".join(f"{name} {100 * acc:.1f}%" for acc, name in hard) or "none") + ".",
    ]
    return "\n".join(lines) + "\n"
