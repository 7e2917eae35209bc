"""SmaCross: a no-model Backtrader strategy, the speed and sanity baseline of RegimeLSTMStrategy.
"""
from __future__ import annotations

import backtrader as bt


class SmaCross(bt.Strategy):
    """Long when the fast SMA is above the slow SMA, flat otherwise.

    Entry
        Fast SMA crosses above the slow SMA at the close of t.
    Exit
        Fast SMA crosses below the slow SMA.
    Sizing
        ``position_fraction`` of equity at the close, fractional size.
    Execution
        Market orders, filled at the open of t+1.
    """

    params = (
        ("fast", 10),  # bars of the fast average
        ("slow", 30),  # bars of the slow average
        ("position_fraction", 0.95),  # fraction of equity when long
    )

    def __init__(self) -> None:
        fast = bt.ind.SMA(self.data.close, period=self.p.fast)
        slow = bt.ind.SMA(self.data.close, period=self.p.slow)
        self.cross = bt.ind.CrossOver(fast, slow)
        self.n_orders = 0

    def next(self) -> None:
        if self.cross[0] > 0 and not self.position:
            size = self.p.position_fraction * self.broker.getvalue() / self.data.close[0]
            self.buy(size=size)
            self.n_orders += 1
        elif self.cross[0] < 0 and self.position:
            self.close()
            self.n_orders += 1
