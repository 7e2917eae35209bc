"""The one decision rule and the one fill rule, shared by the backtest strategy and live trading.

``strategies.lstm_strategy.RegimeLSTMStrategy`` (Backtrader) and ``bt_lstm.live.engine`` (paper
trading) both call these functions, so backtest and live decisions cannot drift apart.
Pure Python: no backtrader, no pandas.
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
               size_step: float) -> float | None:
    """The signed size of the order that moves ``pos`` to ``want`` at the close ``close``.

    None when nothing is to be done (already on the wanted side); 0.0 when the size rounds to
    zero at ``size_step`` (the caller counts it). A target of ``position_fraction`` of
    ``value``; flattening closes the position exactly.
    """
    have = (pos > 0) - (pos < 0)
    if want == have:
        return None
    target = want * position_fraction * value / close
    delta = target - pos
    size = math.floor(abs(delta) / size_step) * size_step
    if want == 0:
        size = abs(pos)  # flatten exactly
    if size <= 0:
        return 0.0
    return size if delta > 0 else -size


def is_placeholder(open_: float, high: float, low: float, close: float, volume: float) -> bool:
    """An exchange placeholder candle (an outage): no order fills on it, it waits."""
    return volume == 0 and open_ == high == low == close


def fill_price(size: float, open_: float, high: float, low: float, slippage: float) -> float:
    """Price of a market order filled at a bar's open, as Backtrader's BackBroker computes it
    with ``set_slippage_perc(slippage, slip_open=True, slip_match=True, slip_out=False)``:
    slipped against the trader, capped at the bar's high (buy) or low (sell)."""
    if slippage <= 0:
        return open_
    if size > 0:
        slipped = open_ * (1 + slippage)
        return slipped if slipped <= high else high
    slipped = open_ * (1 - slippage)
    return slipped if slipped >= low else low


def commission_of(size: float, price: float, commission: float) -> float:
    """Percentage commission on notional (``FractionalCommission``)."""
    return abs(size) * price * commission
