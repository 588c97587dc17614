"""Sanity checks over a results table: signs that an evaluation is too weak to mean anything.

Carlini et al., "On Evaluating Adversarial Robustness" (2019), list what a reader should check
before believing a robustness number. The ones a results table can answer on its own:

    sanity_warnings(rows) -> list[str]        # one readable line per finding, [] when all is well

1. **weak attack** — a gradient attack (``pgd``, ``cw``) at paper strength succeeds on fewer
   than 90% of the clouds of the *undefended* model it was crafted against: the attack does not
   work, so no defense's accuracy under it means anything. "Paper strength" = the row's profile
   is ``paper``, or (``paper_params``) its attack parameters hold the paper's values.
2. **budget sweep** — robust accuracy rises as an attack's budget grows. Rows carry no budget
   column: the budget is read from ``attack_params`` (JSON). Rows that differ in exactly one
   strength knob (:data:`STRENGTH_KNOBS`: budget, steps, iterations, dropped/added points...) and
   agree on everything else form a sweep, e.g. the rows of every
   ``<results>/sweeps/attacks.pgd.budget/<value>/`` folder of ``bench run --sweep``
   concatenated. :func:`sweep_warnings` checks one sweep given as ``(budget, accuracy)`` pairs.
3. **gradient masking** — a defense's adaptive accuracy (attacked end to end) is far above its
   transfer or black-box accuracy under the same attack: attacking the defense itself should do
   at least as well as examples crafted on another model, so the adaptive attack is broken
   (gradient masking, missing BPDA/EOT, too few steps).
4. **attack helps** — accuracy under an attack is far above clean accuracy on the very model the
   attack was crafted against: the attack moves the wrong way (loss sign, targets).
5. **min-norm attack** — a minimum-norm attack (``attack_role == "min-norm"``) that does not
   fool every cloud of the undefended model, or that reports for some cloud a minimal L2
   distance above the budget of a bounded L2 attack that fooled it (it missed a closer
   example). Check 1 also covers every attack tagged ``strong`` in every profile but
   ``smoke``: they must fool >= 90% of the undefended model's clouds at their profile's
   settings.

Accuracies are fractions in ``[0, 1]`` (the store's ``accuracy`` / ``attack_success``
columns); thresholds are fractions too (``0.10`` = 10 points). Only rows with
``status == "ok"`` count. Floor 0: pandas and the standard library only.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from benchmark.store import CLEAN

__all__ = ["STRENGTH_KNOBS", "STRONG_ATTACKS", "sanity_warnings", "sweep_warnings"]

#: Attacks that must nearly always succeed on an undefended model at paper budgets.
STRONG_ATTACKS: tuple[str, ...] = ("pgd", "cw")

#: Attack parameters where a larger value means a stronger attack (a sweep over one of them must
#: not raise robust accuracy).
STRENGTH_KNOBS: tuple[str, ...] = (
    "budget", "steps", "num_iter", "binary_steps", "restarts", "num_drop", "num_add", "clip",
)

UNDEFENDED = "none"


def sanity_warnings(
    rows: pd.DataFrame,
    *,
    min_success: float = 0.90,
    sweep_tolerance: float = 0.02,
    gap: float = 0.10,
    strong_attacks: Sequence[str] = STRONG_ATTACKS,
    profiles: Sequence[str] = ("paper",),
    paper_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """The sanity warnings of a results table (``ResultStore.read()`` columns), one line each.

    Args:
        rows: result rows; needs ``dataset, profile, protocol, victim, source, defense, attack,
            seed, n, status, accuracy, attack_success, attack_params`` (missing columns disable
            the checks that need them).
        min_success: check 1's threshold on the success rate of a strong attack.
        sweep_tolerance: check 2 flags a rise of robust accuracy above the lowest accuracy at
            any smaller budget by more than this.
        gap: checks 3 and 4 flag an accuracy this far above the reference one.
        strong_attacks: the attacks check 1 applies to.
        profiles: profiles whose attacks run at paper budgets.
        paper_params: optionally, per attack, the parameter values that make a row "at paper
            budgets" in any profile (all must match the row's ``attack_params``).

    Returns:
        Readable one-line warnings, each starting with its check's name (``weak attack:``,
        ``budget sweep:``, ``gradient masking:``, ``attack helps:``), naming the defense, attack
        and numbers and what to check; in a stable order.
    """
    ok = _ok_rows(rows)
    if ok.empty:
        return []
    out = _weak_attacks(ok, min_success, strong_attacks, profiles, paper_params or {})
    out += _min_norm_checks(ok, min_success)
    out += _budget_sweeps(ok, sweep_tolerance)
    out += _gradient_masking(ok, gap)
    out += _attacks_that_help(ok, gap)
    return out


def sweep_warnings(points: Iterable[tuple[float, float]], *, what: str = "attack",
                   tolerance: float = 0.02) -> list[str]:
    """Check one budget sweep: robust accuracy must not rise as the budget grows.

    Args:
        points: ``(budget, robust accuracy in [0, 1])`` pairs in any order; repeated budgets are
            averaged, non-finite values skipped.
        what: names the sweep in the message (e.g. ``"sor under pgd (synthshapes, transfer)"``).
        tolerance: a rise above the lowest accuracy at any smaller budget by more than this is
            flagged (absorbs sampling noise).

    Returns:
        ``[]``, or one line naming the largest rise and what to check.
    """
    by_budget: dict[float, list[float]] = defaultdict(list)
    for budget, accuracy in points:
        budget, accuracy = float(budget), float(accuracy)
        if math.isfinite(budget) and math.isfinite(accuracy):
            by_budget[budget].append(accuracy)
    curve = [(b, sum(a) / len(a)) for b, a in sorted(by_budget.items())]
    worst: tuple[float, float, float, float] | None = None  # (rise, low budget, its accuracy, budget)
    lowest = None
    for budget, accuracy in curve:
        if lowest is not None and accuracy - lowest[1] > tolerance:
            rise = accuracy - lowest[1]
            if worst is None or rise > worst[0] + 1e-12:
                worst = (rise, lowest[0], lowest[1], budget)
        if lowest is None or accuracy < lowest[1]:
            lowest = (budget, accuracy)
    if worst is None:
        return []
    rise, low_budget, low_acc, budget = worst
    listing = ", ".join(f"{b:g}: {100 * a:.1f}%" for b, a in curve)
    return [
        (f"budget sweep: {what}: robust accuracy rises with the budget, {100 * low_acc:.1f}% at {low_budget:g} "
         f"-> {100 * (low_acc + rise):.1f}% at {budget:g} ({listing}); a stronger attack can only lower accuracy, "
         "so the attack is not converging: check its steps and step size, and look for gradient masking")
    ]


# --------------------------------------------------------------------------------------------- helpers


def _ok_rows(rows: pd.DataFrame) -> pd.DataFrame:
    if rows is None or len(rows) == 0:
        return pd.DataFrame()
    frame = rows.copy()
    if "status" in frame.columns:
        frame = frame[frame["status"].astype(str) == "ok"]
    for column in ("dataset", "profile", "protocol", "victim", "source", "defense", "attack", "attack_params",
                   "victim_hash", "dataset_fingerprint"):
        if column not in frame.columns:
            frame[column] = ""
        frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
    for column in ("seed", "n", "accuracy", "attack_success"):
        if column not in frame.columns:
            frame[column] = math.nan
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame.reset_index(drop=True)


def _params(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _where(row: Mapping[str, Any], *, protocol: bool = True) -> str:
    """``(dataset, protocol, victim V, profile P, n=N)`` for messages."""
    parts = [str(row["dataset"])] + ([str(row["protocol"])] if protocol else [])
    parts += [f"victim {row['victim']}", f"profile {row['profile']}", f"n={_int(row['n'])}"]
    return "(" + ", ".join(parts) + ")"


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ the checks


def _weak_attacks(ok: pd.DataFrame, min_success: float, strong: Sequence[str], profiles: Sequence[str],
                  paper_params: Mapping[str, Mapping[str, Any]]) -> list[str]:
    out, seen = [], set()
    roles = ok["attack_role"].fillna("").astype(str) if "attack_role" in ok.columns else pd.Series("", index=ok.index)
    # the attacks named here (at paper budgets) and, in every profile but smoke, those tagged strong
    named = ok["attack"].isin(list(strong)) | ((roles == "strong") & (ok["profile"] != "smoke"))
    rows = ok[(ok["defense"] == UNDEFENDED) & named].copy()
    rows["_tagged"] = roles.loc[rows.index] == "strong"
    rows["_order"] = rows["protocol"].map({"transfer": 0, "blackbox": 1, "adaptive": 2}).fillna(3)
    for _, row in rows.sort_values(["dataset", "profile", "victim", "attack", "_order"], kind="stable").iterrows():
        params = _params(row["attack_params"])
        wanted = paper_params.get(row["attack"])
        at_paper = row["profile"] in profiles or bool(row["_tagged"]) or (
            wanted is not None and all(params.get(k) == v for k, v in wanted.items()))
        success = row["attack_success"]
        if not at_paper or not _finite(success) or success >= min_success:
            continue
        # transfer and adaptive rows of the undefended model share one crafted set: report it once
        key = (row["dataset"], row["profile"], row["victim"], row["source"], row["attack"], row["attack_params"],
               row["seed"], row["n"])
        if key in seen:
            continue
        seen.add(key)
        setting = "as a strong attack at its profile's settings" if row["_tagged"] else "at paper budgets"
        out.append(
            f"weak attack: {row['attack']} succeeds on only {_pct(success)} of the clouds of the undefended "
            f"{row['source'] or row['victim']} {_where(row)}, below {_pct(min_success)} {setting}; robust "
            "accuracy under a failing attack means nothing: check its steps, step size and loss, and that "
            "gradients reach the input"
        )
    return out


def _min_norm_checks(ok: pd.DataFrame, min_success: float, slack: float = 0.02) -> list[str]:
    """A minimum-norm attack must fool (nearly) every cloud of the model it attacks, and no
    bounded L2 attack may fool a cloud within a budget below that cloud's minimal distance
    (then the minimum-norm attack missed a closer adversarial example)."""
    from benchmark.store import decode_distances, decode_outcomes

    if "attack_role" not in ok.columns or "distances" not in ok.columns:
        return []
    out = []
    roles = ok["attack_role"].fillna("").astype(str)
    own = ok[(ok["defense"] == UNDEFENDED) & (roles == "min-norm")]
    for _, row in own.sort_values(["dataset", "profile", "protocol", "victim", "attack"], kind="stable").iterrows():
        success = row["attack_success"]
        if _finite(success) and success < min_success and row["profile"] != "smoke":
            out.append(f"min-norm attack: {row['attack']} fools only {_pct(success)} of the clouds of the undefended "
                       f"{row['source'] or row['victim']} {_where(row)}; an unbounded attack should fool every cloud: "
                       "give it more steps or a larger step")
        if not isinstance(row.get("distances"), str) or row["protocol"] != "transfer":
            continue
        distances = decode_distances(row["distances"])
        same = ok[(ok["dataset"] == row["dataset"]) & (ok["profile"] == row["profile"]) & (ok["victim"] == row["victim"])
                  & (ok["protocol"] == "transfer") & (ok["defense"] == UNDEFENDED) & (ok["attack"] != row["attack"])
                  & (ok["n"] == row["n"])]
        for _, other in same.sort_values("attack", kind="stable").iterrows():
            params = _params(other["attack_params"])
            budget = _budget_of(params)
            if params.get("norm", "l2") != "l2" or budget <= 0 or not isinstance(other["outcomes"], str):
                continue
            fooled = ~decode_outcomes(other["outcomes"])
            if fooled.shape != distances.shape:
                continue
            closer = fooled & (distances > budget * (1 + slack))
            if closer.mean() > slack:
                out.append(f"min-norm attack: {other['attack']} fools {_pct(closer.mean())} of the clouds of the "
                           f"undefended {row['victim']} {_where(row)} within L2 {budget:.3g}, below the distance "
                           f"{row['attack']} found for them: {row['attack']} misses closer examples; give it more steps")
    return out


def _budget_of(params: Mapping[str, Any]) -> float:
    """An attack's absolute global L2 budget from its parameters (0 when it has none, or when it
    scales with the cloud size, which the row does not record)."""
    budget = params.get("budget")
    if not _finite(budget) or params.get("budget_scale", "absolute") != "absolute":
        return 0.0
    return float(budget)


def _budget_sweeps(ok: pd.DataFrame, tolerance: float) -> list[str]:
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    firsts: dict[tuple, Mapping[str, Any]] = {}
    attacked = ok[(ok["attack"] != CLEAN) & ok["accuracy"].map(_finite)]
    for _, row in attacked.iterrows():
        params = _params(row["attack_params"])
        for knob in STRENGTH_KNOBS:
            value = params.get(knob)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            rest = json.dumps({k: v for k, v in params.items() if k != knob}, sort_keys=True, default=str)
            key = (row["dataset"], row["profile"], row["protocol"], row["victim"], row["defense"], row["attack"],
                   _int(row["seed"]), _int(row["n"]), knob, rest)
            groups[key].append((float(value), float(row["accuracy"])))
            firsts.setdefault(key, row)
    out = []
    for key in sorted(groups):
        points = groups[key]
        if len({b for b, _ in points}) < 2:
            continue
        row = firsts[key]
        what = f"{row['defense']} under {row['attack']} as {key[8]} grows {_where(row)}"
        out += sweep_warnings(points, what=what, tolerance=tolerance)
    return out


def _gradient_masking(ok: pd.DataFrame, gap: float) -> list[str]:
    cells: dict[tuple, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    rows = ok[(ok["defense"] != UNDEFENDED) & (ok["attack"] != CLEAN) & ok["accuracy"].map(_finite)]
    for _, row in rows.iterrows():
        # same victim weights and clouds: rows left from an earlier victim are never paired with new ones
        key = (row["dataset"], row["profile"], row["victim"], row["victim_hash"], row["dataset_fingerprint"],
               row["defense"], row["attack"], row["attack_params"], _int(row["seed"]), _int(row["n"]))
        cells[key][row["protocol"]] = row
    out = []
    for key in sorted(cells):
        by_protocol = cells[key]
        adaptive = by_protocol.get("adaptive")
        others = [(p, r) for p, r in sorted(by_protocol.items()) if p in ("transfer", "blackbox")]
        if adaptive is None or not others:
            continue
        protocol, weakest = min(others, key=lambda item: float(item[1]["accuracy"]))
        difference = float(adaptive["accuracy"]) - float(weakest["accuracy"])
        if difference <= gap:
            continue
        out.append(
            f"gradient masking: {adaptive['defense']} under {adaptive['attack']} {_where(adaptive, protocol=False)}: "
            f"adaptive accuracy {_pct(adaptive['accuracy'])} is {100 * difference:.1f} points above {protocol} "
            f"accuracy {_pct(weakest['accuracy'])}; attacking the defense end to end should do at least as well: "
            "suspect gradient masking or a broken adaptive attack, check BPDA/EOT (--eot) and the attack's steps"
        )
    return out


def _attacks_that_help(ok: pd.DataFrame, gap: float) -> list[str]:
    """Accuracy under an attack far above clean accuracy, on the model the attack was crafted against."""
    clean: dict[tuple, float] = {}
    context = ["dataset", "profile", "protocol", "victim", "victim_hash", "dataset_fingerprint", "defense", "seed", "n"]
    for _, row in ok[(ok["attack"] == CLEAN) & ok["accuracy"].map(_finite)].iterrows():
        clean[tuple(str(row[c]) for c in context)] = float(row["accuracy"])
    out = []
    attacked = ok[(ok["attack"] != CLEAN) & ok["accuracy"].map(_finite)]
    own_source = (attacked["protocol"] == "adaptive") | (
        (attacked["protocol"] == "transfer") & (attacked["defense"] == UNDEFENDED))
    for _, row in attacked[own_source].sort_values(context + ["attack"], kind="stable").iterrows():
        reference = clean.get(tuple(str(row[c]) for c in context))
        if reference is None or float(row["accuracy"]) - reference <= gap:
            continue
        out.append(
            f"attack helps: {row['defense']} is more accurate under {row['attack']} ({_pct(row['accuracy'])}) than on "
            f"clean clouds ({_pct(reference)}) {_where(row)}, although the attack was crafted against it; the attack "
            "moves the wrong way: check its loss sign and targets"
        )
    return out
