"""BaseStrategy: the bookkeeping every strategy shares; a strategy says only which side it wants.

A strategy overrides one method, ``target``. The base turns its answer into orders (sized by
``bt_lstm.trading.decide.order_size``, one order at a time) and records every bar, fill, closed
trade and refused order, so ``bt_lstm.backtest.engine.run_backtest`` can run any strategy built
on it (docs/strategies.md).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from bt_lstm.backtest.engine import nums_to_index
from bt_lstm.trading.decide import order_size

logger = logging.getLogger(__name__)

SIDES = (-1, 0, 1)  # short, flat, long
_NOT_FILLED = (bt.Order.Margin, bt.Order.Rejected, bt.Order.Canceled, bt.Order.Expired)


class BaseStrategy(bt.Strategy):
    """Long, short or flat: the side ``target()`` wants at each close, reached in one order.

    Entry and exit
        Whatever ``target()`` returns at the close of bar t: -1 short, 0 flat, 1 long. A change
        of side sends one market order; a reversal is one order of both sizes together.
    Sizing
        ``position_fraction`` of equity (cash + position at the close of t), rounded down to
        ``size_step`` (``bt_lstm.trading.decide.order_size``, as live trading and the RL
        environment size); ``size_step=None`` sends the exact fractional size. Going flat
        closes the whole position. Sizes that round to zero are counted and logged.
    Execution
        Market orders: decided at the close of t, filled at the open of t+1 (no cheat-on-close).
        One order at a time: while an order waits (an exchange placeholder bar, where nothing
        fills), later decisions are recorded but send nothing. Orders the broker refuses
        (margin, ...) are counted and logged, never dropped silently.
    Warm-up
        Bars before the strategy's indicators are ready (Backtrader's minimum period) are
        recorded flat, with no forecast and no order.

    Records
        ``records`` holds a tuple per bar (``RECORD_COLUMNS``: bar, regime, forecast, signal,
        position before the bar's order, value), ``fills`` every fill (a reversal that the
        broker refuses for margin after its closing part filled keeps that part), and
        ``closed_trades`` every closed trade; ``records_frame``, ``fills_frame`` and
        ``trades_frame`` turn them into frames. Rows keep Backtrader's float dates: converting
        a date per bar costs more than the rest of the bar's bookkeeping.
    """

    params = (
        ("position_fraction", 0.95),  # fraction of equity per position
        ("size_step", 1e-6),  # sizes are rounded down to this step; None: exact sizes
        ("history", None),  # candles before the feed's first bar (candles_so_far's warm-up)
    )
    RECORD_COLUMNS: tuple[str, ...] = ("bar", "regime", "forecast", "signal", "position",
                                       "value")
    FILL_COLUMNS: tuple[str, ...] = ("datetime", "bar", "size", "price", "commission")
    TRADE_COLUMNS: tuple[str, ...] = ("opened", "closed", "pnl", "pnl_net")

    def __init__(self) -> None:
        self.records: list[tuple] = []
        self.fills: list[tuple] = []
        self.closed_trades: list[tuple] = []
        self.rejected: list[dict] = []
        self._partial: set[int] = set()  # refs of orders with a Partial fill recorded
        self.rounded_to_zero = 0
        self.n_orders = 0  # orders sent
        self._pending: bt.Order | None = None  # an order not filled yet (placeholder bar)
        self._bar = -1  # index of the current bar in the feed
        self._rows: list[dict] = []
        # Looked up once: the broker keeps one Position object per feed for the whole run.
        self._position = self.broker.getposition(self.data)
        self._close = self.data.lines.close
        self._extra_nan = (math.nan,) * (len(self.RECORD_COLUMNS) - 6)

    # ------------------------------------------------------------------ what a strategy says

    def target(self) -> int | tuple:
        """The side wanted from this close: -1 short, 0 flat, 1 long.

        Override this one method. Return the side alone, or a tuple
        ``(side, forecast, regime, *extra)``: ``forecast`` (a float, the strategy's score; NaN
        when it has none) and ``regime`` (an int, -1 when none) go to the bar's record, and
        ``extra`` fills the columns a subclass adds to ``RECORD_COLUMNS``. Read only data up
        to the current bar (``self.data.close[0]``, indicators, ``candles_so_far()``).
        """
        raise NotImplementedError(f"{type(self).__name__} must override target()")

    # ------------------------------------------------------------------ bar by bar

    def prenext(self) -> None:
        self._bar += 1
        pos = self._position.size
        self.records.append((self._bar, -1, math.nan, 0, pos,
                             self.broker.getcash() + pos * self._close[0]) + self._extra_nan)

    def next(self) -> None:
        self._bar += 1
        wanted = self.target()
        if isinstance(wanted, tuple):
            want, forecast, regime = wanted[:3]
            extra = wanted[3:]
        else:
            want, forecast, regime, extra = wanted, math.nan, -1, ()
        if want not in SIDES:
            raise ValueError(f"{type(self).__name__}.target() returned side {want!r} at bar "
                             f"{self._bar}: use -1 (short), 0 (flat) or 1 (long)")
        pos = self._position.size
        close = self._close[0]
        # Equal to broker.getvalue() for one stock-like feed, without its per-call bookkeeping.
        value = self.broker.getcash() + pos * close
        self.records.append((self._bar, regime, forecast, want, pos, value) + extra)
        if self._pending is None:
            self._pending = self._send(want, pos, value, close)

    def _send(self, want: int, pos: float, value: float, close: float,
              data: bt.feed.DataBase | None = None,
              fraction: float | None = None) -> bt.Order | None:
        """Send the order that moves ``pos`` to ``want`` (``order_size`` at ``fraction`` of
        ``value``, the ``position_fraction`` param when None) on ``data`` (the first feed when
        None); the order, or None when none was sent (a size rounding to zero is counted)."""
        step = self.p.size_step
        size = order_size(want, pos, value, close,
                          self.p.position_fraction if fraction is None else fraction, step)
        if size is None:
            return None  # already on the wanted side
        d = self.data if data is None else data
        if size == 0:
            self._rounded(d)
            logger.warning("%s: order size rounds to zero at step %g; no order sent",
                           d.datetime.datetime(0), step or 0.0)
            return None
        self.n_orders += 1
        return (self.buy if size > 0 else self.sell)(data=d, size=abs(size))

    def _rounded(self, data: bt.feed.DataBase) -> None:
        """Count an order of ``data`` whose size rounded to zero."""
        self.rounded_to_zero += 1

    def candles_so_far(self) -> pd.DataFrame:
        """OHLCV of every bar up to the current one, after the ``history`` candles: what a
        per-bar model reads (the current bar is the last row). Call it once per bar."""
        return candles_until(self.data, self._rows, self.p.history)

    # ------------------------------------------------------------------ broker notifications

    def notify_order(self, order: bt.Order) -> None:
        status = order.status
        if status == order.Completed:
            if order.ref in self._partial:
                self._partial.discard(order.ref)
                self._record_bits(order)  # only the part not recorded at a Partial
            else:
                ex = order.executed
                self._record_fill(order, ex.dt, ex.size, ex.price, ex.comm)
        elif status == order.Partial:
            # A reversal whose new side the cash cannot cover (a gap against the position)
            # fills its closing part before the broker refuses the rest (Margin): keep it.
            # A reversal's two parts can also sum a float hair short of the order's size: the
            # hair then fills at the next bar, and only that bit is recorded there.
            self._partial.add(order.ref)
            self._record_bits(order)
            return
        elif status in _NOT_FILLED:
            self._refused(order)
        else:
            return  # Submitted, Accepted: nothing happened yet
        self._order_done(order)

    def _record_bits(self, order: bt.Order) -> None:
        """Record the execution bits of ``order`` new since its last notification."""
        for bit in order.executed.iterpending():
            self._record_fill(order, bit.dt, bit.size, bit.price, bit.comm)

    def _record_fill(self, order: bt.Order, dt: float, size: float, price: float,
                     comm: float) -> None:
        """Append one fill (``FILL_COLUMNS``); a portfolio strategy adds the market."""
        self.fills.append((dt, len(self) - 1, size, price, comm))

    def _order_done(self, order: bt.Order) -> None:
        """``order`` filled or was refused: the next order may go."""
        if self._pending is not None and order.ref == self._pending.ref:
            self._pending = None

    def _refused(self, order: bt.Order) -> None:
        when = self.data.datetime.datetime(0)
        status = order.getstatusname()
        self.rejected.append({"datetime": when, "status": status, "size": order.created.size})
        logger.warning("%s: order of size %.6g %s", when, order.created.size, status)

    def notify_trade(self, trade: bt.Trade) -> None:
        if trade.isclosed:
            self.closed_trades.append((trade.dtopen, trade.dtclose, trade.pnl, trade.pnlcomm))

    # ------------------------------------------------------------------ results as frames

    def records_frame(self) -> pd.DataFrame:
        """One row per bar (``RECORD_COLUMNS``): regime, forecast, signal, position and equity
        at that close."""
        frame = pd.DataFrame(self.records, columns=list(self.RECORD_COLUMNS))
        frame.index = nums_to_index(np.asarray(self.data.datetime.array[:len(frame)]))
        return frame

    def fills_frame(self) -> pd.DataFrame:
        """Every fill: datetime, bar (index in the feed), size (signed), price, commission."""
        frame = pd.DataFrame(self.fills, columns=list(self.FILL_COLUMNS))
        frame["datetime"] = nums_to_index(frame["datetime"].to_numpy(dtype=float))
        return frame

    def trades_frame(self) -> pd.DataFrame:
        """Closed trades: opened, closed, pnl (before commission), pnl_net (after)."""
        frame = pd.DataFrame(self.closed_trades, columns=list(self.TRADE_COLUMNS))
        for col in ("opened", "closed"):
            frame[col] = nums_to_index(frame[col].to_numpy(dtype=float))
        return frame


def candles_until(data: bt.feed.DataBase, rows: list[dict],
                  history: pd.DataFrame | None) -> pd.DataFrame:
    """OHLCV of ``data``'s bars up to its current one, after the ``history`` candles.

    ``rows`` is the caller's list of the bars seen so far; the current bar is appended to it,
    so call this once per bar of ``data``.
    """
    rows.append({"open": data.open[0], "high": data.high[0], "low": data.low[0],
                 "close": data.close[0], "volume": data.volume[0]})
    index = nums_to_index(np.asarray(data.datetime.get(size=len(rows))))
    frame = pd.DataFrame(rows, index=index)
    if history is not None and len(history):
        frame = pd.concat([history[frame.columns], frame])
    return frame


def check_inference(strategy: Any, feed_line: str, how: str) -> bool:
    """Validate a model strategy's ``inference`` param; True for ``'batch'``.

    ``'batch'`` reads precomputed values from the feed line ``feed_line`` (``how`` says how to
    give the feed one); ``'per_bar'`` computes them at each bar from ``candles_so_far()``.
    """
    inference = strategy.p.inference
    if inference not in ("batch", "per_bar"):
        raise ValueError(f"inference={inference!r}: use 'batch' or 'per_bar'")
    if inference == "batch" and not hasattr(strategy.data.lines, feed_line):
        raise ValueError(f"inference='batch' needs {how}")
    return inference == "batch"
