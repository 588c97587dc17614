"""How long does the first load of ModelNet40 ``normal_resampled`` take? Parse + FPS, timed on a generated tree.

Writes a file tree of the real layout (``modelnet40_normal_resampled/``: the 40 shape
names, ``modelnet40_train.txt`` / ``modelnet40_test.txt`` and ``<class>/<class>_NNNN.txt``
with ``--lines`` lines ``x,y,z,nx,ny,nz``, six decimals as in the download) holding
``--files`` shapes (default 12,311: the real 9,843 train + 2,468 test). Each class's files
are copies of one generated surface sample of that class's SynthShapes object (values do
not change the cost of parsing or sampling; writing 12,311 distinct files would take longer
than reading them). Then, with an empty parse cache, it times what a user waits for:
``load_dataset("modelnet40", split, sampling=..., cache_dir=...)`` for both splits, and the
two phases apart on the training split's first ``--phase-files`` files: parsing alone and
the point selection alone. Run::

    python benchmarks/data_load.py [--files 12311] [--sampling fps] [--threads 2]

Writes ``benchmarks/data_load.json`` (``--out``). The tree stays in ``--root`` (default a
folder under the system temp dir) for later runs; ``--clean`` removes it afterwards.
"""
from __future__ import annotations

import argparse
import json
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

TRAIN_FILES, TEST_FILES = 9843, 2468


def write_tree(folder: Path, files: int, lines: int) -> dict[str, int]:
    """The ``modelnet40_normal_resampled`` layout with ``files`` shapes; returns the split sizes."""
    import numpy as np

    from benchmark.core.data.synthshapes import CLASSES, generate

    # 40 class names: SynthShapes' 33 plus 7 more, whose files copy the first classes' samples
    names = list(CLASSES)[:40]
    names += [f"extra_{i}" for i in range(40 - len(names))]
    points, labels, _, generated = generate(len(CLASSES), lines, split="train", seed=0)
    text = {}
    for k, name in enumerate(names):
        cloud = points[int(np.flatnonzero(labels == k % len(generated))[0])]
        normals = cloud / np.linalg.norm(cloud, axis=1, keepdims=True).clip(1e-9)  # any unit vectors do
        rows = np.concatenate([cloud, normals], axis=1)
        text[name] = "\n".join(",".join(f"{v:.6f}" for v in row) for row in rows) + "\n"
    train_n = round(files * TRAIN_FILES / (TRAIN_FILES + TEST_FILES))
    ids: dict[str, list[str]] = {"train": [], "test": []}
    counters = dict.fromkeys(names, 0)
    for i in range(files):
        name = names[i % 40]
        counters[name] += 1
        shape_id = f"{name}_{counters[name]:04d}"
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / f"{shape_id}.txt").write_text(text[name])
        ids["train" if i < train_n else "test"].append(shape_id)
    (folder / "modelnet40_shape_names.txt").write_text("\n".join(names) + "\n")
    for split, members in ids.items():
        (folder / f"modelnet40_{split}.txt").write_text("\n".join(members) + "\n")
    return {split: len(members) for split, members in ids.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=TRAIN_FILES + TEST_FILES)
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--sampling", default="fps", choices=("first", "random", "fps"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--phase-files", type=int, default=256, help="files of the per-phase timings")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "pcrb-modelnet40-tree"))
    ap.add_argument("--clean", action="store_true", help="remove the generated tree afterwards")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from benchmark.core.data import load_dataset
    from benchmark.core.data.base import select_points
    from benchmark.core.data.modelnet import TEXT_DIR, _parse_text

    torch.set_num_threads(args.threads)
    folder = Path(args.root) / TEXT_DIR
    manifest = folder / "manifest.json"
    wanted = {"files": args.files, "lines": args.lines}
    start = time.perf_counter()
    if not manifest.is_file() or json.loads(manifest.read_text()).get("tree") != wanted:
        shutil.rmtree(folder, ignore_errors=True)
        sizes = write_tree(folder, args.files, args.lines)
        manifest.write_text(json.dumps({"tree": wanted, "sizes": sizes}))
    sizes = json.loads(manifest.read_text())["sizes"]
    tree_seconds = time.perf_counter() - start
    print(f"tree: {sizes} under {folder} ({tree_seconds:.0f} s)", flush=True)

    out: dict[str, Any] = {
        "what": "first load of a ModelNet40 normal_resampled tree (parse + point selection), empty parse cache",
        "files": args.files, "lines": args.lines, "num_points": args.num_points, "sampling": args.sampling,
        "threads": args.threads, "torch": torch.__version__, "cpu": platform.machine(),
        "goal_seconds": 180, "splits": {},
    }
    with tempfile.TemporaryDirectory() as cache:
        total = 0.0
        for split in ("train", "test"):
            t = time.perf_counter()
            data = load_dataset("modelnet40", split, root=folder, num_points=args.num_points, sampling=args.sampling,
                                cache_dir=cache)
            seconds = time.perf_counter() - t
            total += seconds
            out["splits"][split] = {"clouds": len(data), "seconds": round(seconds, 2)}
            print(f"{split}: {len(data)} clouds in {seconds:.1f} s", flush=True)
        out["first_load_seconds"] = round(total, 2)
        t = time.perf_counter()
        for split in ("train", "test"):
            load_dataset("modelnet40", split, root=folder, num_points=args.num_points, sampling=args.sampling,
                         cache_dir=cache)
        out["cached_load_seconds"] = round(time.perf_counter() - t, 2)

    # the phases apart, on the first files of the training list
    ids = (folder / "modelnet40_train.txt").read_text().split()[: args.phase_files]
    paths = [folder / i.rsplit("_", 1)[0] / f"{i}.txt" for i in ids]
    t = time.perf_counter()
    clouds = [_parse_text(p, None, False)[:, :3] for p in paths]
    parse = time.perf_counter() - t
    t = time.perf_counter()
    select_points(np.stack(clouds), args.num_points, args.sampling, seed=0)
    select = time.perf_counter() - t
    n = len(paths)
    out["phases"] = {"files": n, "parse_seconds_per_file": round(parse / n, 5),
                     "select_seconds_per_file": round(select / n, 5),
                     "parse_share": round(parse / (parse + select), 3)}
    out["goal_met"] = out["first_load_seconds"] <= out["goal_seconds"]
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    if args.clean:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
