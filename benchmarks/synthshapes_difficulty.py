"""How hard is SynthShapes? Train a small PointNet and report test accuracy per class.

The issue's bar: learnable but not trivial (a PointNet should reach roughly 85-98%).
Run on demand: ``python benchmarks/synthshapes_difficulty.py [--epochs 15]``. Prints a
table and writes ``benchmarks/synthshapes_difficulty.json``. Uses a self-contained
PointNet-lite (shared MLP 3-64-128-256 + max-pool + MLP head, no T-nets) so that it
measures the data, independently of the model zoo.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmark.core.data import load_dataset


class PointNetLite(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv1d(3, 64, 1), nn.BatchNorm1d(64), nn.ReLU(),
            nn.Conv1d(64, 128, 1), nn.BatchNorm1d(128), nn.ReLU(),
            nn.Conv1d(128, 256, 1), nn.BatchNorm1d(256), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, 3] -> [B, C]
        return self.head(self.mlp(x.transpose(1, 2)).amax(-1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--train-size", type=int, default=2048)
    ap.add_argument("--test-size", type=int, default=512)
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    opts = dict(train_size=args.train_size, test_size=args.test_size, jitter=args.jitter)
    t0 = time.perf_counter()
    train = load_dataset("synthshapes", "train", num_points=args.num_points, seed=args.seed, options=opts)
    test = load_dataset("synthshapes", "test", num_points=args.num_points, seed=args.seed, options=opts)
    gen_s = time.perf_counter() - t0
    model = PointNetLite(train.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * ((len(train) + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    t0 = time.perf_counter()
    history = []
    for epoch in range(args.epochs):
        model.train()
        for x, y in train.batches(32, shuffle=True, seed=epoch, drop_last=True):
            x = x * torch.empty(len(x), 1, 3).uniform_(0.85, 1.15)  # anisotropic scaling augmentation
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(x).argmax(1) for x, _ in test.batches(128)]).numpy()
        acc = float((pred == test.labels).mean())
        history.append(acc)
        print(f"epoch {epoch + 1:2d}  loss {loss.item():.3f}  test acc {acc:.3f}")
    train_s = time.perf_counter() - t0
    per_class = {c: float((pred[test.labels == i] == i).mean()) for i, c in enumerate(test.class_names)}
    confusion = np.zeros((test.num_classes, test.num_classes), dtype=int)
    np.add.at(confusion, (test.labels, pred), 1)
    print(f"\nfinal test accuracy {history[-1]:.3f} (generation {gen_s:.1f} s, training {train_s:.0f} s)")
    for c, a in sorted(per_class.items(), key=lambda kv: kv[1]):
        i = test.class_names.index(c)
        row = confusion[i].copy()
        row[i] = 0
        worst = test.class_names[int(row.argmax())] if row.any() else "-"
        print(f"  {c:12s} {a:.2f}   most confused with {worst}")
    out = {
        "args": vars(args),
        "test_accuracy": history[-1],
        "history": history,
        "per_class": per_class,
        "generation_seconds": gen_s,
        "training_seconds": train_s,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    Path(__file__).with_suffix(".json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
