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

__all__ = ["GENERATORS", "check_docs", "render_sections", "write_docs"]

_SECTION = re.compile(r"(<!-- begin generated: ([a-z0-9-]+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.DOTALL)


def _pct(value: Any) -> str:
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
            cells += ["–", "–", "–"] if r is None else [_setting(r["params"]), _pct(r["success"]), f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    totals = data.get("total_seconds", {})
    shared = data.get("total_seconds_shared_attacks_after")
    lines += ["", f"Crafting seconds in all: before {totals.get('before', math.nan):.0f}, after "
              f"{totals.get('after', math.nan):.0f} ({shared:.0f} for the attacks both settings have)."
              if shared is not None else ""]
    return "\n".join(lines).rstrip() + "\n"


def _markdown_table(rows: list[dict[str, str]]) -> list[str]:
    header = list(rows[0])
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|",
            *("| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows)]


def _ranking(root: Path, protocol: str) -> str:
    from benchmark.leaderboard import leaderboard_rows

    rows = leaderboard_rows(root / "results", dataset="synthshapes", profile="default", protocol=protocol)
    if not rows:
        return (f"No committed `default` results under the {protocol} protocol yet: run "
                f"`bench run --protocol {protocol} --defense all --attack all`.\n")
    return "\n".join(_markdown_table(rows)) + "\n"


def leaderboard_headline(root: Path) -> str:
    """The transfer section's ranking of the committed default grid (``results/synthshapes.csv``)."""
    return _ranking(root, "transfer")


def leaderboard_adaptive(root: Path) -> str:
    """The adaptive section's ranking of the committed default grid (``results/synthshapes.csv``)."""
    return _ranking(root, "adaptive")


def grid_attacks(root: Path) -> str:
    """Per attack of the committed default transfer grid: role, success on the undefended
    victim by the attack's own rule, the victim's accuracy and the crafting seconds."""
    from benchmark.leaderboard import CLEAN
    from benchmark.store import ResultStore

    frame = ResultStore(root / "results").read()
    if frame.empty:
        return "No committed `default` results yet: run `bench run --defense all --attack all`.\n"
    keep = ((frame["dataset"] == "synthshapes") & (frame["profile"] == "default") & (frame["protocol"] == "transfer")
            & (frame["defense"] == "none") & (frame["status"] == "ok") & (frame["attack"] != CLEAN))
    for column in ("defense_variant", "attack_variant"):
        if column in frame.columns:
            keep &= frame[column].fillna("").astype(str) == ""
    rows = frame[keep]
    if rows.empty:
        return "No committed `default` transfer rows for `none` yet.\n"
    entries = [{"attack": str(r["attack"]), "role": str(r.get("attack_role", "") or ""),
                "success": _num(r["attack_success"]), "accuracy": _num(r["accuracy"]),
                "seconds": _num(r["seconds_attack"])} for _, r in rows.iterrows()]
    order = {"strong": 0, "min-norm": 1, "weak": 2}
    entries.sort(key=lambda e: (order.get(e["role"], 3), -(0.0 if math.isnan(e["success"]) else e["success"]), e["attack"]))
    table = [{"attack": f"`{e['attack']}`", "role": e["role"], "success on `none`": _pct(e["success"]),
              "`none` accuracy": _pct(e["accuracy"]), "crafting seconds": f"{e['seconds']:.0f}"} for e in entries]
    short = [f"`{e['attack']}` ({_pct(e['success'])})" for e in entries
             if e["role"] == "strong" and not math.isnan(e["success"]) and e["success"] < 0.9]
    lines = [(f"From `results/synthshapes.csv` (default profile, transfer, n = {int(rows['n'].iloc[0])}, "
             "the undefended victim; success by each attack's own rule):"), "", *_markdown_table(table), "",
             "These rows carry no attack roles (written before roles existed)."
             if not any(e["role"] for e in entries) else
             "Every strong attack reaches 90% success on `none`." if not short else
             f"Strong attacks below the 90% bar on `none`: {', '.join(short)}."]
    return "\n".join(lines) + "\n"


def _num(value: Any) -> float:
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


#: name -> renderer(project root) -> markdown (ending in a newline)
GENERATORS: dict[str, Callable[[Path], str]] = {
    "attack-presets": attack_presets,
    "leaderboard-headline": leaderboard_headline,
    "leaderboard-adaptive": leaderboard_adaptive,
    "grid-attacks": grid_attacks,
    "ablation-mrpd": ablation_mrpd,
}


def render_sections(text: str, root: Path) -> str:
    """``text`` with every generated section rewritten from ``root``'s files (unknown names raise)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in GENERATORS:
            raise KeyError(f"unknown generated section {name!r}; known: {', '.join(GENERATORS)}")
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
