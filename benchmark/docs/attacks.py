"""Generated sections of docs/attacks.md: every attack's settings per profile (read from the
attack registry and the shipped profiles, so the table changes when the code does) and what
the `default` presets changed (``benchmarks/attack_presets_default.json``)."""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

from benchmark.docs.render import markdown_table, percent, register_section

#: Parameters that say what an attack is (shown in the `paper` column even where no profile changes them).
_DEFINING = ("budget", "budget_scale", "norm", "loss", "kappa", "targeted", "steps", "num_iter", "binary_steps",
             "restarts", "num_add", "num_drop", "clip", "gamma", "num_low", "k")
#: The shipped profiles whose attack settings the table compares with the registered defaults.
_PROFILES = ("paper", "ifd", "default")


def _setting(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items()) or "paper"


@register_section("attack-settings")
def attack_settings(root: Path) -> str:
    """Per registered attack of ours (plug-ins excluded): its role, its registered defaults (the
    published settings) for the parameters that define it or that a profile changes, and, per
    shipped profile, the values that profile runs instead (after its ``base:`` profiles are
    merged in). Rendered from the code, not from ``root``."""
    from benchmark.core.config import load_profile
    from benchmark.core.registry import ATTACKS

    importlib.import_module("attacks")  # registers our attacks (plug-ins are not the project's docs)
    settings = {p: load_profile(p).get("attacks") or {} for p in _PROFILES}
    rows = []
    for entry in ATTACKS.entries():
        if not entry.module.startswith("attacks"):
            continue
        changed = {p: {k: v for k, v in settings[p].get(entry.name, {}).items() if entry.defaults.get(k) != v}
                   for p in _PROFILES}
        keys = {k for diff in changed.values() for k in diff}
        shown = {k: v for k, v in entry.defaults.items() if k in keys or k in _DEFINING}
        rows.append({"attack": f"`{entry.name}`", "role": entry.tags[0] if entry.tags else "weak",
                     "what": entry.description.rstrip("."), "registered defaults": _setting(shown),
                     **{f"`{p}` runs instead": _setting(changed[p]) if changed[p] else "–" for p in _PROFILES}})
    intro = ("From the attack registry (`attacks/`) and the shipped profiles (`benchmark/core/profiles/`, each "
             "merged with its `base:`): each attack's registered defaults, the published settings, for the "
             "parameters that define it or that a profile changes, and the values each profile runs instead "
             "(`–`: the registered defaults; `bench list attacks` shows every parameter).")
    return "\n".join([intro, "", *markdown_table(rows)]) + "\n"


@register_section("attack-presets")
def attack_presets(root: Path) -> str:
    """Success on the undefended victim and crafting seconds per attack, before and after
    (``benchmarks/attack_presets_default.json``)."""
    path = root / "benchmarks" / "attack_presets_default.json"
    if not path.exists():
        return "No committed measurement yet: run `python benchmarks/attack_presets.py --check default`.\n"
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
