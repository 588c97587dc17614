"""MRPD's generated sections (docs/mrpd.md): its recipe selection, training trajectory, paired
comparison with its matched control, ablation and per-mechanism verdicts, and whether the
teachers see through the attacks; each rendered from a file `bench` or a benchmark script wrote."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark.docs.render import markdown_table, register_section


@register_section("ablation-mrpd")
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


def _weights(sha: str | None) -> str:
    """`` (weights `abcdef12`)`` for a recorded weights hash, else nothing (files older than the record)."""
    return f" (weights `{sha[:8]}`)" if sha else ""


@register_section("selection-mrpd")
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
        f"student{_weights(data.get('student_weights_sha256'))}; the rule keeps clean accuracy within {100 * data['tolerance']:.0f} points of the student's and "
        "maximises the mean robust accuracy (chosen in bold). 'epochs (kept)': epochs run and the one kept; "
        "'prompt drift': RMS distance of the point prompts from their start at the kept epoch; 'fools (train)': "
        "share of training clouds the candidate's training attack fools; 'rescue': of the student's errors on "
        "those examples, the share the image teacher (on the adversarial cloud) / point teacher (clean cloud) "
        "gets right.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


@register_section("mechanisms-mrpd")
def mechanisms_mrpd(root: Path) -> str:
    """``results/ablations/mrpd/mechanisms.md`` (written by a full `bench ablate mrpd`)."""
    path = root / "results" / "ablations" / "mrpd" / "mechanisms.md"
    if not path.exists():
        return "No committed per-mechanism verdicts yet: run `bench ablate mrpd` (all variants).\n"
    return f"From `{path.relative_to(root)}`. " + path.read_text()


@register_section("teachers-mrpd")
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


@register_section("teachers-before-after-mrpd")
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
             "distributions, see `docs/models.md`), both written by `bench teachers`; percent, before → now. 'acc': accuracy of "
             "the probe; 'rescue': of the clouds the undefended student gets wrong, the share the teacher gets right. "
             "The attacks are crafted against each setting's own student.")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


@register_section("training-mrpd")
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


@register_section("paired-mrpd")
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


@register_section("teacher-cache")
def teacher_cache(root: Path) -> str:
    """``benchmarks/teacher_cache.json``: an MRPD epoch with the teachers' features cached (warm)
    vs the teachers running every epoch (cold), with the embedded and a realistic image teacher."""
    path = root / "benchmarks" / "teacher_cache.json"
    if not path.exists():
        return "No committed measurement yet: run `python benchmarks/teacher_cache.py`.\n"
    data = json.loads(path.read_text())
    rows = [{"what": "MRPD epoch, teacher features cached (warm)", "seconds": f"{data['warm_epoch_s']:.1f}",
             "cold / warm": "1"},
            {"what": "embedded image teacher, one pass over the training clouds", "seconds": f"{data['image_teacher_pass_s']:.1f}",
             "cold / warm": ""},
            {"what": "point teacher, one pass", "seconds": f"{data['point_teacher_pass_s']:.1f}", "cold / warm": ""},
            {"what": "MRPD epoch, embedded teachers running (cold)", "seconds": f"{data['cold_epoch_s']:.1f}",
             "cold / warm": f"**{data['ratio']:.1f}x**"}]
    big = data.get("big_image_teacher")
    if big:
        rows += [{"what": f"{big['arch']} image tower ({big['parameters_m']:.0f} M parameters, random weights, "
                          f"{big['pixels']} px), one pass", "seconds": f"{big['pass_s']:.1f}", "cold / warm": ""},
                 {"what": f"MRPD epoch, with the {big['arch']} image teacher running (cold)",
                  "seconds": f"{big['cold_epoch_s']:.1f}", "cold / warm": f"**{big['ratio']:.1f}x**"}]
    rows.append({"what": "loading every cached feature (memory-map + checksum)", "seconds": f"{data['feature_load_s']:.3f}",
                 "cold / warm": ""})
    intro = (f"From `{path.relative_to(root)}` (profile `{data['profile']}`, torch {data['torch']}, {data['threads']} "
             f"threads): {data['training_clouds']} training clouds of {data['points']} points, an epoch's wall time "
             "with the teachers' embeddings at hand and with the teachers run every epoch (as the released code does).")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"
