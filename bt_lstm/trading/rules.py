"""The decision rules every path shares: forecast -> signal, and the size of the order that
moves a position to a side. Pure Python: no backtrader, no pandas.

``strategies.lstm_strategy.RegimeLSTMStrategy`` (Backtrader), the live engine and the RL
environment (through ``Account``) all call these, so their decisions cannot drift apart.
"""
from __future__ import annotations

import math


def decide_signal(forecast: float, threshold: float, long_only: bool) -> int:
    """+1 long when the forecast exceeds ``threshold``, -1 short below ``-threshold`` (unless
    ``long_only``), else 0; 0 too when the forecast is unavailable (NaN, warm-up)."""
    if math.isnan(forecast):
        return 0
    if forecast > threshold:
        return 1
    if forecast < -threshold and not long_only:
        return -1
    return 0


def order_size(want: int, pos: float, value: float, close: float, position_fraction: float,
               size_step: float | None) -> float | None:
    """The signed size of the order that moves ``pos`` to ``want`` at the close ``close``.

    None when nothing is to be done (already on the wanted side); 0.0 when the size rounds to
    zero at ``size_step`` (the caller counts it). A target of ``position_fraction`` of
    ``value``; flattening closes the position exactly. ``size_step`` None: the exact
    fractional size, no rounding.
    """
    have = (pos > 0) - (pos < 0)
    if want == have:
        return None
    target = want * position_fraction * value / close
    delta = target - pos
    if size_step is None:
        return -pos if want == 0 else delta
    size = math.floor(abs(delta) / size_step) * size_step
    if want == 0:
        size = abs(pos)  # flatten exactly
    if size <= 0:
        return 0.0
    return size if delta > 0 else -size
