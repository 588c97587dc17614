"""Generated sections of the README: numbers come from the files the code writes, never by hand.

A generated section sits between two markers in a markdown file::

    <!-- begin generated: attack-presets -->
    ... (rewritten by `bench docs`) ...
    <!-- end generated: attack-presets -->

:data:`GENERATORS` maps each name to a function that renders it from the project's output
files (``benchmarks/*.json``, ``results/*.csv``). ``bench docs`` rewrites every section;
``bench docs --check`` (and ``tests/test_docs.py``) fails when a committed section differs
from what its files say, so a number cannot drift from its source.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["GENERATORS", "check_docs", "markdown_table", "number", "percent", "register_section", "render_sections",
           "write_docs"]

_SECTION = re.compile(r"(<!-- begin generated: ([a-z0-9-]+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.DOTALL)


def percent(value: Any) -> str:
    """``0.5`` -> ``50.0%``; None or NaN -> an en dash."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * float(value):.1f}%"


def _setting(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items()) or "paper"


def attack_presets(root: Path) -> str:
    """Success on the undefended victim and crafting seconds per attack, before and after
    (``benchmarks/attack_presets_default.json``)."""
    path = root / "benchmarks" / "attack_presets_default.json"
    data = json.loads(path.read_text())
    rows = data["rows"]
    by = {(r["attack"], r["which"]): r for r in rows}
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    lines = [(f"From `{path.relative_to(root)}`: the first {data['num_clouds']} test clouds, victim "
             f"`{data['victim']}` ({data['victim_score']}), {data['device']}, batch {data['batch_size']}, "
             f"{data['threads']} threads; success = the attack's own rule on the undefended victim."), "",
             "| attack | role | before: setting | success | seconds | after: setting | success | seconds |",
             "|---|---|---|---:|---:|---|---:|---:|"]
    for attack in attacks:
        before, after = by.get((attack, "before")), by.get((attack, "after"))
        role = (after or before or {}).get("role", "")
        cells = [f"`{attack}`", role]
        for r in (before, after):
            cells += ["–", "–", "–"] if r is None else [_setting(r["params"]), percent(r["success"]), f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    totals = data.get("total_seconds", {})
    shared = data.get("total_seconds_shared_attacks_after")
    lines += ["", f"Crafting seconds in all: before {totals.get('before', math.nan):.0f}, after "
              f"{totals.get('after', math.nan):.0f} ({shared:.0f} for the attacks both settings have)."
              if shared is not None else ""]
    return "\n".join(lines).rstrip() + "\n"


def markdown_table(rows: list[dict[str, str]]) -> list[str]:
    header = list(rows[0])
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|",
            *("| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows)]


def number(value: Any) -> float:
    """``float(value)``, NaN where it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def ablation_mrpd(root: Path) -> str:
    """The transfer table of ``results/ablations/mrpd/ablation.md`` (written by `bench ablate mrpd`)."""
    path = root / "results" / "ablations" / "mrpd" / "ablation.md"
    if not path.exists():
        return "No committed ablation yet: run `bench ablate mrpd`.\n"
    lines = path.read_text().splitlines()
    intro = next((line for line in lines if line.startswith("Dataset ")), "")
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return f"`{path.relative_to(root)}` holds no table.\n"
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join([f"From `{path.relative_to(root)}`. {intro}", "", *lines[start:end]]) + "\n"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}"


def selection_mrpd(root: Path) -> str:
    """The candidates of ``benchmarks/mrpd_selection.json``: validation accuracy, convergence, teachers."""
    path = root / "benchmarks" / "mrpd_selection.json"
    if not path.exists():
        return "No committed selection yet: run `python benchmarks/mrpd_selection.py`.\n"
    data = json.loads(path.read_text())
    student, sets = data["student"], [k for k in data["student"] if k != "clean"]
    rows = [{"candidate": "undefended student", "val clean": _pct(student["clean"]),
             **{f"val {k}": _pct(student[k]) for k in sets}, "mean robust": _pct(sum(student[k] for k in sets) / len(sets)),
             "epochs (kept)": "–", "prompt drift": "–", "fools (train)": "–", "rescue image / point": "–"}]
    for name, c in data["candidates"].items():
        rescue = (c.get("diagnostics") or {}).get("rescue_rate") or {}
        rows.append({
            "candidate": f"**{name}**" if name == data.get("chosen") else name, "val clean": _pct(c["val_clean"]),
            **{f"val {k}": _pct(c["val_robust"][k]) for k in sets}, "mean robust": _pct(c["val_robust_mean"]),
            "epochs (kept)": f"{c['epochs_run']} ({c['best_epoch'] + 1})",
            "prompt drift": f"{c['drift_at_best']['point']:.2f}" if c["drift_at_best"].get("point") is not None else "–",
            "fools (train)": _pct(c["victim_attack_success"]),
            "rescue image / point": f"{_pct(rescue.get('image/adv'))} / {_pct(rescue.get('point/clean'))}"})
    intro = (
        f"From `{path.relative_to(root)}`: {data['n_val']} validation clouds carved from the training split; accuracy "
        "in percent on the clean clouds and on three training attacks' examples crafted against the undefended "
        f"student; the rule keeps clean accuracy within {100 * data['tolerance']:.0f} points of the student's and "
        "maximises the mean robust accuracy (chosen in bold). 'epochs (kept)': epochs run and the one kept; "
        "'prompt drift': RMS distance of the point prompts from their start at the kept epoch; 'fools (train)': "
        "share of training clouds the candidate's training attack fools; 'rescue': of the student's errors on "
        "those examples, the share the image teacher (on the adversarial cloud) / point teacher (clean cloud) "
        "gets right.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


def mechanisms_mrpd(root: Path) -> str:
    """``results/ablations/mrpd/mechanisms.md`` (written by a full `bench ablate mrpd`)."""
    path = root / "results" / "ablations" / "mrpd" / "mechanisms.md"
    if not path.exists():
        return "No committed per-mechanism verdicts yet: run `bench ablate mrpd` (all variants).\n"
    return f"From `{path.relative_to(root)}`. " + path.read_text()


def teachers_mrpd(root: Path) -> str:
    """The tables of ``results/diagnostics/mrpd/teachers.md`` (written by `bench teachers`)."""
    path = root / "results" / "diagnostics" / "mrpd" / "teachers.md"
    if not path.exists():
        return "No committed teacher-robustness report yet: run `bench teachers`.\n"
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Probes: ")), None)
    if start is None:
        return f"`{path.relative_to(root)}` holds no tables.\n"
    return "\n".join([f"From `{path.relative_to(root)}`.", "", *lines[start:]]).rstrip() + "\n"


def teachers_before_after_mrpd(root: Path) -> str:
    """Per set, the student's accuracy and each teacher's rescue rate in the earlier setting
    (``teachers_twin_setting.json``: teachers trained on the run's split onto the student's
    targets) beside the current one (``teachers.json``), both written by `bench teachers`."""
    folder = root / "results" / "diagnostics" / "mrpd"
    paths = {"before": folder / "teachers_twin_setting.json", "now": folder / "teachers.json"}
    if not all(p.exists() for p in paths.values()):
        return "Needs both `teachers_twin_setting.json` and `teachers.json` under `results/diagnostics/mrpd/`.\n"
    reports = {k: json.loads(p.read_text()) for k, p in paths.items()}
    cells = {k: {(r["set"], r["probe"]): r for r in rep["rows"]} for k, rep in reports.items()}
    probes = [("student", "accuracy", "student acc"), ("image-6v", "rescue", "image-6v rescue"),
              ("point-teacher", "rescue", "point rescue"), ("student+mrpd", "accuracy", "student+mrpd acc")]
    sets = [s for s in dict.fromkeys(r["set"] for r in reports["now"]["rows"]) if (s, "student") in cells["before"]]
    rows = []
    for name in sets:
        row = {"set": name}
        for probe, field, label in probes:
            values = [cells[k].get((name, probe), {}).get(field) for k in ("before", "now")]
            row[label] = " → ".join("–" if v is None else f"{100 * v:.1f}" for v in values)
        rows.append(row)
    intro = (f"From `{paths['before'].relative_to(root)}` (before: teachers and student trained on the run's training "
             f"split, onto the same CLIP targets) and `{paths['now'].relative_to(root)}` (now: pretrained on source "
             "distributions, see above), both written by `bench teachers`; percent, before → now. 'acc': accuracy of "
             "the probe; 'rescue': of the clouds the undefended student gets wrong, the share the teacher gets right. "
             "The attacks are crafted against each setting's own student.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


def training_mrpd(root: Path) -> str:
    """MRPD's and its matched control's per-epoch validation trajectory, from the newest committed
    run record (``results/runs/*.json``) that trained them: the convergence evidence."""
    runs = sorted((root / "results" / "runs").glob("*.json"), reverse=True)
    record, run = None, None
    for path in runs:
        data = json.loads(path.read_text())
        meta = ((data.get("defenses") or {}).get("mrpd") or {}).get("meta") or {}
        if meta.get("history"):
            record, run = data, path
            break
    if record is None or run is None:
        return "No committed run record with MRPD's training history yet: run `bench run --defense mrpd`.\n"
    names = [n for n in ("mrpd", "prompt-at") if ((record["defenses"].get(n) or {}).get("meta") or {}).get("history")]
    metas = {n: record["defenses"][n]["meta"] for n in names}
    epochs = max(len(m["history"]) for m in metas.values())
    rows = []
    for e in range(epochs):
        row = {"epoch": str(e + 1)}
        for n in names:
            hist = metas[n]["history"]
            h = hist[e] if e < len(hist) else None
            kept = metas[n].get("best_epoch") == e
            for field, label in (("val_clean", "clean"), ("val_adv", "adv")):
                value = None if h is None else h.get(field)
                cell = "" if value is None else f"{100 * value:.1f}"
                row[f"{n} {label}"] = f"**{cell}**" if kept and cell else cell
        rows.append(row)
    first = metas[names[0]]
    intro = (f"From `{run.relative_to(root)}` (`bench run`, profile `{record['config'].get('profile')}`): validation "
             "accuracy in percent after each epoch, on the clean validation clouds and on their training-attack "
             f"examples; the kept epoch in bold. Epochs 1-{first.get('clean_epochs')} train on clean clouds, the rest "
             f"on adversarial ones; the undefended student's validation clean accuracy is "
             f"{100 * first['reference_val_clean']:.1f} (an epoch more than "
             f"{100 * (record['config'].get('defenses', {}).get('mrpd', {}).get('clean_tolerance') or 0):.0f} points "
             "below it cannot be kept); training stops after `patience` epochs without a better score.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


def paired_mrpd(root: Path) -> str:
    """MRPD, its matched control and no defense compared cloud by cloud on the committed grid
    (``results/synthshapes.csv``), per protocol: mean robust accuracy (sign-flip permutation test
    of each cloud's share of attacks survived) and worst case (exact McNemar)."""
    import pandas as pd

    from benchmark.ablate import format_p, per_cloud
    from benchmark.stats import mcnemar, paired_permutation

    path = root / "results" / "synthshapes.csv"
    if not path.exists():
        return "No committed grid yet: run `bench run --defense all --attack all`.\n"
    frame = pd.read_csv(path)
    rows = []
    for protocol in ("transfer", "adaptive"):
        part = frame[frame["protocol"] == protocol]
        scores = {d: per_cloud(part, d) for d in ("none", "mrpd", "prompt-at")}
        for a, b in (("mrpd", "none"), ("prompt-at", "none"), ("mrpd", "prompt-at")):
            (sa, wa), (sb, wb) = scores[a], scores[b]
            if sa is None or sb is None or len(sa) != len(sb):
                continue
            mean, worst = paired_permutation(sa, sb), mcnemar(wa, wb)
            rows.append({"protocol": protocol, "comparison": f"`{a}` vs `{b}`", "n": str(mean.n),
                         "mean robust (points)": f"{100 * mean.difference:+.1f}", "p mean": format_p(mean.p_value),
                         "worst case (points)": f"{100 * worst.difference:+.1f}",
                         "p worst": format_p(worst.p_value)})
    if not rows:
        return "The committed grid holds no `mrpd`, `prompt-at` and `none` columns on the same clouds.\n"
    intro = (f"From `{path.relative_to(root)}`: differences on the same clouds, first minus second, in points of "
             "accuracy; mean robust: sign-flip permutation test of each cloud's share of the bounded attacks "
             "survived; worst case: exact McNemar test of surviving clean and every strong attack; `*`: p < 0.05.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


def attack_overhead(root: Path) -> str:
    """The ratios of ``benchmarks/attack_overhead.json``: attack wall time over its model passes."""
    path = root / "benchmarks" / "attack_overhead.json"
    if not path.exists():
        return "No committed measurement yet: run `python benchmarks/attack_overhead.py`.\n"
    data = json.loads(path.read_text())
    attacks = list(dict.fromkeys(a for m in data["models"].values() for a in m["attacks"]))
    rows = []
    for model, entry in data["models"].items():
        row = {"model": f"`{model}` ({entry['iterations']} iterations)"}
        for attack in attacks:
            cell = entry["attacks"].get(attack)
            row[attack] = "–" if cell is None else f"{cell['ratio']:.2f}"
        if "advpc" in entry["attacks"] and entry["attacks"]["advpc"].get("ratio_vs_inherent") is not None:
            row["advpc vs its two passes"] = f"{entry['attacks']['advpc']['ratio_vs_inherent']:.2f}"
        rows.append(row)
    intro = (f"From `{path.relative_to(root)}` (torch {data['torch']}, {data['threads']} threads, batch "
             f"{data['batch']} x {data['points']} points, best of {data['repeats']}): attack wall time / (iterations x "
             "one forward+backward of the model on the same batch).")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


def thread_contention(root: Path) -> str:
    """``benchmarks/thread_contention.json``: one `bench` step beside another CPU job, forced to all
    CPUs vs the launcher's thread choice."""
    path = root / "benchmarks" / "thread_contention.json"
    if not path.exists():
        return "No committed measurement yet: run `python benchmarks/thread_contention.py`.\n"
    data = json.loads(path.read_text())
    rows = [{"run": name, "seconds": f"{run['seconds']:.1f}", "threads (bench info)": run["threads"],
             "other job (products/s)": "–" if run.get("hog_products_per_s") is None else f"{run['hog_products_per_s']:.1f}"}
            for name, run in data["runs"].items()]
    intro = (f"From `{path.relative_to(root)}`: `{data['step']}` on {data['cpus']} CPUs, alone and beside a job "
             f"keeping {data['hog_threads']} threads busy; forced / automatic = {data['ratio_forced_over_automatic']}x.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


#: name -> renderer(project root) -> markdown (ending in a newline). The sections drawn from the
#: committed results' leaderboard (``leaderboard-*``, ``grid-attacks``) are registered by
#: ``benchmark.leaderboard`` when it is imported (``bench docs`` imports it).
GENERATORS: dict[str, Callable[[Path], str]] = {
    "attack-presets": attack_presets,
    "ablation-mrpd": ablation_mrpd,
    "mechanisms-mrpd": mechanisms_mrpd,
    "selection-mrpd": selection_mrpd,
    "teachers-mrpd": teachers_mrpd,
    "teachers-before-after-mrpd": teachers_before_after_mrpd,
    "training-mrpd": training_mrpd,
    "paired-mrpd": paired_mrpd,
    "attack-overhead": attack_overhead,
    "thread-contention": thread_contention,
}


def register_section(name: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    """Decorator: ``fn(project root) -> markdown`` renders the generated section ``name``."""

    def add(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        if name in GENERATORS and GENERATORS[name] is not fn:
            raise ValueError(f"generated section {name!r} is already registered")
        GENERATORS[name] = fn
        return fn

    return add


def render_sections(text: str, root: Path) -> str:
    """``text`` with every generated section rewritten from ``root``'s files (unknown names raise)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in GENERATORS:
            raise KeyError(f"unknown generated section {name!r}; known: {', '.join(GENERATORS)} (the results' "
                           "sections are registered by benchmark.leaderboard: import it first, as `bench docs` does)")
        return match.group(1) + GENERATORS[name](root) + match.group(4)

    return _SECTION.sub(replace, text)


def _documents(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.exists()]


def check_docs(root: str | Path = ".") -> list[str]:
    """The documents whose generated sections differ from their sources (``[]``: none drifted)."""
    root = Path(root)
    return [str(p.relative_to(root)) for p in _documents(root) if render_sections(p.read_text(), root) != p.read_text()]


def write_docs(root: str | Path = ".") -> list[str]:
    """Rewrite the generated sections of README.md and docs/*.md; returns the files changed."""
    root = Path(root)
    changed = []
    for path in _documents(root):
        old = path.read_text()
        new = render_sections(old, root)
        if new != old:
            path.write_text(new)
            changed.append(str(path.relative_to(root)))
    return changed
