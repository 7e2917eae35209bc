"""RegimeLSTMStrategy: trade the forecast of the model of the current regime."""
from __future__ import annotations

import logging

import backtrader as bt
import numpy as np
import pandas as pd

from bt_lstm.backtest.engine import nums_to_index
from bt_lstm.models.forecast import Forecaster, load_forecaster
from bt_lstm.trading.decide import decide_signal, order_size

logger = logging.getLogger(__name__)


class RegimeLSTMStrategy(bt.Strategy):
    """Long, short or flat on the thresholded next-bar forecast of the current regime's model.

    Entry
        At the close of bar t the regime of t picks the model, which forecasts the next bar's log
        return from the window of the last ``lookback`` bars. Long when the forecast exceeds
        ``threshold``; short when it is below ``-threshold`` (unless ``long_only``).
    Exit
        Flat when the forecast lies within ``[-threshold, threshold]`` or is unavailable
        (warm-up); a signal of the other side reverses the position in one order.
    Sizing
        ``position_fraction`` of current equity at the close of t, rounded down to
        ``size_step`` (fractional sizes, as crypto needs). Sizes that round to zero are counted.
    Execution
        Market orders: decided at the close of t, filled at the open of t+1 (backtrader's
        default, no cheat-on-close). Commission and slippage come from the broker. Rejected
        orders (margin, etc.) are counted and logged, never dropped silently.

    Forecasts arrive either precomputed in batch as the feed's ``forecast`` / ``regime`` lines
    (``inference='batch'``, the fast path for backtests) or are computed here bar by bar from
    the candles seen so far (``inference='per_bar'``, for live or streaming use). Both give the
    same forecasts (tests/test_strategy.py). In a walk-forward the batch lines hold, at each
    bar, the forecast of the models of the fold that owns that bar, so the models switch at
    fold boundaries while an open position carries across.
    """

    params = (
        ("model_dir", None),  # bundle folder: every regime model is loaded at init
        ("forecaster", None),  # or an already-loaded bt_lstm Forecaster (per_bar needs one)
        ("inference", "batch"),  # batch: read the feed's forecast line | per_bar: run the model
        ("history", None),  # per_bar: candles before the feed's first bar (window warm-up)
        ("threshold", 0.001),  # |forecast| (log return) needed to hold a position
        ("long_only", False),  # never go short
        ("position_fraction", 0.95),  # fraction of equity per position
        ("size_step", 1e-6),  # sizes are rounded down to this step
    )

    def __init__(self) -> None:
        if self.p.inference not in ("batch", "per_bar"):
            raise ValueError(f"inference={self.p.inference!r}: use 'batch' or 'per_bar'")
        self.forecaster: Forecaster | None = self.p.forecaster
        if self.forecaster is None and self.p.model_dir is not None:
            self.forecaster = load_forecaster(self.p.model_dir)
        if self.forecaster is None and self.p.inference == "per_bar":
            raise ValueError("inference='per_bar' needs model_dir or forecaster")
        if self.p.inference == "batch" and not hasattr(self.data.lines, "forecast"):
            raise ValueError("inference='batch' needs a feed with forecast/regime lines "
                             "(bt_lstm.backtest.engine.SignalData)")
        # Rows are tuples holding backtrader's float dates: converting a date per fill costs
        # more than the fill itself; the *_frame methods convert them all at once.
        self.records: list[tuple] = []
        self.fills: list[tuple] = []
        self.closed_trades: list[tuple] = []
        self.rejected: list[dict] = []
        self.rounded_to_zero = 0
        self._pending: bt.Order | None = None  # an order not filled yet (placeholder bar)
        self._rows: list[dict] = []
        self._history = self.p.history

    def _per_bar_forecast(self) -> tuple[int, float]:
        d = self.data
        self._rows.append({"open": d.open[0], "high": d.high[0], "low": d.low[0],
                           "close": d.close[0], "volume": d.volume[0]})
        index = nums_to_index(np.asarray(d.datetime.get(size=len(self._rows))))
        frame = pd.DataFrame(self._rows, index=index)
        if self._history is not None and len(self._history):
            frame = pd.concat([self._history[frame.columns], frame])
        return self.forecaster.forecast_last(frame)

    def next(self) -> None:
        if self.p.inference == "batch":
            forecast, regime = float(self.data.forecast[0]), int(self.data.regime[0])
        else:
            regime, forecast = self._per_bar_forecast()
        want = decide_signal(forecast, self.p.threshold, self.p.long_only)
        pos = self.position.size
        # Equal to broker.getvalue() for one stock-like feed, without its per-call bookkeeping.
        value = self.broker.getcash() + pos * self.data.close[0]
        # A tuple a bar and no date conversion: next() stays light (records_frame names them).
        self.records.append((len(self) - 1, regime, forecast, want, pos, value))
        if self._pending is not None:
            return  # the last order still waits for a tradable bar
        size = order_size(want, pos, value, self.data.close[0], self.p.position_fraction,
                          self.p.size_step)
        if size is None:
            return  # already on the wanted side
        if size == 0:
            self.rounded_to_zero += 1
            logger.warning("%s: order size rounds to zero at step %g; no order sent",
                           self.data.datetime.datetime(0), self.p.size_step)
            return
        self._pending = (self.buy if size > 0 else self.sell)(size=abs(size))

    def notify_order(self, order: bt.Order) -> None:
        if not order.alive() and self._pending is not None and order.ref == self._pending.ref:
            self._pending = None
        if order.status == order.Completed:
            ex = order.executed
            self.fills.append((ex.dt, len(self) - 1, ex.size, ex.price, ex.comm))
        elif order.status in (order.Margin, order.Rejected, order.Canceled, order.Expired):
            status = order.getstatusname()
            self.rejected.append({"datetime": self.data.datetime.datetime(0), "status": status,
                                  "size": order.created.size})
            logger.warning("%s: order of size %.6g %s", self.data.datetime.datetime(0),
                           order.created.size, status)

    def notify_trade(self, trade: bt.Trade) -> None:
        if trade.isclosed:
            self.closed_trades.append((trade.dtopen, trade.dtclose, trade.pnl, trade.pnlcomm))

    RECORD_COLUMNS = ("bar", "regime", "forecast", "signal", "position", "value")

    def records_frame(self) -> pd.DataFrame:
        """One row per bar: regime, forecast, signal, position and equity at that close."""
        frame = pd.DataFrame(self.records, columns=list(self.RECORD_COLUMNS))
        frame.index = nums_to_index(np.asarray(self.data.datetime.array[:len(frame)]))
        return frame

    def fills_frame(self) -> pd.DataFrame:
        """Every fill: datetime, bar (index in the feed), size (signed), price, commission."""
        frame = pd.DataFrame(self.fills, columns=["datetime", "bar", "size", "price",
                                                  "commission"])
        frame["datetime"] = nums_to_index(frame["datetime"].to_numpy(dtype=float))
        return frame

    def trades_frame(self) -> pd.DataFrame:
        """Closed trades: opened, closed, pnl (before commission), pnl_net (after)."""
        frame = pd.DataFrame(self.closed_trades, columns=["opened", "closed", "pnl", "pnl_net"])
        for col in ("opened", "closed"):
            frame[col] = nums_to_index(frame[col].to_numpy(dtype=float))
        return frame

