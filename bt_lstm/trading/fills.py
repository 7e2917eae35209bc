"""The fill arithmetic of Backtrader's ``BackBroker`` (stock-like, ``shortcash``, percentage
commission, ``set_slippage_perc(slip_open=True, slip_match=True, slip_out=False)``): fill price,
commission, cash after a fill and the margin checks.

Only ``Account`` (and ``decide``, re-exporting the price and commission rules for the strategies)
may import this module: an import-linter contract in setup.cfg says so, so that no other path
keeps cash or positions of its own.
"""
from __future__ import annotations


def fill_price(size: float, open_: float, high: float, low: float, slippage: float) -> float:
    """Price of a market order filled at a bar's open: slipped against the trader, capped at
    the bar's high (buy) or low (sell), as ``BackBroker._slip_up`` / ``_slip_down``."""
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


def split(pos: float, size: float) -> tuple[float, float]:
    """(closing part, opening part) of an order of ``size`` on a position ``pos``, as
    ``Position.update`` splits it: a reversal closes ``-pos`` and opens ``size + pos``."""
    if pos == 0 or (size > 0) == (pos > 0):
        return 0.0, size
    if abs(size) <= abs(pos):
        return size, 0.0
    return -pos, size + pos


def execute(cash: float, pos: float, size: float, price: float, commission: float
            ) -> tuple[float, float, float]:
    """One fill at ``price``: (cash, closing part, opening part executed).

    The closing part always fills; the opening part is dropped (0.0) when it would leave cash
    below zero, as ``BackBroker._execute`` fills the closing part (a Partial) and refuses the
    rest with Margin. Each part is charged its own commission.
    """
    closed, opened = split(pos, size)
    cash -= closed * price + abs(closed) * price * commission
    if opened:
        after = cash - opened * price - abs(opened) * price * commission
        if after < 0.0:
            opened = 0.0
        else:
            cash = after
    return cash, closed, opened


def accepts(cash: float, pos: float, size: float, close: float, commission: float) -> bool:
    """Backtrader's check at submission (``check_submitted``): would the order, filled whole at
    the decision bar's close, leave cash >= 0? (Rejected with Margin otherwise.)"""
    closed, opened = split(pos, size)
    cash -= closed * close + abs(closed) * close * commission
    return cash - opened * close - abs(opened) * close * commission >= 0.0
