"""What does a defense cost at inference? Seconds per batch of each defended model over the bare victim.

For every registered defense (``--defenses all``, or a comma list), at the profile's settings
(``default``: the point-transformer student on SynthShapes, 1,024 points), on one batch of
the profile's test clouds (``--batch 16``), on the CPU (2 threads by default):

    ratio = seconds per batch of the defended model / seconds per batch of the bare victim

Each defense is prepared the way ``bench run`` prepares it, through ``Runner.defense(name)``:
a defense that trains (``pgd-at``, ``prompt-at``, ``mrpd``, DUP-Net's PU-Net, IF-Defense's
occupancy network) is loaded from the cache, or **trained first if the cache lacks it** (the
victim and the teachers too), which can take many minutes on an empty cache; preparation
time is reported but not part of the ratio. Both forwards run under ``torch.no_grad()``,
timed by ``defenses.base.inference_cost``: victim and defended model alternately, best of
``--repeats`` after one warm-up each, so machine drift spreads over both. A randomised
defense is reseeded with the run's seed first.

Also reported per defense: the GFLOP of the matrix products and convolutions of one batch
through the victim and through the defended model (:func:`matmul_flops`) and their ratio,
the floor of the time ratio on hardware that runs both at the same efficiency (PU-Net's
narrow layers and IF-Defense's 32-wide decoder run below the victim's efficiency); its ``kind`` (``preprocess`` / ``model``), whether it is
randomised, and its extra parameters: the elements of every parameter and buffer the
defended model holds (for a preprocessing defense, also the networks its ``preprocess``
uses: DUP-Net's PU-Net, IF-Defense's occupancy network) minus the victim's. MRPD's learned
prompts and class embeddings are buffers, so they count; a fine-tuned copy of the victim
(``pgd-at``) adds nothing beyond its own copy (``weights: own copy``). A defense that fails
to prepare is reported as failed with its error; the others still run. Run::

    python benchmarks/defense_cost.py [--profile default --defenses all --batch 16 --threads 2 --repeats 5]

Uses the profile's cache (``$PCRB_CACHE_DIR`` or the user cache) like ``bench run``. Writes
``benchmarks/defense_cost.json`` (``--out``). Tune the allocator first (the ``bench``
launcher does it for its own runs): this script re-executes itself once with the same glibc
malloc tunables unless ``PCRB_NO_TUNE=1``.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))



class _Failed(Exception):
    """A defense that failed to prepare (its message is the runner's ``Type: message``)."""


def _tensor_sizes(modules: list[Any]) -> dict[int, int]:
    """``id(tensor) -> numel`` of every parameter and buffer of ``modules`` (each tensor once)."""
    out: dict[int, int] = {}
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            out[id(t)] = t.numel()
    return out


def parameter_footprint(defended: Any, victim: Any) -> dict[str, Any]:
    """Elements the defended model holds beyond the victim's (parameters + buffers, counted once).

    Returns:
        ``{"extra_params": int, "victim_params": int, "victim_weights": "shared" | "own copy"}``:
        ``extra_params`` = elements reachable from ``defended`` (plus the ``nn.Module``
        attributes of the object whose bound method is its ``preprocess``) minus the victim's
        elements; ``victim_weights`` says whether the defended model runs the victim's own
        tensors or a copy of its own (a retrained model).
    """
    from torch import nn

    modules = [defended]
    owner = getattr(getattr(defended, "preprocess", None), "__self__", None)
    if owner is not None and not isinstance(owner, nn.Module):
        modules += [v for v in vars(owner).values() if isinstance(v, nn.Module)]
    reachable = _tensor_sizes(modules)
    own = _tensor_sizes([victim])
    shared = any(k in reachable for k in own)
    return {"extra_params": sum(reachable.values()) - sum(own.values()), "victim_params": sum(own.values()),
            "victim_weights": "shared" if shared else "own copy"}


def matmul_flops(fn: Any) -> float:
    """Floating-point operations of the matrix products and convolutions ``fn()`` runs (GFLOP),
    counted with torch's own formulas (``torch.utils.flop_counter.flop_registry``) by a dispatch
    mode that, unlike ``FlopCounterMode``, needs no module hooks (so it also counts inside
    ``torch.autograd.grad``, which IF-Defense's restoration calls) and oneDNN's fused linear
    (``benchmark.core.kernels``) as ``2 x rows x in x out``. Element-wise work is not
    counted: this is the floor a defense's cost cannot go below on a given machine."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class _Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            packet = func._overloadpacket
            formula = flop_registry.get(packet)
            if formula is not None:
                _Count.total += formula(*args, **(kwargs or {}), out_val=out)
            elif "_linear_pointwise" in str(packet):  # oneDNN's fused linear (benchmark.core.kernels)
                _Count.total += 2 * args[0].numel() * args[1].shape[0]
            return out

    with _Count():
        fn()
    return _Count.total / 1e9


def _count(n: int) -> str:
    """A parameter count for the table: ``-`` for none, else ``1.3 k`` / ``1.8 M``."""
    if n == 0:
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--defenses", default="all", help="'all' or a comma list (see: bench list defenses)")
    ap.add_argument("--batch", type=int, default=16, help="clouds per timed batch (the profile's first test clouds)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed forwards of each model (best of)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto (the profile's 'device')")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a profile field, as bench run --set")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)

    import torch

    from benchmark.core.registry import populate_registries
    from benchmark.core.config import resolve_config
    from benchmark.core.env import allocator_status
    from benchmark.core.registry import DEFENSES
    from benchmark.runner import Runner
    from defenses.base import inference_cost

    torch.set_num_threads(args.threads)
    scratch = tempfile.mkdtemp(prefix="pcrb-defense-cost-")  # the runner's results folder: nothing is written
    try:
        cfg = resolve_config(args.profile, None, args.overrides,
                             {"defense": args.defenses, "attack": "pgd", "device": args.device, "out_dir": scratch})
        populate_registries(cfg.plugins)
        names = DEFENSES.resolve(args.defenses)
        runner = Runner(cfg, progress=False)
        runner.prepare_data()
        runner.prepare_models()
        victim = runner.victim.model
        sample = runner.points[: args.batch].to(runner.device)
        print(f"{args.profile} profile, {runner.device}, {torch.get_num_threads()} threads, victim {cfg.victim}, "
              f"batch {sample.shape[0]} x {sample.shape[1]} points, best of {args.repeats}; {allocator_status()}",
              flush=True)
        report: dict[str, Any] = {
            "what": "seconds per batch of the defended model / of the bare victim (no_grad forwards, alternating)",
            "profile": args.profile, "victim": cfg.victim, "device": str(runner.device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "allocator": allocator_status(),
            "cpu": platform.processor() or platform.machine(), "batch": int(sample.shape[0]),
            "points": int(sample.shape[1]), "repeats": args.repeats, "overrides": list(args.overrides), "defenses": {},
        }
        for name in names:
            entry: dict[str, Any] = {}
            try:
                prepared = runner.defense(name)  # records a failure to prepare instead of raising
                error = prepared.error
            except Exception as err:  # noqa: BLE001 - e.g. bad parameters, before preparing
                error = f"{type(err).__name__}: {err}"
            try:
                if error is not None:
                    raise _Failed(error)
                model = prepared.model
                model.reseed(cfg.seed)
                with torch.no_grad():
                    cost = inference_cost(model, victim, sample, repeats=args.repeats)
                    model.reseed(cfg.seed)
                    flops = {"victim_gflop": round(matmul_flops(lambda: victim(sample)), 3),
                             "defended_gflop": round(matmul_flops(lambda: model(sample)), 3)}
                flops["gflop_ratio"] = round(flops["defended_gflop"] / max(flops["victim_gflop"], 1e-9), 2)
                cost.update(flops)
                entry = {"status": "ok", "kind": model.kind, "randomized": model.randomized,
                         "gradient": model.gradient, "prepare_seconds": round(prepared.seconds, 2),
                         **cost, **parameter_footprint(model, victim)}
            except Exception as err:  # noqa: BLE001 - one failed defense must not lose the others
                message = str(err) if isinstance(err, _Failed) else f"{type(err).__name__}: {err}"
                entry = {"status": "failed", "error": message}
                try:
                    obj = DEFENSES.get(name).obj
                    entry.update(kind=getattr(obj, "kind", "?"), randomized=bool(getattr(obj, "randomized", False)))
                except Exception:  # noqa: BLE001, S110 - the declarations are only for the table
                    pass
            report["defenses"][name] = entry
            print(f"  {name}: {entry['status']}"
                  + (f", ratio {entry['ratio']:.2f}" if entry["status"] == "ok" else f" ({entry['error']})"),
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n{'defense':11s} {'kind':10s} {'random':>6s} {'victim s':>9s} {'defended s':>11s} {'ratio':>7s} "
          f"{'extra params':>13s}  note")
    for name, e in report["defenses"].items():
        random = "yes" if e.get("randomized") else "no"
        if e["status"] != "ok":
            print(f"{name:11s} {e.get('kind', '?'):10s} {random:>6s} {'-':>9s} {'-':>11s} {'-':>7s} {'-':>13s}  "
                  f"FAILED: {e['error']}")
            continue
        note = "own copy of the victim's weights" if e["victim_weights"] == "own copy" else ""
        print(f"{name:11s} {e['kind']:10s} {random:>6s} {e['victim_seconds']:9.4f} {e['defended_seconds']:11.4f} "
              f"{e['ratio']:7.2f} {_count(e['extra_params']):>13s}  {note}")
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    from benchmark.core.env import reexec_tuned

    reexec_tuned([sys.executable, *sys.argv])  # the allocator tunables bench uses (PCRB_NO_TUNE=1: off)
    sys.exit(main())
