"""How many iterations does each attack need? The measurement behind the reduced presets.

For a trained victim from the model zoo (the ``default`` profile's victim unless
``--model`` says otherwise), sweep every attack's iteration knobs -- iteration counts,
binary steps, restarts, drop rounds -- at the ``paper`` preset's budgets, losses and
constraints (the registered defaults; never the profile's own ``attacks:`` section), over
the first ``--limit`` test clouds, and print a table (attack, setting, success %,
seconds). Writes ``benchmarks/attack_presets.json`` (``--out``). One script on purpose: it is
run on demand as a whole, and its sweep, selection and report read one another's tables.

Run on demand::

    python benchmarks/attack_presets.py                      # CPU, slow
    python benchmarks/attack_presets.py --device cuda --batch-size 256
    python benchmarks/attack_presets.py --check default      # the profile's settings vs the previous ones

``--check PROFILE`` runs every attack once at the profile's own settings (search schedules
included: ``early_stop``, learning rates, initial weights) and, for ``default``, once at the
previous default's settings (:data:`PREVIOUS_DEFAULT`), on the same clouds, and records
success on the undefended victim and crafting seconds (``attack_presets_<profile>.json``).

Prefix readouts. Adam-based attacks have no schedule that depends on the iteration count,
so a run with ``num_iter = T`` visits exactly the first ``T + 1`` iterates of a run with a
larger ``num_iter``, and their per-sample success (PROTOCOL.md section 1: an attack
succeeds when *some* evaluated iterate succeeds) is a prefix property. The script wraps
the victim in a recorder that logs the prediction of every forward call and reads the
success of every shorter setting off one long run:

* ``knn``: one run of ``num_iter`` 2,500 gives every ``num_iter <= 2,500``;
* ``advpc``, ``aof``: one run of 2 restarts x 200 gives every ``restarts <= 2`` x
  ``num_iter <= 200`` (restarts are independent);
* ``cw``, ``add-cd``, ``add-hd``: the binary search's later steps depend on ``num_iter``,
  so one run per ``num_iter``; each gives every ``binary_steps`` up to its own, and the
  first binary step of the longest run gives every shorter ``num_iter`` at 1 binary step;
* ``pgd``/``ifgm`` (the step is eps / steps) and ``drop-*`` (rounds) are run per setting.

A readout's seconds are then the long run's seconds scaled by its share of the model
passes (marked ``estimated``). Each long run checks that its recorded success equals the
success the attack itself reports. Finally (``--confirm``, default on) each attack is run
for real at the recommended setting: the smallest setting whose success reaches
``min(--target, plateau - --margin)``, where the plateau is the success at the paper
setting (the best success measured when the paper setting was not run).

The recommendation is that rule only. On the default victim it asks for hours of CPU per
run for C&W, Add and AdvPC (their plateaus lie at 73-87%), so the ``default`` profile's
values are a budget choice made from these curves; ``benchmarks/attack_presets.json``
records the sweep (H100, 256 clouds), a kNN sweep on the CPU (the batched ``eigh`` of the
normal estimate failed in ``cusolver`` at batch 256 on CUDA: use a smaller ``--batch-size``
for ``knn`` there), and a CPU check of the committed preset through ``bench attack``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- recording the victim


class Recorder(nn.Module):
    """Wraps a classifier and logs ``argmax`` of every forward call while ``active``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.active = False
        self.log: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if self.active:
            self.log.append(out.detach().argmax(dim=1))
        return out


# --------------------------------------------------------------------------- sweep plans

#: Sweep order: the cheap sweeps first, so a time budget cuts the expensive ones.
_ORDER = ("fgm", "pgd", "ifgm", "drop-100", "drop-200", "cw", "advpc", "aof", "add-cd", "add-hd", "knn")


@dataclass
class Run:
    """One actual attack run: parameter overrides and the readouts taken from its log."""

    params: dict[str, Any]
    readouts: list[dict[str, Any]] = field(default_factory=list)  # overrides read off this run
    optional: bool = False  # a plateau run, done only when time allows and it is needed


def _grid(total: int) -> list[int]:
    """Iteration counts worth a readout (>= 1, the smallest valid setting): every one up to 20, then coarser."""
    ticks = set(range(1, min(total, 20) + 1))
    ticks |= set(range(20, min(total, 100) + 1, 5)) | set(range(100, min(total, 500) + 1, 25))
    ticks |= set(range(500, total + 1, 100)) | {total}
    return sorted(ticks)


def _plan(name: str, quick: bool, knn_iter: int = 2500) -> tuple[str, list[Run]]:
    """``(kind, runs)`` for attack ``name``; ``kind`` tells how to read the log."""
    if name in ("pgd", "ifgm"):
        steps = (2, 5, 10, 20) if not quick else (2, 5)
        return "direct", [Run({"steps": s}) for s in steps]
    if name == "fgm":
        return "direct", [Run({})]
    if name.startswith("drop-"):
        per_round = (20, 10, 5) if not quick else (20, 10)
        return "direct", [Run({"per_round": p}) for p in per_round]
    if name == "cw":
        iters, steps = ((5, 10, 20, 30, 50), 10) if not quick else ((3, 5), 3)
        runs = [Run({"num_iter": t, "binary_steps": steps}) for t in iters]
        for run in runs:
            run.readouts = [{"num_iter": run.params["num_iter"], "binary_steps": b} for b in range(1, steps + 1)]
        runs[-1].readouts += [{"num_iter": t, "binary_steps": 1} for t in _grid(iters[-1]) if 0 < t < iters[-1]]
        return "search", runs
    if name in ("add-cd", "add-hd"):
        iters, steps = ((10, 20, 50, 100), 5) if not quick else ((3, 5), 2)
        runs = [Run({"num_iter": t, "binary_steps": steps}) for t in iters]
        for run in runs:
            run.readouts = [{"num_iter": run.params["num_iter"], "binary_steps": b} for b in range(1, steps + 1)]
        runs[-1].readouts += [{"num_iter": t, "binary_steps": 1} for t in _grid(iters[-1]) if 0 < t < iters[-1]]
        if not quick:  # the paper setting, for the plateau
            paper = Run({"num_iter": 500, "binary_steps": 10}, optional=True)
            paper.readouts = [{"num_iter": 500, "binary_steps": b} for b in range(1, 11)]
            paper.readouts += [{"num_iter": t, "binary_steps": 1} for t in _grid(500) if 100 < t < 500]
            runs.append(paper)
        return "search", runs
    if name == "knn":
        total = knn_iter if not quick else 20
        run = Run({"num_iter": total}, [{"num_iter": t} for t in _grid(total)])
        return "adam", [run]
    if name in ("advpc", "aof"):
        restarts, total = (2, 200) if not quick else (2, 6)
        run = Run({"restarts": restarts, "num_iter": total},
                  [{"restarts": r, "num_iter": t} for r in range(1, restarts + 1) for t in _grid(total)])
        return "restarts", [run]
    raise KeyError(f"no sweep plan for attack {name!r}")


def _cost(name: str, params: dict[str, Any], defaults: dict[str, Any]) -> float:
    """Model passes (forward + backward) per cloud of a setting, the unit of the CPU budget."""
    p = {**defaults, **params}
    if name in ("pgd", "ifgm"):
        return float(p["steps"])
    if name == "fgm":
        return 1.0
    if name.startswith("drop-"):
        return float(math.ceil(p["num_drop"] / p["per_round"]))
    if name == "cw":
        return float(p["binary_steps"] * p["num_iter"])
    if name in ("add-cd", "add-hd"):
        return 1.0 + p["binary_steps"] * p["num_iter"]
    if name == "knn":
        return float(p["num_iter"] + 1)
    if name in ("advpc", "aof"):  # two model passes per iteration
        return 2.0 * p["restarts"] * (p["num_iter"] + 1)
    raise KeyError(name)


def _label(params: dict[str, Any]) -> str:
    order = ("restarts", "binary_steps", "num_iter", "steps", "per_round")
    keys = [k for k in order if k in params] + [k for k in params if k not in order]
    return " x ".join(f"{k}={params[k]}" for k in keys) or "(paper)"


# --------------------------------------------------------------------------- reading the logs


def _success_table(kind: str, name: str, log: list[Tensor], params: dict[str, Any], labels: Tensor,
                   targets: Tensor | None, readouts: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Per-sample success ``[B]`` of every readout, from the attack's own forward calls."""
    hit = (lambda pred: pred == targets) if targets is not None else (lambda pred: pred != labels)
    out: dict[str, Tensor] = {}
    if kind == "adam":  # knn: iterates 0..T, one call each
        total = params["num_iter"]
        preds = torch.stack(log)  # [T + 1, B]
        if preds.shape[0] != total + 1:
            raise RuntimeError(f"{name}: expected {total + 1} recorded calls, got {preds.shape[0]}")
        prefix = hit(preds).cummax(dim=0).values
        for r in readouts:
            out[_label(r)] = prefix[r["num_iter"]]
    elif kind == "restarts":  # advpc / aof: per restart, (x', second input) pairs for iterates 0..T
        restarts, total = params["restarts"], params["num_iter"]
        preds = torch.stack(log)
        if preds.shape[0] != restarts * 2 * (total + 1):
            raise RuntimeError(f"{name}: expected {restarts * 2 * (total + 1)} recorded calls, got {preds.shape[0]}")
        preds = preds.view(restarts, total + 1, 2, -1)
        if name == "advpc":
            ok = (preds[:, :, 0] == targets) & (preds[:, :, 1] != labels)
        else:
            ok = (preds[:, :, 0] != labels) & (preds[:, :, 1] != labels)
        prefix = ok.cummax(dim=1).values  # [R, T + 1, B]
        for r in readouts:
            out[_label(r)] = prefix[: r["restarts"], r["num_iter"]].any(dim=0)
    elif kind == "search":  # cw / add: (critical-point call for add), then binary_steps x num_iter
        skip = 1 if name.startswith("add-") else 0
        steps, total = params["binary_steps"], params["num_iter"]
        preds = torch.stack(log[skip:])
        if len(log) - skip != steps * total:
            raise RuntimeError(f"{name}: expected {steps * total + skip} recorded calls, got {len(log)}")
        ok = hit(preds).view(steps, total, -1)
        for r in readouts:
            if r["num_iter"] == total:
                out[_label(r)] = ok[: r["binary_steps"]].flatten(0, 1).any(dim=0)
            else:  # a shorter first binary step
                assert r["binary_steps"] == 1 and r["num_iter"] < total
                out[_label(r)] = ok[0, : r["num_iter"]].any(dim=0)
    else:
        raise KeyError(kind)
    return out


# --------------------------------------------------------------------------- running


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_attack(name: str, params: dict[str, Any], model: nn.Module, ae: nn.Module | None, points: Tensor,
               labels: Tensor, batch_size: int, seed: int, recorder: Recorder | None = None,
               kind: str = "direct", readouts: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """Run ``name`` with the paper preset + ``params`` over all clouds in batches.

    Returns success per sample of the run itself and of every readout, and the seconds.
    """
    from attacks.factory import build_attack

    attack = build_attack(name, params, seed=seed, resolve_model=lambda model_name: ae)
    victim = recorder if recorder is not None else model
    success, per_readout, seconds = [], {}, 0.0
    start = time.perf_counter()
    for s in range(0, len(points), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(points)))
        x, y = points[s: s + batch_size], labels[s: s + batch_size]
        if recorder is not None:
            recorder.log = []
            recorder.active = False
        # the base class's first call (clean logits) and last (prediction) are not the attack's:
        # record only inside ``attack``
        if recorder is not None:
            inner = attack.attack

            def recorded(*a: Any, _inner: Any = inner, **k: Any) -> Any:
                recorder.active = True
                try:
                    return _inner(*a, **k)
                finally:
                    recorder.active = False

            attack.attack = recorded
        res = attack(victim, x, y, indices=idx)
        if recorder is not None:
            del attack.attack
            targets = res.target
            table = _success_table(kind, name, recorder.log, {**_defaults(name), **params}, y, targets, readouts)
            for key, value in table.items():
                per_readout.setdefault(key, []).append(value.cpu())
            recorder.log = []
        success.append(res.success.cpu())
        seconds += res.seconds
    _sync(points.device)
    wall = time.perf_counter() - start
    out = {"success": torch.cat(success), "seconds": seconds, "wall_seconds": wall}
    out["readouts"] = {k: torch.cat(v) for k, v in per_readout.items()}
    return out


def _defaults(name: str) -> dict[str, Any]:
    from benchmark.core.registry import ATTACKS

    return dict(ATTACKS.get(name).defaults)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:5.1f}%"


def choose(rows: list[dict[str, Any]], target: float, margin: float) -> dict[str, Any] | None:
    """The cheapest readout reaching ``min(target, plateau - margin)``."""
    if not rows:
        return None
    paper = [r for r in rows if r["paper"]]
    plateau = paper[0]["success"] if paper else max(r["success"] for r in rows)
    need = min(target, plateau - margin)
    ok = [r for r in rows if r["success"] >= need - 1e-9]
    if not ok:
        return None
    best = min(ok, key=lambda r: (r["cost"], r.get("params", {}).get("binary_steps", 0)))
    return {"setting": best["setting"], "params": best["params"], "success": best["success"], "cost": best["cost"],
            "plateau": plateau, "plateau_from": "paper setting" if paper else "best measured", "threshold": need}


#: The ``default`` profile's attack section before the search schedules of issue 16 (commit 508d07c):
#: the "before" column of ``--check default``.
PREVIOUS_DEFAULT: dict[str, dict[str, Any]] = {
    "pgd": {"steps": 10}, "ifgm": {"steps": 10}, "fgm": {},
    "cw": {"binary_steps": 1, "num_iter": 50},
    "knn": {"num_iter": 100},
    "add-cd": {"binary_steps": 1, "num_iter": 50}, "add-hd": {"binary_steps": 1, "num_iter": 50},
    "drop-100": {}, "drop-200": {},
    "advpc": {"restarts": 1, "num_iter": 50},
    "aof": {"restarts": 1, "num_iter": 35},
}


def check_profile(args: argparse.Namespace) -> int:
    """``--check PROFILE``: every attack at the profile's own settings ("after") and, where
    :data:`PREVIOUS_DEFAULT` has it, at the previous default's ("before"), on the same clouds:
    success on the undefended victim, crafting seconds, median L2. Writes ``--out``."""
    import attacks  # noqa: F401  (registers the attacks)
    import models  # noqa: F401
    from benchmark.core.cache import resolve_cache_dir
    from benchmark.core.config import resolve_config
    from benchmark.core.data import load_run_split
    from benchmark.core.env import allocator_status, package_versions, resolve_device
    from benchmark.core.registry import ATTACKS
    from models.zoo import Zoo, ZooContext, describe_score

    cfg = resolve_config(args.check, flags={"device": args.device, "cache_dir": args.cache_dir})
    device = resolve_device(cfg.device)
    cache_dir = resolve_cache_dir(cfg.cache_dir)
    data = {split: load_run_split(cfg, split, cache_dir) for split in ("train", "test")}
    torch.manual_seed(cfg.seed)
    zoo = Zoo(ZooContext(train=data["train"], test=data["test"], cache_dir=cache_dir, device=device, seed=cfg.seed,
                         params=cfg.models, train_config=cfg.train_config, log=lambda m: print(f"  {m}", flush=True),
                         source=lambda overrides: load_run_split(cfg, "train", cache_dir, overrides)))
    victim = zoo.get(args.model or cfg.victim)
    model = victim.model.eval()
    test = data["test"].subset(range(min(args.limit, len(data["test"]))))
    points, labels = test.tensors(device)
    names = ATTACKS.resolve(args.attacks)
    report: dict[str, Any] = {
        "what": f"success on the undefended victim and crafting seconds of every attack at the {args.check} profile's "
                "settings ('after') and at the previous default's ('before'), same clouds (attack_presets.py --check)",
        "profile": args.check, "victim": args.model or cfg.victim, "victim_weights_sha256": victim.weights_hash,
        "victim_score": describe_score(victim.meta), "num_clouds": len(points), "num_points": int(points.shape[1]),
        "device": str(device), "torch": torch.__version__, "pcrb": package_versions().get("pcrb"),
        "allocator": allocator_status() if device.type == "cpu" else None, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "rows": [],
    }
    out_path = Path(args.out)
    for name in names:
        settings = [("after", dict(cfg.attacks.get(name) or {}))]
        if args.check == "default" and name in PREVIOUS_DEFAULT and not args.after_only:
            settings.insert(0, ("before", PREVIOUS_DEFAULT[name]))
        for which, params in settings:
            res = run_attack(name, params, model, zoo.get("pc-autoencoder").model, points, labels, args.batch_size,
                             cfg.seed)
            success = res["success"]
            row = {"attack": name, "which": which, "params": params, "success": float(success.float().mean()),
                   "n": int(success.numel()), "seconds": res["seconds"], "wall_seconds": res["wall_seconds"],
                   "role": "min-norm" if "min-norm" in ATTACKS.get(name).tags else
                   "strong" if "strong" in ATTACKS.get(name).tags else "weak"}
            report["rows"].append(row)
            print(f"{name:9s} {which:6s} {_label(params):50s} success {_pct(row['success'])}  {row['seconds']:8.1f} s",
                  flush=True)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(report, indent=1))
    totals = {w: sum(r["seconds"] for r in report["rows"] if r["which"] == w) for w in ("before", "after")}
    shared = {r["attack"] for r in report["rows"] if r["which"] == "before"}
    report["total_seconds"] = totals
    report["total_seconds_shared_attacks_after"] = sum(r["seconds"] for r in report["rows"]
                                                       if r["which"] == "after" and r["attack"] in shared)
    out_path.write_text(json.dumps(report, indent=1))
    print(f"crafting seconds: before {totals['before']:.0f}, after {totals['after']:.0f} "
          f"({report['total_seconds_shared_attacks_after']:.0f} for the attacks both have); wrote {out_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default", help="profile of the dataset, victim and training (attack "
                    "parameters always start from the paper preset)")
    ap.add_argument("--model", default=None, help="victim (default: the profile's)")
    ap.add_argument("--attacks", default="all", help="'all' or a comma list")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=256, help="test clouds (the first N)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--target", type=float, default=0.95, help="success the recommendation must reach ...")
    ap.add_argument("--margin", type=float, default=0.02, help="... or the plateau minus this, if lower")
    ap.add_argument("--budget-s", type=float, default=None, help="stop starting new sweep runs after this many "
                    "seconds (the confirmation runs still happen)")
    ap.add_argument("--no-confirm", dest="confirm", action="store_false")
    ap.add_argument("--knn-iter", type=int, default=2500, help="length of the kNN run (paper: 2,500)")
    ap.add_argument("--quick", action="store_true", help="tiny grids (a test of this script)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None, help="JSON written (default: attack_presets.json, with --check "
                    "attack_presets_<profile>.json, beside this script)")
    ap.add_argument("--check", default=None, metavar="PROFILE", help="instead of sweeping: every attack at this "
                    "profile's settings (and, for default, the previous default's), success and seconds")
    ap.add_argument("--after-only", action="store_true", help="with --check: skip the previous settings")
    args = ap.parse_args(argv)
    if args.check:
        args.out = args.out or str(Path(__file__).with_name(f"attack_presets_{args.check}.json"))
        return check_profile(args)
    args.out = args.out or str(Path(__file__).with_suffix(".json"))

    import attacks  # noqa: F401  (registers the attacks)
    import models  # noqa: F401
    from benchmark.core.cache import resolve_cache_dir
    from benchmark.core.config import resolve_config
    from benchmark.core.data import load_run_split
    from benchmark.core.env import allocator_status, package_versions, resolve_device
    from benchmark.core.registry import ATTACKS
    from models.zoo import Zoo, ZooContext, describe_score

    t_start = time.perf_counter()
    cfg = resolve_config(args.profile, flags={"device": args.device, "cache_dir": args.cache_dir})
    device = resolve_device(cfg.device)
    cache_dir = resolve_cache_dir(cfg.cache_dir)
    data = {split: load_run_split(cfg, split, cache_dir) for split in ("train", "test")}
    torch.manual_seed(cfg.seed)
    zoo = Zoo(ZooContext(train=data["train"], test=data["test"], cache_dir=cache_dir, device=device, seed=cfg.seed,
                         params=cfg.models, train_config=cfg.train_config, log=lambda m: print(f"  {m}", flush=True),
                         source=lambda overrides: load_run_split(cfg, "train", cache_dir, overrides)))
    victim_name = args.model or cfg.victim
    victim = zoo.get(victim_name)
    ae = zoo.get("pc-autoencoder")
    model = victim.model.eval()
    test = data["test"].subset(range(min(args.limit, len(data["test"]))))
    points, labels = test.tensors(device)
    with torch.no_grad():
        clean = torch.cat([model(points[i: i + args.batch_size]).argmax(1) for i in range(0, len(points), args.batch_size)])
    clean_acc = float((clean == labels).float().mean())
    names = ATTACKS.resolve(args.attacks)
    names.sort(key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER))  # cheap sweeps first
    print(f"victim {victim_name} ({describe_score(victim.meta)}; weights {victim.weights_hash[:12]}, trained on "
          f"{victim.meta.get('device', '?')}), {len(points)} test clouds x {points.shape[1]} points, clean accuracy "
          f"{100 * clean_acc:.1f}%, device {device}, batch {args.batch_size}", flush=True)

    report: dict[str, Any] = {
        "what": "success of every attack vs its iteration knobs at the paper preset's budgets (benchmarks/attack_presets.py)",
        "profile": args.profile,
        "victim": victim_name,
        "victim_weights_sha256": victim.weights_hash,
        "victim_trained_on": victim.meta.get("device"),
        "victim_score": describe_score(victim.meta),
        "autoencoder_weights_sha256": ae.weights_hash,
        "num_clouds": len(points),
        "num_points": int(points.shape[1]),
        "clean_accuracy": clean_acc,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "pcrb": package_versions().get("pcrb"),
        "allocator": allocator_status() if device.type == "cpu" else None,
        "batch_size": args.batch_size,
        "seed": cfg.seed,
        "target": args.target,
        "margin": args.margin,
        "cost_unit": "model passes (forward + backward) per cloud",
        "rows": [],
        "runs": [],
        "chosen": {},
        "confirmed": {},
    }
    out_path = Path(args.out)

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(out_path)

    def over_budget() -> bool:
        return args.budget_s is not None and time.perf_counter() - t_start > args.budget_s

    recorder = Recorder(model)
    plans = {name: _plan(name, args.quick, args.knn_iter) for name in names}
    # cheap runs of every attack first; optional plateau runs last, when time allows and needed
    order = [(n, r) for n in names for r in plans[n][1] if not r.optional]
    order += [(n, r) for n in names for r in plans[n][1] if r.optional]
    for name, run in order:
        kind = plans[name][0]
        if over_budget():
            report["runs"].append({"attack": name, "params": run.params, "skipped": "time budget"})
            print(f"[skip] {name} {_label(run.params)}: time budget spent", flush=True)
            continue
        if run.optional:
            best = max((r["success"] for r in report["rows"] if r["attack"] == name), default=0.0)
            if best >= 0.97:
                report["runs"].append({"attack": name, "params": run.params, "skipped": f"not needed (best {best:.3f})"})
                continue
        defaults = _defaults(name)
        try:
            res = run_attack(name, run.params, model, ae.model, points, labels, args.batch_size, cfg.seed,
                             recorder=recorder if kind != "direct" else None, kind=kind, readouts=run.readouts)
        except Exception as err:  # noqa: BLE001 - keep sweeping, report the failure
            report["runs"].append({"attack": name, "params": run.params, "error": repr(err)})
            print(f"[error] {name} {_label(run.params)}: {err!r}", flush=True)
            save()
            continue
        run_cost = _cost(name, run.params, defaults)
        rate = float(res["success"].float().mean())
        entry = {"attack": name, "params": run.params, "success": rate, "seconds": res["seconds"],
                 "wall_seconds": res["wall_seconds"], "cost": run_cost}
        readouts = res["readouts"]
        if readouts:
            key = _label({k: run.params[k] for k in run.params})
            if key in readouts:
                entry["recorded_success"] = float(readouts[key].float().mean())
                entry["recorded_matches_reported"] = bool(torch.equal(readouts[key].bool(), res["success"].bool()))
        report["runs"].append(entry)
        settings = [(run.params, res["success"], res["seconds"], False)]
        settings += [(r, readouts[_label(r)], res["seconds"] * _cost(name, r, defaults) / run_cost, True)
                     for r in run.readouts if _label(r) != _label(run.params)]
        for params, succ, secs, estimated in settings:
            full = {**defaults, **params}
            paper = all(full[k] == defaults[k] for k in full)
            report["rows"] = [r for r in report["rows"] if not (r["attack"] == name and r["setting"] == _label(params))]
            report["rows"].append({"attack": name, "setting": _label(params), "params": params,
                                   "success": float(succ.float().mean()), "n": len(succ), "seconds": secs,
                                   "seconds_estimated": estimated, "cost": _cost(name, params, defaults),
                                   "paper": paper})
        print(f"{name:9s} {_label(run.params):32s} success {_pct(rate)}  {res['seconds']:8.1f} s"
              + (f"  (recorded {_pct(entry.get('recorded_success'))}, match {entry.get('recorded_matches_reported')})"
                 if "recorded_success" in entry else ""), flush=True)
        save()

    for name in names:
        rows = [r for r in report["rows"] if r["attack"] == name]
        report["chosen"][name] = choose(rows, args.target, args.margin)
    save()

    if args.confirm:
        for name in names:
            pick = report["chosen"].get(name)
            if pick is None:
                continue
            res = run_attack(name, pick["params"], model, ae.model, points, labels, args.batch_size, cfg.seed)
            rate = float(res["success"].float().mean())
            report["confirmed"][name] = {"setting": pick["setting"], "params": pick["params"], "success": rate,
                                         "n": len(res["success"]), "seconds": res["seconds"]}
            print(f"[confirm] {name:9s} {pick['setting']:32s} success {_pct(rate)}  {res['seconds']:8.1f} s", flush=True)
            save()

    # the table: every run setting, plus the readouts on a coarse grid
    print(f"\n{'attack':9s} {'setting':34s} {'success':>8s} {'seconds':>9s}  note")
    for name in names:
        rows = sorted((r for r in report["rows"] if r["attack"] == name), key=lambda r: (r["cost"], r["setting"]))
        pick = report["chosen"].get(name) or {}
        shown = [r for r in rows if not r["seconds_estimated"] or _coarse(r["params"]) or r["setting"] == pick.get("setting")]
        for r in shown:
            note = []
            if r["paper"]:
                note.append("paper")
            if r["setting"] == pick.get("setting"):
                note.append("chosen")
            if r["seconds_estimated"]:
                note.append("read off a longer run")
            secs = f"{r['seconds']:8.1f}" + ("*" if r["seconds_estimated"] else " ")
            print(f"{name:9s} {r['setting']:34s} {_pct(r['success']):>8s} {secs:>9s}  {', '.join(note)}")
    print("\n* seconds scaled from the longer run's share of model passes")
    print(f"wrote {out_path} ({time.perf_counter() - t_start:.0f} s in all)")
    return 0


def _coarse(params: dict[str, Any]) -> bool:
    """Readouts worth a table line (the JSON holds all of them)."""
    t = params.get("num_iter")
    return t in (0, 1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000, 1500, 2000, 2500)


if __name__ == "__main__":
    from benchmark.core.env import reexec_tuned

    reexec_tuned([sys.executable, *sys.argv])  # the allocator tunables bench uses (PCRB_NO_TUNE=1: off)
    sys.exit(main())
