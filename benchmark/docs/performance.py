"""Generated sections of docs/performance.md: what the scripts in ``benchmarks/`` measured, read
from the JSON each writes beside itself (attack overhead, threads, defense cost, end to end,
scaling, data loading). A section whose file is missing says which script writes it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark.docs.render import markdown_table, register_section


def _load(root: Path, name: str) -> tuple[Path, dict[str, Any] | None]:
    path = root / "benchmarks" / name
    return path, json.loads(path.read_text()) if path.exists() else None


def _missing(script: str) -> str:
    return f"No committed measurement yet: run `python benchmarks/{script}`.\n"


def count(value: Any) -> str:
    """A parameter count, short: ``9728`` -> ``9.7 k``, ``1978209`` -> ``1.98 M``, ``0`` -> ``–``."""
    n = int(value or 0)
    if n == 0:
        return "–"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M"
    return f"{n / 1e3:.1f} k" if n >= 1000 else str(n)


@register_section("attack-overhead")
def attack_overhead(root: Path) -> str:
    """The ratios of ``benchmarks/attack_overhead.json``: attack wall time over its model passes."""
    path, data = _load(root, "attack_overhead.json")
    if data is None:
        return _missing("attack_overhead.py")
    attacks = list(dict.fromkeys(a for m in data["models"].values() for a in m["attacks"]))
    rows = []
    for model, entry in data["models"].items():
        row = {"model": f"`{model}` ({entry['iterations']} iterations)"}
        for attack in attacks:
            cell = entry["attacks"].get(attack)
            if cell is None:
                row[attack] = "–"
            else:  # an attack run at its own iteration count (knn-far) says so
                own = cell.get("iterations", entry["iterations"])
                row[attack] = f"{cell['ratio']:.2f}" + ("" if own == entry["iterations"] else f" ({own} iterations)")
        if "advpc" in entry["attacks"] and entry["attacks"]["advpc"].get("ratio_vs_inherent") is not None:
            row["advpc vs its two passes"] = f"{entry['attacks']['advpc']['ratio_vs_inherent']:.2f}"
        rows.append(row)
        split = {a: c for a, c in entry["attacks"].items() if c.get("per_iteration_ratio") is not None}
        if split:  # the same calls split into a part per iteration and a part once per call
            rows.append({key: "–" for key in row} | {"model": "per iteration / once per call (s)"} | {
                a: f"{split[a]['per_iteration_ratio']:.2f} / {split[a]['once_seconds']:.2f}" for a in split})
    intro = (f"From `{path.relative_to(root)}` (torch {data['torch']}, {data['threads']} threads, batch "
             f"{data['batch']} x {data['points']} points, best of {data['repeats']}): attack wall time / (iterations x "
             "one forward+backward of the model on the same batch). Where measured, the row below a model splits the "
             "call into its cost per iteration (over one pass, from the same call at 1 iteration) and what it pays "
             "once per call (seconds).")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


@register_section("thread-contention")
def thread_contention(root: Path) -> str:
    """``benchmarks/thread_contention.json``: one `bench` step beside another CPU job, forced to all
    CPUs vs the launcher's thread choice."""
    path, data = _load(root, "thread_contention.json")
    if data is None:
        return _missing("thread_contention.py")
    rows = [{"run": name, "seconds": f"{run['seconds']:.1f}", "threads (bench info)": run["threads"],
             "other job (products/s)": "–" if run.get("hog_products_per_s") is None else f"{run['hog_products_per_s']:.1f}"}
            for name, run in data["runs"].items()]
    intro = (f"From `{path.relative_to(root)}`: `{data['step']}` on {data['cpus']} CPUs, alone and beside a job "
             f"keeping {data['hog_threads']} threads busy; forced / automatic = {data['ratio_forced_over_automatic']}x.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


@register_section("defense-cost")
def defense_cost(root: Path) -> str:
    """``benchmarks/defense_cost.json``: each defended model's seconds per batch over the bare
    victim's, cheapest first, with its kind, adaptive gradient and extra parameters."""
    path, data = _load(root, "defense_cost.json")
    if data is None:
        return _missing("defense_cost.py")
    entries = sorted(data["defenses"].items(), key=lambda kv: (kv[1].get("ratio") is None, kv[1].get("ratio") or 0.0))
    rows = []
    for name, d in entries:
        ok = d.get("status", "ok") == "ok"
        rows.append({"defense": f"`{name}`", "kind": d.get("kind", "–") + (", random" if d.get("randomized") else ""),
                     "adaptive gradient": d.get("gradient", "–"),
                     "defended / bare": f"{d['ratio']:.2f}" if ok and d.get("ratio") is not None else
                     f"{d.get('status', 'failed')}: {d.get('error', '')}".rstrip(": "),
                     "GFLOP ratio": f"{d['gflop_ratio']:.1f}" if ok and d.get("gflop_ratio") is not None else "–",
                     "extra parameters": count(d.get("extra_params")), "victim weights": d.get("victim_weights", "–")})
    victim_params = next((d.get("victim_params") for d in data["defenses"].values() if d.get("victim_params")), None)
    intro = (f"From `{path.relative_to(root)}` (profile `{data['profile']}`, {data['device']}, {data['threads']} threads, "
             f"torch {data['torch']}): seconds per batch of {data['batch']} x {data['points']} points of the defended "
             f"model over those of the bare victim `{data['victim']}` ({count(victim_params)} parameters), no-grad "
             f"forwards alternating, best of {data['repeats']}; preparation (training) not included. "
             f"GFLOP ratio: the matrix products' and convolutions' operations of the defended model over the "
             f"victim's, the time ratio's floor at equal efficiency.")
    lines = [intro, "", *markdown_table(rows)]
    steps_path, steps = _load(root, "defense_cost_if200.json")  # IF-Defense at the paper's 200 steps
    entry = (steps or {}).get("defenses", {}).get("if-defense", {})
    if entry.get("status") == "ok":
        lines += ["", f"At the paper's 200 restoration steps (`{steps_path.relative_to(root)}`, same settings "
                      f"otherwise): `if-defense` {entry['ratio']:.1f}x the victim, GFLOP ratio "
                      f"{entry.get('gflop_ratio', float('nan')):.1f}."]
    return "\n".join(lines) + "\n"


@register_section("restoration-profile")
def restoration_profile(root: Path) -> str:
    """``benchmarks/restoration_profile.json``: IF-Defense's and DUP-Net's preprocessing part by
    part, seconds per batch, share of the whole and in bare-victim passes, GFLOP."""
    path, data = _load(root, "restoration_profile.json")
    if data is None:
        return _missing("restoration_profile.py")
    victim = data["victim_seconds"]
    rows = []
    for name, d in data["defenses"].items():
        if d.get("status") != "ok":
            rows.append({"defense": f"`{name}`", "part": f"failed: {d.get('error', '')}", "calls per batch": "–",
                         "seconds per batch": "–", "share": "–", "victim passes": "–", "GFLOP": "–"})
            continue
        whole = d["whole_seconds"]
        parts = [*d["parts"], {"part": "the rest (between the parts above)", "calls": "–", "gflop": None,
                               "total_seconds": d["other_seconds"], "within_previous": False},
                 {"part": "**whole preprocessing**", "calls": 1, "gflop": None, "total_seconds": whole,
                  "within_previous": False}]
        for part in parts:
            label = ("&nbsp;&nbsp;" if part["within_previous"] else "") + part["part"]
            rows.append({"defense": f"`{name}`", "part": label, "calls per batch": str(part["calls"]),
                         "seconds per batch": f"{part['total_seconds']:.3f}",
                         "share": f"{100 * part['total_seconds'] / whole:.0f}%",
                         "victim passes": f"{part['total_seconds'] / victim:.1f}",
                         "GFLOP": "–" if part.get("gflop") is None else f"{part['gflop']:.1f}"})
    intro = (f"From `{path.relative_to(root)}` (profile `{data['profile']}`, {data['threads']} threads, torch "
             f"{data['torch']}, batch {data['batch']} x {data['points']} points, best of {data['repeats']}): seconds "
             f"per batch of each part (one call's time x calls per batch), its share of the whole preprocessing, "
             f"and the same in passes of the bare victim ({victim:.4f} s, {data['victim_gflop']:.1f} GFLOP per "
             f"batch). Indented rows are inside the row above them.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


def _command(run: dict[str, Any]) -> str:
    words = list(run.get("command") or [])[3:]  # drop "python -m benchmark"
    if "--out" in words:
        i = words.index("--out")
        del words[i:i + 2]
    return "`bench " + " ".join(w for w in words if w != "--no-progress") + "`"


def _measured(run: dict, data: dict) -> str:
    """``"2026-12-05 at abc1234"``: a run's launch date and the commit that measured it (a run without
    its own commit was measured at the file's)."""
    commit = str(run.get("git_commit") or data.get("git_commit") or "")[:7]
    date = str(run.get("launched") or "")[:10]
    return " at ".join(part for part in (date, f"`{commit}`" if commit else "") if part) or "–"


@register_section("end-to-end")
def end_to_end(root: Path) -> str:
    """``benchmarks/end_to_end.json``: wall seconds of whole `bench run` commands, cold (empty
    cache) and warm (everything cached, fresh results folder), against the goals, and the items
    that cost most in each."""
    path, data = _load(root, "end_to_end.json")
    if data is None:
        return _missing("end_to_end.py")
    goals = data.get("goals", {})
    rows, items = [], []
    # cold first, then the warm runs of the same command, then the others (the file's order is the order
    # the runs were measured in, which --merge changes)
    order = sorted(data["runs"].items(), key=lambda kv: (kv[0].startswith("warm"), kv[0].endswith(" all"), kv[0]))
    for label, run in order:
        goal = (run.get("goal") or {}).get("seconds")
        met = (run.get("goal") or {}).get("met")
        notes = [f"{run['failed_cells']} failed cells"] if run.get("failed_cells") else []
        if label.startswith("warm") and run.get("trained_here"):
            notes.append("not warm: " + ", ".join(run["trained_here"]))
        if run.get("error"):
            notes.append(run["error"])
        rows.append({"run": label, "command": _command(run), "test clouds": str(run.get("test_clouds", "–")),
                     "cells": str(run.get("cells", "–")), "wall seconds": f"{run['wall_seconds']:.1f}",
                     "goal (s)": "–" if goal is None else f"<= {goal}",
                     "met": "–" if met is None else ("yes" if met else "no"),
                     "measured": _measured(run, data), "notes": "; ".join(notes) or "–"})
        for item in sorted(run.get("items") or [], key=lambda i: -i["seconds"])[:3]:
            items.append({"run": label, "item": item["item"], "seconds": f"{item['seconds']:.0f}"})
    intro = (f"From `{path.relative_to(root)}` (profile `{data['profile']}`, {data.get('cores', '?')} cores): "
             "each `bench run` as a user starts it, wall seconds from launch to exit. Cold: from an empty cache "
             "(trains every model, MRPD and crafts every attack); warm: everything cached, a fresh results folder "
             f"(every cell evaluated again). Goals: cold <= {goals.get('cold_seconds', '–')} s, warm <= "
             f"{goals.get('warm_seconds', '–')} s.")
    lines = [intro, "", *markdown_table(rows)]
    if items:
        lines += ["", "The items that cost most in each run (seconds; cell ends are whole seconds):", "",
                  *markdown_table(items)]
    return "\n".join(lines) + "\n"


@register_section("warm-floor")
def warm_floor(root: Path) -> str:
    """How long the warm grid's classifying would take at each defense's GFLOP floor: the cells of
    ``end_to_end.json``'s "warm all" run priced with ``defense_cost.json``'s per-batch victim time
    times each defense's measured ratio, and times its GFLOP ratio (at least 1), i.e. every defense
    at the victim's arithmetic rate; with ``restoration_profile.json``, also at the fastest rate
    any restoration part reached (a part may beat the victim's rate: wide layers)."""
    _, runs = _load(root, "end_to_end.json")
    _, cost = _load(root, "defense_cost.json")
    warm = (runs or {}).get("runs", {}).get("warm all")
    if warm is None or cost is None:
        return "Needs `benchmarks/end_to_end.json` (its warm all run) and `benchmarks/defense_cost.json`.\n"
    defenses = {name: d for name, d in cost["defenses"].items() if d.get("status") == "ok"}
    victim = sum(d["victim_seconds"] for d in defenses.values()) / len(defenses)  # per batch
    batches = -(-int(warm["test_clouds"]) // int(cost["batch"]))
    cells = int(warm["cells"]) / len(defenses)  # cells per defense: every attack and the clean cell
    per_defense = victim * batches * cells
    measured = per_defense * sum(d["ratio"] for d in defenses.values())
    floor = per_defense * sum(max(1.0, d["gflop_ratio"]) for d in defenses.values())
    evaluated = sum(item.get("eval_seconds") or 0.0 for item in warm.get("items") or [])
    goal = (runs or {}).get("goals", {}).get("warm_seconds")
    rows = [{"defense": name, "ratio (measured)": f"{d['ratio']:.2f}", "GFLOP ratio": f"{d['gflop_ratio']:.2f}",
             "seconds at the ratio": f"{per_defense * d['ratio']:.0f}",
             "seconds at the GFLOP floor": f"{per_defense * max(1.0, d['gflop_ratio']):.0f}"}
            for name, d in sorted(defenses.items(), key=lambda kv: -kv[1]["ratio"])]
    lines = [
        f"The warm run of every defense classifies {warm['cells']} cells of {warm['test_clouds']} clouds "
        f"({cells:.0f} per defense: every attack and the clean cell), {batches} batches each. Priced with "
        f"`defense_cost.json` (victim {1000 * victim:.1f} ms per batch of {cost['batch']}), its classifying "
        f"costs **{measured:.0f} s** at the measured ratios (the warm run's attack cells measured "
        f"{evaluated:.0f} s of classifying, without their clean cells) and would still cost "
        f"**{floor:.0f} s** if every defense ran at its GFLOP floor, the bare victim's speed per GFLOP"
        + (f", against a goal of {goal} s for the whole run" if goal is not None else "") + ".",
        "", *markdown_table(rows),
    ]
    _, profile = _load(root, "restoration_profile.json")
    rates = [(part["gflop"] / part["total_seconds"], f"{name}: {part['part']}")
             for name, d in ((profile or {}).get("defenses") or {}).items() if d.get("status") == "ok"
             for part in d["parts"] if part["gflop"] > 0 and not part["within_previous"]]
    if rates and profile.get("victim_seconds"):
        victim_rate = profile["victim_gflop"] / profile["victim_seconds"]
        best, what = max(rates)
        lines += ["", (f"The arithmetic rate of each restoration part that computes (`restoration_profile.json`, "
                       f"one run; the victim there: {victim_rate:.0f} GFLOP/s). At the fastest part's rate "
                       f"({what}, {best / victim_rate:.2f}x the victim's) every defense would classify the warm "
                       f"grid in {floor * victim_rate / best:.0f} s."), "",
                  *markdown_table([{"part": label, "GFLOP/s": f"{rate:.0f}", "x victim": f"{rate / victim_rate:.2f}"}
                                   for rate, label in sorted(rates, reverse=True)])]
    return "\n".join(lines) + "\n"


@register_section("training-budget")
def training_budget(root: Path) -> str:
    """``benchmarks/training_budget.json``: each cold-run model at its profile's epochs and at
    cheaper recipes; validation score by epoch, the kept one, the drop against the profile's."""
    path, data = _load(root, "training_budget.json")
    if data is None:
        return _missing("training_budget.py")
    rows = []
    for model, entry in data["models"].items():
        for run in entry["runs"]:
            full = run["epochs"] == entry["profile_epochs"]
            rows.append({
                "model": model, "epochs": f"{run['epochs']}" + (" (profile)" if full else ""),
                "seconds": f"{run['seconds']:.0f}", "score": entry["score"],
                "validation (kept epoch)": f"{100 * run['val_accuracy']:.1f}% ({run['best_epoch']})",
                "validation change": "–" if full else f"{-100 * run['val_drop']:+.1f} pt",
                "test (not for choosing)": f"{100 * run['test_accuracy']:.1f}%",
                "validation by epoch (%)": " ".join(f"{100 * v:.0f}" for v in run["val_by_epoch"]),
            })
    intro = (f"From `{path.relative_to(root)}` (profile `{data['profile']}`, {data.get('cores', '?')} cores, "
             f"{_measured(data, data)}): each model a cold run trains, at its profile's epochs and at cheaper "
             "recipes (the same cosine schedule compressed), same data, seed and dependencies. A recipe would be "
             "chosen by its validation score (clouds carved from the model's own training corpus); the test "
             "accuracy is shown, never used to choose.")
    lines = [intro, "", *markdown_table(rows)]
    cheaper = [(run["val_drop"], model, run["epochs"]) for model, entry in data["models"].items()
               for run in entry["runs"] if run["epochs"] != entry["profile_epochs"]]
    if cheaper:
        drop, model, epochs = min(cheaper)
        full = sum(run["seconds"] for entry in data["models"].values() for run in entry["runs"]
                   if run["epochs"] == entry["profile_epochs"])
        lines += ["", (f"The cheaper recipe that lost least is {model} at {epochs} epochs ({-100 * drop:+.1f} points "
                       f"of validation score); the profile's recipes took {full:.0f} s of training together here.")]
    return "\n".join(lines) + "\n"


@register_section("scaling")
def scaling(root: Path) -> str:
    """``benchmarks/scaling.json``: seconds per attack iteration and the memory an attack call adds,
    vs points and vs batch, and the growth per doubling of each."""
    path, data = _load(root, "scaling.json")
    if data is None:
        return _missing("scaling.py")
    runs = data["runs"]
    by_point_batch = max(runs, key=lambda r: r["points"])["batch"]
    by_batch_points = max(runs, key=lambda r: r["batch"])["points"]
    points = sorted({r["points"] for r in runs if r["batch"] == by_point_batch})
    batches = sorted({r["batch"] for r in runs if r["points"] == by_batch_points})
    series = list(dict.fromkeys((r["model"], r["attack"]) for r in runs))
    several_models = len({m for m, _ in series}) > 1
    cell = {(r["model"], r["attack"], r["points"], r["batch"]): r for r in runs}
    rows = []
    for model, attack in series:
        name = f"`{attack}`" + (f" on `{model}`" if several_models else "")
        for label, field, fmt in (("s / iteration", "seconds_per_iter", "{:.3f}"), ("MiB added", "memory_mib", "{:.0f}")):
            row = {"": f"{name} {label}"}
            for n in points:
                r = cell.get((model, attack, n, by_point_batch))
                row[f"N {n}"] = "–" if r is None else fmt.format(r[field])
            for b in batches:
                r = cell.get((model, attack, by_batch_points, b))
                row[f"B {b}"] = "–" if r is None else fmt.format(r[field])
            rows.append(row)
    growth = []
    for model, attacks in (data.get("growth") or {}).items():
        for attack, axes in attacks.items():
            growth.append({"attack": f"`{attack}`" + (f" on `{model}`" if several_models else ""),
                           **{f"{what} per doubling of {axis}": f"{axes[key][what]['overall']:.2f}"
                              for key, axis in (("points", "N"), ("batch", "B")) if key in axes
                              for what in ("time", "memory")}})
    intro = (f"From `{path.relative_to(root)}` ({data['device']}, {data['threads']} threads, {data['iterations']} "
             f"iterations, best of {data['repeats']}): seconds per iteration and the peak memory the attack call "
             f"adds ({runs[0].get('memory_kind', 'peak RSS')}, MiB), vs points N at batch {by_point_batch} and vs "
             f"batch B at {by_batch_points} points.")
    lines = [intro, "", *markdown_table(rows)]
    if growth:
        lines += ["", "Growth per doubling over the whole sweep (1 = flat, 2 = linear, 4 = quadratic):", "",
                  *markdown_table(growth)]
    return "\n".join(lines) + "\n"


@register_section("data-load")
def data_load(root: Path) -> str:
    """Every ``benchmarks/data_load*.json``: the first load of a ModelNet40 ``normal_resampled``
    tree (parse + point selection) from an empty parse cache, and the cached load."""
    paths = sorted((root / "benchmarks").glob("data_load*.json"))
    if not paths:
        return _missing("data_load.py")
    rows = []
    for path in paths:
        d = json.loads(path.read_text())
        phases = d.get("phases") or {}
        rows.append({"file": f"`{path.name}`", "files": f"{d['files']:,}", "sampling": d["sampling"],
                     "points": str(d["num_points"]), "first load (s)": f"{d['first_load_seconds']:.1f}",
                     "cached load (s)": f"{d['cached_load_seconds']:.2f}",
                     "parse share": "–" if phases.get("parse_share") is None else f"{100 * phases['parse_share']:.0f}%",
                     "goal (s)": f"<= {d['goal_seconds']}", "met": "yes" if d.get("goal_met") else "no"})
    intro = ("From `benchmarks/data_load*.json` (`python benchmarks/data_load.py`): the first load of a generated "
             "ModelNet40 `normal_resampled` tree of that many text files (both splits, parse + point selection, "
             "empty parse cache), the second load from the cache, and the share of parsing in the first.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"
