"""The skill guard: which model (or none) forecasts each regime's bars.

A model trades only when it beat the zero forecast on its validation windows (the training
span's tail, never test bars). ``skill_verdict`` is the one rule; ``route_regimes`` the one
policy; the Forecaster applies both, so batch, per-bar and walk-forward paths share them.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from bt_lstm.config import DEFAULT_SKILL_P, NO_SKILL_POLICIES

SKILL = "skill"
NO_SKILL = "no_skill"
FLAT = "flat:no_skill"  # the route of a regime that holds no position
SKILL_FIELDS = ("val_mse", "zero_mse", "mean_mse", "ratio", "dm_p", "best_epoch", "verdict")


def skill_verdict(record: Mapping[str, Any], skill_p: float = DEFAULT_SKILL_P) -> str:
    """``skill`` when the validation MSE is below the zero forecast's with one-sided
    Diebold–Mariano p <= ``skill_p`` and the best epoch is after 0; else ``no_skill``.

    Notes
    -----
    Best epoch 0 means no epoch beat the untrained network: its weights are the random
    initial ones, so it is ``no_skill`` whatever its ratio. A missing or NaN statistic is
    ``no_skill`` (nothing shown, nothing traded).
    """
    ratio, p = record.get("ratio"), record.get("dm_p")
    if int(record.get("best_epoch", 0)) < 1 or ratio is None or p is None:
        return NO_SKILL
    ratio, p = float(ratio), float(p)
    if not (math.isfinite(ratio) and math.isfinite(p)):
        return NO_SKILL
    return SKILL if ratio < 1.0 and p <= skill_p else NO_SKILL


def route_regimes(regime_models: Mapping[int, str], skill: Mapping[str, Mapping[str, Any]],
                  no_skill: str = "flat", skill_p: float = DEFAULT_SKILL_P) -> dict[int, str]:
    """Regime -> the model name that forecasts it, or ``FLAT`` (forecast 0, no position).

    ``no_skill``: ``flat`` sends a regime whose model has no skill to FLAT; ``pooled`` to the
    pooled model when there is one with skill, else FLAT; ``trade`` keeps every model.
    """
    if no_skill not in NO_SKILL_POLICIES:
        raise ValueError(f"no_skill={no_skill!r}: use one of {', '.join(NO_SKILL_POLICIES)}")
    if no_skill == "trade":
        return dict(regime_models)

    def has_skill(name: str) -> bool:
        return name in skill and skill_verdict(skill[name], skill_p) == SKILL

    routes = {}
    for regime, name in regime_models.items():
        if has_skill(name):
            routes[regime] = name
        elif no_skill == "pooled" and has_skill("pooled"):
            routes[regime] = "pooled"
        else:
            routes[regime] = FLAT
    return routes


def describe_route(regime_label: str, name: str, record: Mapping[str, Any] | None, route: str,
                   skill_p: float = DEFAULT_SKILL_P) -> str:
    """One terminal line, e.g. ``sideways: no validated skill (val MSE 1.013× zero, p 0.41)
    → flat``."""
    if record is None:
        return f"{regime_label}: {name} has no skill record → {_route_word(route)}"
    verdict = skill_verdict(record, skill_p)
    ratio, p = _num(record.get("ratio"), ".3f"), _num(record.get("dm_p"), ".2g")
    stats = f"val MSE {ratio}× zero, p {p}"
    if int(record.get("best_epoch", 0)) < 1:
        stats += ", best epoch 0: untrained weights"
    what = "skill" if verdict == SKILL else "no validated skill"
    pooled = " (pooled model)" if name == "pooled" else ""
    return f"{regime_label}: {what}{pooled} ({stats}) → {_route_word(route)}"


def _route_word(route: str) -> str:
    return "flat" if route == FLAT else f"trade {route}"


def _num(value: Any, spec: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return format(v, spec) if math.isfinite(v) else "n/a"
