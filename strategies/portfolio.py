"""PortfolioStrategy: the regime rule on every market of one Backtrader run, one broker."""
from __future__ import annotations

import logging
import math

import backtrader as bt
import numpy as np
import pandas as pd

from bt_lstm.backtest.allocation import allocation_weights, check_allocation
from bt_lstm.backtest.engine import nums_to_index
from bt_lstm.trading.decide import decide_signal
from strategies.base import BaseStrategy, candles_until, check_inference

logger = logging.getLogger(__name__)


class PortfolioStrategy(BaseStrategy):
    """Long, short or flat on each market's thresholded forecast, sized by its allocation.

    One data feed per market (``bt_lstm.backtest.portfolio.run_portfolio_backtest`` names each
    by its symbol); the feeds keep their own timestamps, and Backtrader's clock steps through
    the union of them. A market acts only at a step where it has a new bar: a market that has
    not started, is closed (gold at weekends) or has a gap at t neither decides nor fills there.

    Entry and exit
        Per market, ``RegimeLSTMStrategy``'s rule (``trading.decide.decide_signal``) on that
        market's forecast at the close of its bar t: long above ``threshold``, short below
        ``-threshold`` (unless ``long_only``), else flat.
    Sizing
        A market's target is its allocation weight of equity (``bt_lstm.backtest.allocation``:
        ``equal`` = ``position_fraction / N``, ``inverse-vol`` by trailing volatility), sized by
        ``trading.decide.order_size`` on the whole book's equity at the close (cash plus every
        position at its market's last close). An entry never takes the book over
        ``position_fraction``: its weight is capped by the room the other markets' positions
        leave (``no_room`` counts the entries refused for want of any; an open position on the
        other side is still closed).
    Execution
        Market orders, decided at the close of a market's bar t and filled by the broker at the
        open of that market's next bar (``PortfolioBroker``: never at a bar of another market's
        clock). One order at a time per market. Refusals, sizes rounding to zero and fills
        deferred past placeholder candles are counted per market.

    Records
        ``records``: a row per market per bar of that market (``MARKET_COLUMNS``), ``equity``:
        the book's value at each step of the clock, fills and closed trades with their market.
    """

    params = (
        ("inference", "batch"),  # batch: the feeds' forecast lines | per_bar: run the models
        ("forecasters", None),  # per_bar: {symbol: Forecaster}
        ("histories", None),  # per_bar: {symbol: candles before that feed's first bar}
        ("threshold", 0.001),  # |forecast| (log return) needed to hold a position
        ("long_only", False),  # never go short
        ("allocation", "equal"),  # equal | inverse-vol (bt_lstm.backtest.allocation)
    )
    MARKET_COLUMNS = ("datetime", "market", "bar", "regime", "forecast", "signal", "position",
                      "value", "weight")
    FILL_COLUMNS = BaseStrategy.FILL_COLUMNS + ("symbol",)
    TRADE_COLUMNS = BaseStrategy.TRADE_COLUMNS + ("symbol",)

    def __init__(self) -> None:
        super().__init__()
        check_allocation(self.p.allocation)
        self._batch = check_inference(self, "forecast", "feeds with forecast/regime lines "
                                      "(bt_lstm.backtest.portfolio.PortfolioData)")
        self.symbols = [d._name for d in self.datas]
        n = len(self.datas)
        # by id: a feed overloads == (a line operation), so it is no dictionary key
        self._index = {id(d): k for k, d in enumerate(self.datas)}
        self._lens = [0] * n
        self._pendings: list[bt.Order | None] = [None] * n
        self._positions = [self.broker.getposition(d) for d in self.datas]
        self._sizes = [0.0] * n
        self._closes = [d.lines.close for d in self.datas]
        self._times = [d.lines.datetime for d in self.datas]
        if self._batch:  # looked up once: each feed keeps its line objects for the whole run
            self._forecasts = [d.lines.forecast for d in self.datas]
            self._regimes = [d.lines.regime for d in self.datas]
        self._threshold, self._long_only = self.p.threshold, self.p.long_only
        # equal weights never change: the same list every bar
        self._equal = ([self.p.position_fraction / n] * n
                       if self.p.allocation == "equal" else None)
        self._market_rows: list[list[dict]] = [[] for _ in range(n)]
        self.rounded = [0] * n
        self.no_room = [0] * n
        self.equity: list[tuple[float, float]] = []
        if not self._batch:
            missing = [s for s in self.symbols if s not in (self.p.forecasters or {})]
            if missing:
                raise ValueError(f"inference='per_bar' needs a forecaster for {missing}")

    # ------------------------------------------------------------------ what a market says

    def market_target(self, k: int) -> tuple[int, float, int]:
        """Market ``k``'s side at the close of its current bar, with its forecast and regime.

        Override to trade another rule; read only market ``k``'s bars up to the current one.
        """
        if self._batch:
            forecast, regime = float(self._forecasts[k][0]), int(self._regimes[k][0])
        else:
            symbol = self.symbols[k]
            history = (self.p.histories or {}).get(symbol)
            candles = candles_until(self.datas[k], self._market_rows[k], history)
            regime, forecast = self.p.forecasters[symbol].forecast_last(candles)
        return decide_signal(forecast, self._threshold, self._long_only), forecast, regime

    # ------------------------------------------------------------------ bar by bar

    def prenext(self) -> None:
        # Backtrader calls prenext until every feed has a bar: a market that has not started
        # yet must not hold the others back.
        self.next()

    def next(self) -> None:
        ticked = self._ticked()
        sizes, closes = self._sizes, self._closes
        value, gross = self.broker.getcash(), 0.0
        for k, position in enumerate(self._positions):
            pos = sizes[k] = position.size
            if pos:  # a market with a position has a bar: its last close
                exposure = pos * closes[k][0]
                value += exposure
                gross += abs(exposure)
        self.equity.append((self.datetime[0], value))
        weights = self._equal or self._weights()
        for k in ticked:
            want, forecast, regime = self.market_target(k)
            pos = sizes[k]
            self.records.append((self._times[k][0], k, self._lens[k] - 1, regime, forecast,
                                 want, pos, value, weights[k]))
            if self._pendings[k] is None and want != (pos > 0) - (pos < 0):
                self._pendings[k] = self._market_order(k, want, pos, gross, value, weights[k])

    def _ticked(self) -> list[int]:
        """The markets with a new bar at this step (Backtrader does not advance a feed without
        one: its length stays)."""
        ticked = []
        for k, d in enumerate(self.datas):
            n = len(d)
            if n > self._lens[k]:
                self._lens[k] = n
                ticked.append(k)
        return ticked

    def _weights(self) -> list[float]:
        vols = [d.lines.vol[0] if n else math.nan for d, n in zip(self.datas, self._lens)]
        return allocation_weights(self.p.allocation, self.p.position_fraction, vols).tolist()

    def _market_order(self, k: int, want: int, pos: float, gross: float, value: float,
                      weight: float) -> bt.Order | None:
        """The order that moves market ``k`` from ``pos`` to ``want``, its weight capped by the
        room the other markets' positions leave under ``position_fraction`` (``gross``: the
        book's gross exposure at this close)."""
        close = self._closes[k][0]
        others = gross - abs(pos * close)
        room = self.p.position_fraction - others / value if value > 0 else 0.0
        fraction = min(weight, room)
        if want and fraction <= 0:
            # No weight yet (inverse-vol warm-up: recorded in the bar's weight) or no room
            # left (counted): no entry, only close what is open.
            self.no_room[k] += int(weight > 0)
            want = 0
        return self._send(want, pos, value, close, data=self.datas[k],
                          fraction=max(fraction, 0.0))

    # ------------------------------------------------------------------ per-market bookkeeping

    def _rounded(self, data: bt.feed.DataBase) -> None:
        super()._rounded(data)
        self.rounded[self._index[id(data)]] += 1

    def _order_done(self, order: bt.Order) -> None:
        k = self._index[id(order.data)]
        pending = self._pendings[k]
        if pending is not None and order.ref == pending.ref:
            self._pendings[k] = None

    def _record_fill(self, order: bt.Order, dt: float, size: float, price: float,
                     comm: float) -> None:
        d = order.data
        self.fills.append((dt, len(d) - 1, size, price, comm, d._name))

    def _refused(self, order: bt.Order) -> None:
        d = order.data
        when = d.datetime.datetime(0)
        self.rejected.append({"datetime": when, "status": order.getstatusname(),
                              "size": order.created.size, "symbol": d._name})
        logger.warning("%s %s: order of size %.6g %s", when, d._name, order.created.size,
                       order.getstatusname())

    def notify_trade(self, trade: bt.Trade) -> None:
        if trade.isclosed:
            self.closed_trades.append((trade.dtopen, trade.dtclose, trade.pnl, trade.pnlcomm,
                                       trade.data._name))

    # ------------------------------------------------------------------ results as frames

    def records_frame(self) -> pd.DataFrame:
        """One row per market per bar of that market (index: the bar's time): symbol, bar
        (index in the market's feed), regime, forecast, signal, position before the bar's
        order, the book's value at that close and the market's allocation weight."""
        frame = pd.DataFrame(self.records, columns=list(self.MARKET_COLUMNS))
        index = nums_to_index(frame.pop("datetime").to_numpy(dtype=float))
        symbols = np.asarray(self.symbols, dtype=object)
        frame.insert(0, "symbol", symbols[frame.pop("market").to_numpy(dtype=int)])
        frame.index = index
        return frame

    def equity_series(self) -> pd.Series:
        """The book's value at each step of the clock (every close of any market)."""
        frame = pd.DataFrame(self.equity, columns=["datetime", "value"])
        return pd.Series(frame["value"].to_numpy(), name="value",
                         index=nums_to_index(frame["datetime"].to_numpy(dtype=float)))
