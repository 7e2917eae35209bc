"""SmaCross: a no-model strategy, the speed and sanity baseline of RegimeLSTMStrategy."""
from __future__ import annotations

import backtrader as bt

from strategies.base import BaseStrategy


class SmaCross(BaseStrategy):
    """Long when the fast SMA crosses above the slow SMA, flat when it crosses below.

    Entry
        Fast SMA crosses above the slow SMA at the close of t, while flat.
    Exit
        Fast SMA crosses below the slow SMA, while long. Never short.
    Sizing
        ``position_fraction`` of equity at the close; the exact fractional size by default
        (``size_step=None``), or rounded down to ``size_step``.
    Execution
        Market orders, filled at the open of t+1.

    Each bar's record holds the crossover (+1 up, -1 down, 0 none) as its ``forecast``. The
    first ``slow`` bars are the indicators' warm-up (flat, no record of a crossover).
    ``n_orders`` counts the orders sent (``bt-lstm bench`` reports it).
    """

    params = (
        ("fast", 10),  # bars of the fast average
        ("slow", 30),  # bars of the slow average
        ("size_step", None),  # exact fractional sizes, as this baseline always sent
    )

    def __init__(self) -> None:
        super().__init__()
        fast = bt.ind.SMA(self.data.close, period=self.p.fast)
        slow = bt.ind.SMA(self.data.close, period=self.p.slow)
        self.cross = bt.ind.CrossOver(fast, slow)

    def target(self) -> tuple[int, float, int]:
        """Long from a cross up, flat from a cross down, else the side already held."""
        cross = self.cross[0]
        held = self._position.size != 0
        if cross > 0 and not held:
            return 1, cross, -1
        if cross < 0 and held:
            return 0, cross, -1
        return int(held), cross, -1
