"""The kernel's small typed values: a candle, a forecast, a decision and a fill, and the one
placeholder rule.

Named tuples: immutable, typed, and still the positional rows the SQL statements, the CSV writers
and Redis entries take, so the wire formats stay what they were.
"""
from __future__ import annotations

from typing import Any, NamedTuple


def is_placeholder(open_: Any, high: Any, low: Any, close: Any, volume: Any) -> Any:
    """The ONE placeholder rule: volume 0 and open = high = low = close.

    Exchanges insert such candles during outages; nobody traded at that price, so no order fills
    on one (it waits for the next real candle) and no target is built on it. Works on floats (a
    bool) and elementwise on numpy arrays or pandas columns of equal length (a bool array).

    Examples
    --------
    >>> is_placeholder(5.0, 5.0, 5.0, 5.0, 0.0), is_placeholder(5.0, 6.0, 5.0, 5.0, 0.0)
    (True, False)
    """
    return (volume == 0) & (open_ == high) & (high == low) & (low == close)


class Candle(NamedTuple):
    """One candle, keyed by its open time (epoch milliseconds, UTC)."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def is_placeholder(self) -> bool:
        """An exchange placeholder (``is_placeholder``): no order fills on it."""
        return bool(is_placeholder(self.open, self.high, self.low, self.close, self.volume))


class Forecast(NamedTuple):
    """A model's forecast at a candle's close: the regime of that candle, the forecast log
    return of the next bar (NaN while warming up) and the model that made it ('' for none)."""

    regime: int
    value: float
    model: str


class Decision(NamedTuple):
    """What the close of one candle decided (the columns of the ``decisions`` table):
    ``position`` and ``value`` are the account's at that close, before the new order."""

    symbol: str
    timeframe: str
    open_ms: int
    bar: int
    regime: int
    forecast: float
    signal: int
    position: float
    value: float
    model: str


class Fill(NamedTuple):
    """An order filled at a candle's open: the executed size (signed; a reversal whose opening
    part the margin check dropped executes only its closing part), the price after slippage and
    the commission of both parts."""

    open_ms: int
    size: float
    price: float
    commission: float
