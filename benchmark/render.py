"""What the ``bench`` commands print: rich tables and one-line reports built from what the
library (``benchmark.api``) returns. Nothing here computes a result; every function takes
rows or records and a ``rich.console.Console`` and prints.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "BOLD_ROWS",
    "print_ablation",
    "print_attacks",
    "print_cache",
    "print_info",
    "print_models",
    "print_registry",
    "print_replaced",
    "print_sanity",
    "print_summary",
    "wide_console",
]

#: Summary rows that aggregate the attack rows above them (printed bold).
BOLD_ROWS = ("mean over attacks", "worst case", "worst case (strong)", "median min L2")


def wide_console() -> Any:
    """A stdout console at least 120 columns wide (tables wider than a narrow terminal stay whole)."""
    from rich.console import Console

    return Console(width=max(120, Console().width))


def _table(title: str, columns: Iterable[str], right: Iterable[str] = ()) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    right = set(right)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left")
    return table


# ---------------------------------------------------------------------------------------------
# bench run / bench merge: the summary per protocol
# ---------------------------------------------------------------------------------------------
def _accuracy_cell(value: float, attack: str, matches: pd.DataFrame) -> str:
    """A summary cell: ``-`` (missing), a distance (``median min L2``), or accuracy % with the
    95% Wilson interval's half-width when the cell's row is at hand."""
    if pd.isna(value):
        return "-"
    if attack == "median min L2":  # a distance (cloud units), not a percentage
        return f"{value:.3f}"
    if not len(matches):
        return f"{value:.1f}"
    half = 50 * (float(matches["ci_high"].iloc[-1]) - float(matches["ci_low"].iloc[-1]))
    return f"{value:.1f} ±{half:.1f}"


def _success_cell(ok: pd.DataFrame, attack: str) -> str:
    """The attack's success rate on the undefended model (``none``), in %, or ``""``."""
    success = ok[(ok["attack"] == attack) & (ok["defense_name"] == "none")]["attack_success"].dropna()
    return f"{100 * float(success.iloc[-1]):.1f}" if len(success) else ""


def _summary_table(part: pd.DataFrame, title: str) -> Any:
    """One protocol's rich table, or None when its summary is empty."""
    from rich.markup import escape

    from benchmark.store import summary_table, with_labels

    table = summary_table(part)
    if table.empty:
        return None
    ok = with_labels(part[part["status"] == "ok"])
    n = int(ok["n"].iloc[0]) if len(ok) else 0
    out = _table(f"{title} · n={n} · accuracy % (± 95% Wilson half-width)", [])
    out.add_column("attack", no_wrap=True)
    for defense in table.columns:  # escaped: a variant label "[k=3]" is no rich markup
        out.add_column(escape(str(defense)), justify="right", no_wrap=True)
    out.add_column("success on none", justify="right")
    for attack, values in table.iterrows():
        on_attack = ok[ok["attack"] == attack]
        cells = [_accuracy_cell(v, attack, on_attack[on_attack["defense"] == d]) for d, v in values.items()]
        out.add_row(escape(str(attack)), *cells, _success_cell(ok, attack),
                    style="bold" if attack in BOLD_ROWS else None)
    return out


def print_summary(rows: pd.DataFrame | None, console: Any, *, dataset: str, victim: str, profile: str) -> None:
    """Per protocol: rows = clean + attacks + mean + worst case, columns = defenses, cells =
    accuracy % with the 95% Wilson interval's half-width; plus the attack's success on ``none``."""
    if rows is None or len(rows) == 0:
        console.print("no results")
        return
    for protocol, part in rows.groupby("protocol", sort=False):
        table = _summary_table(part, f"{dataset} · {protocol} · victim {victim} · profile {profile}")
        if table is not None:
            console.print(table)


def _text(value: Any) -> str:
    """A stored text cell as a string ("" for a missing value: None or the NaN a CSV read gives)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def print_replaced(replaced: Sequence[tuple[dict[str, Any], str]], new_rows: Sequence[Mapping[str, Any]],
                   console: Any) -> None:
    """Say which stored rows this run replaced, ``(old row, new cell hash)``: the same cells under
    the same variant label (a variant with other parameters than its profile's is a new row,
    never a replacement), and why: the old one failed, the profile's own settings changed, code,
    weights or data changed, or nothing did (``--force``)."""
    if not replaced:
        return
    new_by_hash = {row.get("cell_hash"): row for row in new_rows}

    def params_changed(old: Mapping[str, Any], new_hash: str) -> bool:
        new = new_by_hash.get(new_hash)
        return new is not None and any(_text(old.get(k)) != _text(new.get(k)) for k in ("attack_params", "defense_params"))

    failed = sum(1 for old, _ in replaced if old.get("status") != "ok")
    ok = [(old, h) for old, h in replaced if old.get("status") == "ok"]
    settings = sum(1 for old, h in ok if params_changed(old, h))
    changed = sum(1 for old, h in ok if old.get("cell_hash") != h and not params_changed(old, h))
    same = len(ok) - settings - changed
    cells = ", ".join(f"{old.get('protocol')}/{old.get('defense')}/{old.get('attack')}" for old, _ in replaced[:6])
    more = f" and {len(replaced) - 6} more" if len(replaced) > 6 else ""
    console.print(f"[yellow]replaced {len(replaced)} stored row(s) of the same cells[/] ({cells}{more}): "
                  f"{failed} had failed, {settings} were computed with the profile's earlier settings, {changed} "
                  f"with the same settings before code, weights or data changed, {same} with identical parameters "
                  "(recomputed: --force). Rows with other parameters than their profile's are kept as labelled "
                  "variants, never replaced.")


def print_sanity(rows: pd.DataFrame, console: Any) -> None:
    """The sanity checklist (``benchmark.sanity``) over ``rows`` (every stored row of a dataset), as warnings."""
    from benchmark.sanity import sanity_warnings

    for warning in sanity_warnings(rows):
        console.print(f"[yellow]sanity check[/] {warning}", highlight=False)


# ---------------------------------------------------------------------------------------------
# bench ablate
# ---------------------------------------------------------------------------------------------
def _number_cell(value: float, signed: bool = False) -> str:
    return "-" if pd.isna(value) else (f"{value:+.1f}" if signed else f"{value:.1f}")


def _p_cell(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.2g}" + ("*" if value < 0.05 else "")


def print_ablation(rows: pd.DataFrame, console: Any, *, defense: str, variants: Mapping[str, Any],
                   control: str | None, dataset: str) -> None:
    """Per protocol, the ablation summary (``benchmark.ablate.ablation_summary``) of the finished
    ``rows``: clean, mean robust and worst-case accuracy per variant, the change against the full
    method and its paired p-values (``*``: below 0.05), against ``control`` too when given."""
    from benchmark.ablate import ablation_summary

    p_columns = ("p mean", "p worst", *(("p mean control", "p worst control") if control else ()))
    headers = ("variant", "clean", "mean robust", "worst case", "delta mean", "p mean", "p worst",
               *((f"p mean vs {control}", f"p worst vs {control}") if control else ()), "paper mean", "what")
    for protocol, part in rows[rows["status"] == "ok"].groupby("protocol", sort=False):
        summary = ablation_summary(part, defense, variants, control)
        table = _table(f"{defense} ablations · {dataset} · {protocol} · accuracy %", headers,
                       right=[h for h in headers if h not in ("variant", "what")])
        for _, r in summary.iterrows():
            cells = [_number_cell(r[c], signed=c == "delta mean")
                     for c in ("clean", "mean robust", "worst case", "delta mean")]
            cells += [_p_cell(r[c]) for c in p_columns]
            table.add_row(str(r["variant"]), *cells, _number_cell(r["paper mean"]), str(r["what"]))
        console.print(table)


def print_variants(variants: Mapping[str, Any]) -> None:
    """``bench ablate <defense> --list``: one line per declared variant (name, changes, what)."""
    for variant, ablation in variants.items():
        changes = ", ".join(f"{k}={v}" for k, v in ablation.changes.items()) or "-"
        print(f"{variant:18s} {changes:45s} {ablation.what}")


# ---------------------------------------------------------------------------------------------
# bench train / bench attack
# ---------------------------------------------------------------------------------------------
def print_models(models: pd.DataFrame, console: Any, *, dataset: str, n_test: int) -> None:
    """``bench train``: one line per model (``benchmark.api.train``'s rows)."""
    table = _table(f"models on {dataset} ({n_test} test clouds)",
                   ("model", "params", "score", "seconds", "source", "weights sha256"))
    for _, m in models.iterrows():
        table.add_row(m["model"], f"{m['params']:,}", m["score"], f"{m['seconds']}", m["source"],
                      m["weights_sha256"][:12])
    console.print(table)


def _mean(value: float, digits: int) -> str:
    return "-" if pd.isna(value) else f"{value:.{digits}f}"


def print_attacks(report: Any, console: Any) -> None:
    """``bench attack``: success, accuracy and mean distances per attack (``benchmark.api.attack``'s report)."""
    table = _table(f"attacks on {report.model} ({report.n} test clouds, clean accuracy "
                   f"{100 * report.clean_accuracy:.1f}%)",
                   ("attack", "success", "accuracy", "L2", "Chamfer", "Hausdorff", "seconds", "source"))
    for _, r in report.rows.iterrows():
        table.add_row(r["attack"], f"{100 * r['success']:.1f}%", f"{100 * r['accuracy']:.1f}%", _mean(r["l2"], 4),
                      _mean(r["chamfer"], 5), _mean(r["hausdorff"], 5), f"{r['seconds']:.1f}", r["source"])
    console.print(table)


# ---------------------------------------------------------------------------------------------
# bench list / info / cache
# ---------------------------------------------------------------------------------------------
def _format_defaults(defaults: Mapping[str, Any], skip: Iterable[str] = (), width: int = 70) -> str:
    skip = set(skip)
    parts = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in defaults.items() if k not in skip]
    text = ", ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def print_registry(kind: str, registry: Any, console: Any, skip: Iterable[str] = ()) -> None:
    """``bench list KIND``: name, description and key defaults (less ``skip``) of every entry."""
    from rich.table import Table

    table = Table(title=f"{kind} ({len(registry)} registered)", title_justify="left")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("description")
    table.add_column("key defaults", style="dim")
    for entry in registry.entries():
        table.add_row(entry.name, entry.description, _format_defaults(dict(entry.defaults), skip))
    console.print(table)


def print_info(facts: Sequence[tuple[str, str]], console: Any) -> None:
    """``bench info``: one ``what  value`` line per fact."""
    from rich.table import Table

    table = Table(title="PCRB environment", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for what, value in facts:
        table.add_row(what, value)
    console.print(table)


def print_cache(root: Path, entries: Sequence[Mapping[str, Any]], console: Any) -> None:
    """``bench cache ls``: kind, name, size and creation time of every entry."""
    table = _table(f"cache {root}: {len(entries)} entries, {sum(e['bytes'] for e in entries) / 2**20:.1f} MiB",
                   ("kind", "entry", "MiB", "created"), right=("MiB",))
    for e in entries:
        created = "partial (a killed write; bench cache clear removes it)" if e.get("partial") else e["created"]
        table.add_row(e["kind"], e["name"], f"{e['bytes'] / 2**20:.2f}", created)
    console.print(table)
