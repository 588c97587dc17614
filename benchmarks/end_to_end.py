"""What does a whole `bench run` cost, cold and warm, and what dominates? Wall time of the CLI, item by item.

Runs the CLI as a user does, each as a subprocess
(``python -m benchmark run --profile P --defense D --attack all --out <fresh> --no-progress``),
and records its wall time (seconds, from launch to exit):

- ``cold`` (``--cold``): ``--defense mrpd`` from an **empty cache** (a fresh temporary
  ``PCRB_CACHE_DIR``): trains every model it needs, crafts MRPD's training set, trains MRPD,
  crafts every attack's test examples. On the ``default`` profile this took ~30 minutes or
  more on 2 cores;
- ``warm mrpd``: the same command again on a filled cache, with a fresh ``--out`` (so every
  cell is evaluated again; models, defenses and examples load from the cache). After
  ``--cold`` it uses the cold run's cache; alone (``--warm``) the user's cache;
- ``warm all`` (``--warm-all``): ``--defense all`` on the user's cache (``--all-defenses``
  changes the selection).

Without ``--cold``, ``--warm`` or ``--warm-all`` the script runs both warm runs on the
user's existing cache (``$PCRB_CACHE_DIR`` or ``~/.cache/pcrb``, or ``--cache-dir``); a
"warm" run that still had to train something says so (``not warm:`` in its notes).

What dominates: the run's log (``models/zoo.py``: "<model>: trained in N s";
``defenses/adversarial_training.py``: "<attack>: crafted N training examples against the
victim (..., N s)"; MRPD's per-epoch records "mrpd: epoch E, seconds S, ..."; "... loaded
cached ..." lines for cache hits) is read line by line with each line's arrival time, and
the results CSV gives each cell's finish time (``timestamp``, whole seconds), defense
preparation time (``seconds_defense``) and evaluation time (``seconds_eval``). Cells run in
order (the clean cells, which prepare each defense, then each attack over every defense), so
the time between consecutive rows is that cell's cost; the items are: start-up (imports,
data, the victim), each defense's preparation (its clean cell; the models it trains, its
crafted training set and its epochs are listed inside), and each attack (crafting or loading
its examples, then classifying them with every defense). Resolution: about a second.

Also reported: the number of test clouds, each attack's success rate against ``none``
(``attack_success`` of the defense-``none`` rows) and its iteration settings, how many
attacks reach >= 90%, and the issue's goals (cold <= 15 min, warm <= 3 min, >= 128 test
clouds, every attack >= 90% on ``none``). Run::

    python benchmarks/end_to_end.py [--cold] [--warm] [--warm-all] [--profile default]

Writes ``benchmarks/end_to_end.json`` (``--out``). Each ``bench run`` tunes its own
allocator (the launcher re-executes itself); this script only starts and reads them.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOALS = {"cold_seconds": 15 * 60, "warm_seconds": 3 * 60, "test_clouds": 128, "success_none": 0.90}

#: Log lines of a `bench run` worth timing (their text, as the run prints them after stripping).
_EVENTS: list[tuple[str, re.Pattern[str]]] = [
    ("trained", re.compile(r"^(?P<what>[\w.+-]+): trained in (?P<seconds>[\d.]+) s")),
    ("cached", re.compile(r"^(?P<what>[\w.+-]+): loaded cached (?:weights|training)")),
    ("training set", re.compile(r"^(?P<what>[\w.+-]+): (?P<how>crafted|loaded) (?P<n>\d+) training examples "
                                r".*?(?P<seconds>[\d.]+) s\)")),
    ("mrpd epoch", re.compile(r"^mrpd: epoch (?P<n>\d+), seconds (?P<seconds>[\d.]+)")),
    ("teacher features", re.compile(r"^mrpd: (?P<what>\w+) teacher features (?P<how>loaded from the cache|computed)")),
    ("defense network", re.compile(r"^(?P<what>dup-net: PU-Net|if-defense: occupancy network) "
                                   r"(?P<how>from the cache|trained)")),
    ("defense failed", re.compile(r"defense (?P<what>\S+) failed to prepare: (?P<error>.*)")),
    ("cell failed", re.compile(r"^(?P<what>[\w-]+/[\w.+-]+/[\w.+-]+) failed: (?P<error>.*)")),
]


def parse_line(line: str) -> dict[str, Any] | None:
    """The timed event a log line reports (kind, what, seconds, ...), or None."""
    text = line.strip()
    for kind, pattern in _EVENTS:
        m = pattern.search(text)
        if m:
            event: dict[str, Any] = {"kind": kind, **{k: v for k, v in m.groupdict().items() if v is not None}}
            if "seconds" in event:
                event["seconds"] = float(event["seconds"])
            return event
    return None


def bench_run(label: str, defense: str, *, profile: str, out_dir: Path, cache_dir: Path | None,
              overrides: list[str], echo: bool, timeout: float) -> dict[str, Any]:
    """One ``bench run`` subprocess: wall seconds, exit code, and the timed events of its log
    (each with ``at``: seconds after launch when the line arrived)."""
    cmd = [sys.executable, "-m", "benchmark", "run", "--profile", profile, "--defense", defense, "--attack", "all",
           "--out", str(out_dir), "--no-progress"]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, COLUMNS="400", PYTHONUNBUFFERED="1")  # no wrapped log lines
    if cache_dir is not None:
        env["PCRB_CACHE_DIR"] = str(cache_dir)
    launched = _dt.datetime.now(_dt.timezone.utc)
    start = time.perf_counter()
    events: list[dict[str, Any]] = []
    tail: list[str] = []
    print(f"[{label}] {' '.join(cmd[1:])}" + (f"  (PCRB_CACHE_DIR={cache_dir})" if cache_dir else ""),
          file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    watchdog = threading.Timer(timeout, proc.kill)  # a run past --timeout is killed (its rows so far still count)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            at = time.perf_counter() - start
            if echo:
                print(f"[{label} {at:6.0f}s] {line.rstrip()}", file=sys.stderr, flush=True)
            tail = (tail + [line.rstrip()])[-40:]
            event = parse_line(line)
            if event is not None:
                events.append({**event, "at": round(at, 1)})
        code = proc.wait()
    finally:
        watchdog.cancel()
    wall = time.perf_counter() - start
    return {"label": label, "defense": defense, "command": ["python", *cmd[1:]],
            "cache_dir": str(cache_dir) if cache_dir else "user cache", "out_dir": str(out_dir),
            "launched": launched.isoformat(timespec="seconds"), "wall_seconds": round(wall, 1), "exit_code": code,
            "timed_out": wall >= timeout, "events": events, "log_tail": tail if code != 0 else [],
            "_launched": launched}


def analyse(run: dict[str, Any]) -> dict[str, Any]:
    """Add the results' facts to ``run``: test clouds, per-attack success on ``none``, and the
    time items (start-up, each defense's preparation, each attack) with the log events inside."""
    import pandas as pd

    from benchmark.store import ResultStore

    launched: _dt.datetime = run.pop("_launched")
    try:
        rows = ResultStore(run["out_dir"]).read()
    except Exception as err:  # noqa: BLE001 - a run that wrote nothing readable is still reported
        run["error"] = f"results unreadable: {type(err).__name__}: {err}"
        return run
    if rows.empty:
        run["error"] = "no result rows (see log_tail)"
        return run
    run["cells"] = int(len(rows))
    run["failed_cells"] = int((rows["status"] != "ok").sum())
    failed = rows[rows["status"] != "ok"]
    run["failures"] = [f"{r.protocol}/{r.defense}/{r.attack}: {r.error}" for r in failed.itertuples()]
    run["test_clouds"] = int(rows["n"].max())
    ts = pd.to_datetime(rows["timestamp"], utc=True)
    rows = rows.assign(t_end=(ts - pd.Timestamp(launched)).dt.total_seconds(), is_clean=rows["attack"] == "clean")
    # the runner's cell order (timestamps alone tie within a second): per protocol, the clean cells,
    # then each attack over every defense, in registry order
    attack_order, defense_order = _registry_order(run["defense"])
    first_seen = rows.groupby("protocol")["t_end"].min().rank(method="first").to_dict()

    def rank(names: list[str], name: str) -> int:
        return names.index(name) if name in names else len(names)

    rows = rows.assign(order=[(first_seen[r.protocol], -1 if r.attack == "clean" else rank(attack_order, r.attack),
                                rank(defense_order, r.defense), r.t_end) for r in rows.itertuples()])
    rows = rows.sort_values("order", kind="stable").reset_index(drop=True)
    ends = rows["t_end"].clip(lower=0).cummax().tolist()
    rows["cell_seconds"] = [max(0.0, e - (ends[i - 1] if i else 0.0)) for i, e in enumerate(ends)]

    # each log event belongs to the first cell that may have ended after it (ends are whole seconds)
    in_cell: list[list[dict[str, Any]]] = [[] for _ in ends]
    for event in run["events"]:
        i = next((i for i, end in enumerate(ends) if event["at"] < end + 1.0), None)
        if i is not None:
            in_cell[i].append(event)

    items: list[dict[str, Any]] = []
    first = rows.iloc[0]
    items.append({"item": f"start-up: imports, data, victim (+ clean cell of {first['defense']})",
                  "seconds": round(first["cell_seconds"], 1), "events": in_cell[0]})
    for i, row in rows.iterrows():
        if i == 0 or not row["is_clean"]:
            continue
        items.append({"item": f"prepare {row['defense']} (+ its clean cell)", "seconds": round(row["cell_seconds"], 1),
                      "prepare_seconds": _num(row.get("seconds_defense")), "events": in_cell[i]})
    attacks: dict[str, dict[str, Any]] = {}
    for i, row in rows.iterrows():
        if row["is_clean"]:
            continue
        a = attacks.setdefault(row["attack"], {"seconds": 0.0, "eval_seconds": 0.0, "cells": 0, "events": []})
        a["seconds"] += row["cell_seconds"]
        a["eval_seconds"] += _num(row.get("seconds_eval")) or 0.0
        a["cells"] += 1
        a["events"] += in_cell[i]
        if row["defense"] == "none":
            a["success_none"] = _num(row.get("attack_success"))
            a["crafting_seconds_recorded"] = _num(row.get("seconds_attack"))
            a["params"] = str(row.get("attack_params") or "")
            a["status_none"] = row["status"]
    for name, a in attacks.items():
        items.append({"item": f"attack {name}: craft or load, classify with {a['cells']} defense(s)",
                      "seconds": round(a["seconds"], 1), "eval_seconds": round(a["eval_seconds"], 1),
                      "events": a["events"]})
    items.append({"item": "summary table and exit", "seconds": round(max(0.0, run["wall_seconds"] - ends[-1]), 1),
                  "events": []})
    run["items"] = sorted(items, key=lambda it: -it["seconds"])
    run["attacks"] = {name: {k: v for k, v in a.items() if k != "events"} for name, a in attacks.items()}
    run["defense_prepare_seconds"] = {d: _num(g["seconds_defense"].max())
                                      for d, g in rows.groupby("defense", sort=False)}
    trained = [e for e in run["events"] if e["kind"] == "trained"]
    made = [e for e in run["events"] if e["kind"] in ("training set", "teacher features", "defense network")
            and e.get("how") in ("crafted", "computed", "trained")]
    label = {"training set": "training set", "teacher features": "teacher features", "defense network": ""}
    run["trained_here"] = [f"{e['what']} {e['seconds']:.0f} s" for e in trained] + list(dict.fromkeys(
        f"{e['what']} {label[e['kind']]} {e.get('how')}".replace("  ", " ") for e in made))
    hits = ("loaded", "loaded from the cache", "from the cache")
    run["cache_hits"] = sum(e["kind"] == "cached" or e.get("how") in hits for e in run["events"])
    return run


def _registry_order(defense_spec: str) -> tuple[list[str], list[str]]:
    """The attacks of ``--attack all`` and the defenses of ``defense_spec`` in the order a run
    visits them (``none`` first); imports the registries (and torch) into this process."""
    from benchmark.core.registry import populate_registries
    from benchmark.core.registry import ATTACKS, DEFENSES

    populate_registries()
    defenses = DEFENSES.resolve(defense_spec)
    return ATTACKS.resolve("all"), ["none"] + [d for d in defenses if d != "none"]


def _iterations(params: str) -> str:
    """The iteration settings of an attack's parameters (its ``attack_params`` JSON)."""
    try:
        values = json.loads(params)
    except ValueError:
        return params
    keys = ("steps", "binary_steps", "num_iter", "restarts", "num_drop", "per_round")
    return ", ".join(f"{k}={values[k]}" for k in keys if k in values) or "-"


def _num(value: Any) -> float | None:
    """A float from a CSV cell (None for empty / NaN)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if v != v else v


def _describe(events: list[dict[str, Any]]) -> str:
    """A short summary of the timed log events inside one item."""
    parts = []
    for e in events:
        if e["kind"] == "trained":
            parts.append(f"trained {e['what']} {e['seconds']:.0f} s")
        elif e["kind"] == "training set":
            parts.append(f"{e['how']} {e['n']} {e['what']} training examples ({e['seconds']:.0f} s of attack)")
        elif e["kind"] == "teacher features" and e["how"] == "computed":
            part = f"{e['what']} teacher features computed"
            if part not in parts:
                parts.append(part)
        elif e["kind"] == "defense network":
            parts.append(f"{e['what']} {e['how']}")
        elif e["kind"] in ("defense failed", "cell failed"):
            parts.append(f"FAILED {e['what']}")
    epochs = [e for e in events if e["kind"] == "mrpd epoch"]
    if epochs:
        parts.append(f"{len(epochs)} MRPD epochs {sum(e['seconds'] for e in epochs):.0f} s")
    return "; ".join(parts)


def merge_reports(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with the runs of the JSON at ``path`` that it does not have (a partial re-measurement).

    Every run says which commit measured it (``git_commit``; a kept run from an older file without
    one gets the file's); the top-level ``git_commit`` is this invocation's. Raises ``SystemExit``
    when the old file was measured with another profile or other overrides.
    """
    if not path.exists():
        return report
    old = json.loads(path.read_text())
    for key in ("profile", "overrides"):
        if old.get(key) != report.get(key):
            raise SystemExit(f"--merge: {path} was measured with {key} {old.get(key)!r}, this run with "
                             f"{report.get(key)!r}; write to another --out")
    kept = {label: {"git_commit": old.get("git_commit"), **run}
            for label, run in old.get("runs", {}).items() if label not in report["runs"]}
    if kept:
        report["runs"] = {**kept, **report["runs"]}
        report["how"] = (f"runs {', '.join(sorted(kept))} kept from the previous file (--merge); each run's "
                         "git_commit and launched say when and at which commit it was measured")
    if "success_none" not in report and "success_none" in old:
        report["success_none"] = old["success_none"]
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--cold", action="store_true", help="cold mrpd run from an empty cache, then warm on that cache")
    ap.add_argument("--warm", action="store_true", help="warm mrpd run on the user's cache (without --cold)")
    ap.add_argument("--warm-all", action="store_true", help="warm run of --all-defenses on the user's cache")
    ap.add_argument("--all-defenses", default="all", help="the --defense of the warm-all run")
    ap.add_argument("--cache-dir", default=None, help="the 'user cache' of the warm runs (default: bench's own: "
                    "$PCRB_CACHE_DIR or ~/.cache/pcrb)")
    ap.add_argument("--workdir", default=None, help="where the cold cache and the runs' results go (default: a "
                    "temporary folder, removed at the end unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the workdir (cold cache, results CSVs)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to every bench run as --set KEY=VALUE")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per bench run")
    ap.add_argument("--top", type=int, default=8, help="biggest time items shown per run")
    ap.add_argument("--quiet", action="store_true", help="do not echo the runs' output (stderr)")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    ap.add_argument("--merge", action="store_true",
                    help="keep the runs of the existing --out that this invocation does not measure (each run "
                         "records its own commit and launch time)")
    args = ap.parse_args(argv)

    warm, warm_all = args.warm, args.warm_all
    if not (args.cold or warm or warm_all):
        warm = warm_all = True
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pcrb-e2e-"))
    workdir.mkdir(parents=True, exist_ok=True)
    user_cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    plan: list[tuple[str, str, Path | None]] = []
    if args.cold:
        cold_cache = workdir / "cold-cache"
        if cold_cache.exists() and any(cold_cache.iterdir()):
            raise SystemExit(f"{cold_cache} is not empty; a cold run needs an empty cache (choose another --workdir)")
        plan += [("cold mrpd", "mrpd", cold_cache), ("warm mrpd", "mrpd", cold_cache)]
    elif warm:
        plan.append(("warm mrpd", "mrpd", user_cache))
    if warm_all:
        plan.append(("warm all", args.all_defenses, user_cache))

    from benchmark.cells import git_commit

    report: dict[str, Any] = {
        "what": "wall seconds of bench run (CLI subprocess) cold and warm; time items; attack success on none",
        "profile": args.profile, "overrides": args.overrides, "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "python": platform.python_version(), "git_commit": git_commit(ROOT),
        "goals": GOALS, "runs": {},
    }
    try:
        for i, (label, defense, cache) in enumerate(plan):
            out_dir = workdir / f"results-{i}-{label.replace(' ', '-')}"
            run = bench_run(label, defense, profile=args.profile, out_dir=out_dir, cache_dir=cache,
                            overrides=args.overrides, echo=not args.quiet, timeout=args.timeout)
            try:
                report["runs"][label] = {**analyse(run), "git_commit": report["git_commit"]}
            except Exception as err:  # noqa: BLE001 - keep the measured wall time whatever the analysis does
                run.pop("_launched", None)
                report["runs"][label] = {**run, "error": f"analysis failed: {type(err).__name__}: {err}"}
            print(f"[{label}] exit {run['exit_code']} after {run['wall_seconds']:.1f} s", file=sys.stderr, flush=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{args.profile} profile, {os.cpu_count()} cores")
    print(f"{'run':10s} {'wall s':>8s} {'min':>6s} {'cells':>6s} {'failed':>6s} {'clouds':>6s} {'goal':>12s}  notes")
    for label, run in report["runs"].items():
        goal = GOALS["cold_seconds"] if label.startswith("cold") else GOALS["warm_seconds"]
        met = "met" if run["wall_seconds"] <= goal else "MISSED"
        run["goal"] = {"seconds": goal, "met": met == "met"}
        notes = [] if run["exit_code"] == 0 else [f"exit {run['exit_code']}"]
        if label.startswith("warm") and run.get("trained_here"):
            notes.append("not warm: " + ", ".join(run["trained_here"]))
        if run.get("failures"):
            notes.append(f"failed: {run['failures'][0]}" + (f" (+{len(run['failures']) - 1} more)"
                                                             if len(run["failures"]) > 1 else ""))
        if run.get("error"):
            notes.append(run["error"])
        print(f"{label:10s} {run['wall_seconds']:8.1f} {run['wall_seconds'] / 60:6.1f} {run.get('cells', 0):6d} "
              f"{run.get('failed_cells', 0):6d} {run.get('test_clouds', 0):6d} {f'<= {goal // 60} min {met}':>12s}  "
              f"{'; '.join(notes)}")
    for label, run in report["runs"].items():
        if not run.get("items"):
            continue
        print(f"\n{label}: biggest items (seconds; cell ends are whole seconds)")
        for it in run["items"][: args.top]:
            extra = _describe(it["events"])
            if it.get("prepare_seconds") is not None:
                extra = f"prepare {it['prepare_seconds']:.0f} s" + (f"; {extra}" if extra else "")
            if it.get("eval_seconds") is not None:
                extra = f"classifying {it['eval_seconds']:.0f} s" + (f"; {extra}" if extra else "")
            print(f"  {it['seconds']:8.1f}  {it['item']}" + (f"  [{extra}]" if extra else ""))
    # success on none: from the last run that has it (the warm-all one when run)
    source = next((r for r in reversed(list(report["runs"].values())) if r.get("attacks")), None)
    if source is not None:
        succ = {a: v.get("success_none") for a, v in source["attacks"].items()}
        reached = [a for a, s in succ.items() if s is not None and s >= GOALS["success_none"]]
        report["success_none"] = {"run": source["label"], "test_clouds": source.get("test_clouds"), "per_attack": succ,
                                  "at_least_90": len(reached), "attacks": len(succ)}
        print(f"\nattack success on none ({source['label']}, {source.get('test_clouds')} test clouds): "
              f"{len(reached)} of {len(succ)} attacks >= {GOALS['success_none']:.0%}")
        print(f"  {'attack':10s} {'success':>8s} {'craft s':>8s}  iterations")
        for a, v in source["attacks"].items():
            s, c = v.get("success_none"), v.get("crafting_seconds_recorded")
            print(f"  {a:10s} {'-' if s is None else f'{100 * s:7.1f}%':>8s} {'-' if c is None else f'{c:8.1f}':>8s}  "
                  f"{_iterations(v.get('params', ''))}")
        print(f"  (craft s: the attack's own time when its examples were crafted, as recorded in the cache; "
              f"goal: >= {GOALS['test_clouds']} test clouds: "
              f"{'met' if (source.get('test_clouds') or 0) >= GOALS['test_clouds'] else 'MISSED'})")
    for run in report["runs"].values():
        run["events"] = [e for e in run["events"] if e["kind"] != "cached"]
        for it in run.get("items", []):
            it["events"] = _describe(it["events"])
    if args.merge:
        report = merge_reports(Path(args.out), report)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
