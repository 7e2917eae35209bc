"""Cerebro assembly: feed with forecast lines, fractional-size broker, costs -> BacktestResult."""
from __future__ import annotations

import difflib
import gc
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import backtrader as bt
import numpy as np
import pandas as pd

from bt_lstm.config import StrategyConfig
from bt_lstm.rl.spec import Q_COLUMNS
from bt_lstm.trading.values import is_placeholder

logger = logging.getLogger(__name__)


class SignalData(bt.feed.DataBase):
    """OHLCV plus the precomputed ``forecast`` and ``regime`` of each bar as extra lines.

    ``dataname`` is a frame with columns open, high, low, close, volume, forecast, regime.

    Notes
    -----
    Backtrader's PandasData reads every cell through ``DataFrame.iloc`` and spends about half
    of a backtest doing so; this feed converts the columns to Python lists once and loads from
    them. tests/test_backtest.py checks it yields the same bars, fills and values as PandasData.
    """

    lines = ("forecast", "regime")
    _COLUMNS = ("open", "high", "low", "close", "volume", "forecast", "regime")

    def start(self) -> None:
        """Backtrader's start hook: read the frame's columns into plain lists once, so each bar
        loads from lists rather than DataFrame cells (the same values, faster)."""
        super().start()
        frame = self.p.dataname
        self._times = [bt.date2num(ts.to_pydatetime()) for ts in frame.index]
        self._values = [frame[c].to_numpy(dtype=float).tolist() for c in self._COLUMNS]
        self._lines = [getattr(self.lines, c) for c in self._COLUMNS]
        self._pos = 0

    def _load(self) -> bool:
        i = self._pos
        if i >= len(self._times):
            return False
        self.lines.datetime[0] = self._times[i]
        for line, values in zip(self._lines, self._values):
            line[0] = values[i]
        self.lines.openinterest[0] = 0.0
        self._pos = i + 1
        return True


# A DQN agent's Q-values precomputed in batch (bt_lstm.rl.spec.Q_COLUMNS says their order).
Q_LINES = Q_COLUMNS


class QValueData(SignalData):
    """SignalData plus the nine Q-value lines of a DQN agent (``Q_LINES``)."""

    lines = Q_LINES
    _COLUMNS = SignalData._COLUMNS + Q_LINES


def nums_to_index(nums: np.ndarray) -> pd.DatetimeIndex:
    """Vectorised ``bt.num2date``: backtrader stores days since 0001-01-01 (that day = 1.0).

    Rounded to the second: the float holds ~10 us of noise, and bars are never finer.
    """
    seconds = np.round((np.asarray(nums, dtype=float) - 1.0) * 86400.0).astype(np.int64)
    base = np.datetime64("0001-01-01T00:00:00", "s")
    return pd.DatetimeIndex((base + seconds.astype("timedelta64[s]")).astype("datetime64[ns]"),
                            name="datetime")


class TradableBarBroker(bt.brokers.BackBroker):
    """Backtrader's broker, except that no order fills on an exchange placeholder candle.

    Placeholders (volume 0, open = high = low = close) stand for outages: nobody traded at that
    price. An order due at such a bar's open waits, still pending, for the next real bar.

    Notes
    -----
    One per-order cost and two per-bar costs are cut, with every fill, value, trade and
    notification as BackBroker's (tests/test_strategy_base.py runs both brokers side by side):
    a done order is queued without a clone, and with
    interest-free stock-like costs ``next`` skips BackBroker's loops that add 0.0 to cash for
    each open position and ``_get_value`` (once a bar) writes the stock-like arithmetic out
    (``runners/bench.py`` measures the backtest).
    """

    def start(self) -> None:
        """BackBroker.start, then note whether every commission is interest-free and stock-like
        (``next`` then skips the cost loops that would add 0.0)."""
        super().start()
        # Interest-free stock-like costs (FractionalCommission): BackBroker.next's per-bar
        # interest and futures cash adjustments then add exactly 0.0 for every open position,
        # after a date conversion per bar; ``next`` skips them.
        self._plain_costs = all(ci.p.interest == 0 and ci._stocklike
                                for ci in self.comminfo.values())

    def next(self) -> None:
        """BackBroker.next (backtrader 1.9.78.123), less the no-op cost loops (see ``start``)."""
        if not self._plain_costs:
            super().next()
            return
        while self._toactivate:
            self._toactivate.popleft().activate()
        if self.p.checksubmit:
            self.check_submitted()
        self._process_order_history()
        self.pending.append(None)  # iterate once over the pending queue
        while True:
            order = self.pending.popleft()
            if order is None:
                break
            if order.expire():
                self.notify(order)
                self._ococheck(order)
                self._bracketize(order, cancel=True)
            elif not order.active():
                self.pending.append(order)  # cannot yet be processed
            else:
                self._try_exec(order)
                if order.alive():
                    self.pending.append(order)
                elif order.status == bt.Order.Completed:
                    self._bracketize(order)  # a bracket parent order may have been executed
        self._get_value()

    def _get_value(self, datas: Any = None, lever: bool = False) -> float:
        """BackBroker._get_value (backtrader 1.9.78.123) for the whole book with plain costs:
        the same arithmetic in the same order (stock-like ``getvaluesize`` and
        ``profitandloss`` written out, the bar's close read once), without three method
        calls and two line lookups per position and bar. Anything else goes to BackBroker."""
        if (datas is not None or not self._plain_costs or self._fundhist
                or self._cash_addition or not self.p.shortcash):
            return super()._get_value(datas=datas, lever=lever)
        pos_value = pos_value_unlever = unrealized = 0.0
        for data, position in self.positions.items():
            comminfo = self.getcommissioninfo(data)
            price, size = data.close[0], position.size
            dvalue = size * price  # CommInfoBase.getvaluesize, stock-like
            dunrealized = size * (price - position.price) * comminfo.p.mult  # profitandloss
            pos_value += dvalue
            unrealized += dunrealized
            if dvalue > 0:  # long: unlevered as BackBroker does
                dvalue -= dunrealized
                pos_value_unlever += dvalue / comminfo.p.leverage
                pos_value_unlever += dunrealized
            else:
                pos_value_unlever += dvalue
        self._value = self.cash + pos_value_unlever
        self._fundval = self._value / self._fundshares
        self._valuemkt = pos_value_unlever
        self._valuelever = self.cash + pos_value
        self._valuemktlever = pos_value
        self._leverage = pos_value / (pos_value_unlever or 1.0)
        self._unrealized = unrealized
        return self._value if not lever else self._valuelever

    def notify(self, order: bt.Order) -> None:
        """Queue ``order`` for its strategy, as BackBroker does (every status, Submitted and
        Accepted included: a user's strategy may read them).

        BackBroker queues a clone, since the order may change before the strategy reads it.
        An order that is done (filled, refused) no longer changes: it is queued as it is,
        after marking its new execution bits as the clone would.
        """
        if order.alive():  # Submitted, Accepted, Partial: it may still change
            self.notifs.append(order.clone())
        else:
            order.executed.markpending()
            self.notifs.append(order)

    def _try_exec(self, order: bt.Order) -> None:
        d = order.data
        if is_placeholder(d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0]):
            self.skipped_placeholder_fills = getattr(self, "skipped_placeholder_fills", 0) + 1
            return
        super()._try_exec(order)


class FractionalCommission(bt.CommInfoBase):
    """Percentage commission on notional with float sizes (backtrader's default rounds to int)."""

    params = (("commission", 0.001), ("stocklike", True),
              ("commtype", bt.CommInfoBase.COMM_PERC), ("percabs", True))

    def getsize(self, price: float, cash: float) -> float:
        """The size ``cash`` buys at ``price``, as a float: Backtrader's default would truncate
        0.03 BTC to 0."""
        return self.p.leverage * (cash / price)


def _timeframe(bar: pd.Timedelta) -> tuple[int, int]:
    minutes = int(bar.total_seconds() // 60)
    if minutes >= 1440 and minutes % 1440 == 0:
        return bt.TimeFrame.Days, minutes // 1440
    return bt.TimeFrame.Minutes, max(minutes, 1)


def make_feed(frame: pd.DataFrame, bar: pd.Timedelta | None = None,
              feed_cls: type = SignalData) -> bt.feed.DataBase:
    """A feed of ``frame`` with timeframe/compression set, so analyzers bucket bars right."""
    from bt_lstm.data.candles import infer_bar

    timeframe, compression = _timeframe(bar if bar is not None else infer_bar(frame.index))
    return feed_cls(dataname=frame, timeframe=timeframe, compression=compression)


@dataclass
class BacktestResult:
    """What happened, bar by bar and order by order."""

    # per bar: regime, forecast, signal, position (before orders), value, and (when known) the
    # model that made the forecast ("flat:no_skill" where the skill guard kept the regime flat)
    bars: pd.DataFrame
    fills: pd.DataFrame  # datetime, bar, size, price, commission
    trades: pd.DataFrame  # closed trades: opened, closed, pnl, pnl_net
    rejected: pd.DataFrame  # orders refused by the broker
    rounded_to_zero: int
    final_value: float
    start_cash: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def equity(self) -> pd.Series:
        """Portfolio value at each bar's close (after that bar's fills)."""
        return self.bars["value"]


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Exempt every object that exists on entry from Python's cyclic garbage collector.

    Notes
    -----
    Backtrader allocates a dozen container objects per order (the order, its created/executed
    data, a clone per notification). Those allocations trigger collections of the oldest
    generation, and each one walks every object of the process: after torch, pandas and the
    models are loaded that is some 300,000 objects, none of which the backtest can free. Measured
    on BTCUSDT 4h (18,158 bars, 2,599 orders), that walking cost about a fifth of the backtest.
    Frozen objects are simply skipped; objects made inside the block are collected as usual,
    and on exit everything is handed back to the collector, so nothing is leaked. No result
    depends on when the collector runs (tests/test_golden.py pins fills and trades).

    Where objects are already frozen (an enclosing ``gc_frozen`` or another library's
    ``gc.freeze``, which is process-wide) it does nothing, so it never unfreezes what it did
    not freeze.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def make_cerebro(feed_frame: pd.DataFrame, cfg: StrategyConfig, bar: pd.Timedelta | None = None,
                 runonce: bool = True, preload: bool = True,
                 feed_cls: type = SignalData) -> bt.Cerebro:
    """Cerebro with the feed of ``feed_frame`` and our broker: cash, commission, slippage.

    Every backtest goes through here, the no-model benchmark strategy included, so the two sides
    of a comparison run on the same feed class and the same broker.
    """
    cerebro = cerebro_with_broker(cfg, runonce=runonce, preload=preload)
    cerebro.adddata(make_feed(feed_frame, bar, feed_cls))
    return cerebro


def cerebro_with_broker(cfg: StrategyConfig, runonce: bool = True, preload: bool = True,
                broker_cls: type = TradableBarBroker) -> bt.Cerebro:
    """Cerebro without feeds, with ``broker_cls`` set up from ``cfg``: cash, commission on
    notional with float sizes, slippage against the trader at the open (the one broker set-up
    of every backtest, one market or a portfolio)."""
    cerebro = bt.Cerebro(stdstats=False, runonce=runonce, preload=preload)
    cerebro.broker = broker_cls()
    cerebro.broker.setcash(cfg.cash)
    cerebro.broker.addcommissioninfo(FractionalCommission(commission=cfg.commission))
    if cfg.slippage > 0:
        cerebro.broker.set_slippage_perc(cfg.slippage, slip_open=True, slip_match=True,
                                         slip_out=False)
    return cerebro


# Offered to a strategy when it declares a param of that name, dropped otherwise: the
# config's trading rule and sizing, and the context a job passes to whichever strategy it runs.
CONFIG_PARAMS = ("threshold", "long_only", "position_fraction", "size_step")
CONTEXT_PARAMS = ("forecaster", "inference", "history")


def strategy_params(strategy_cls: type, cfg: StrategyConfig,
                    strategy_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``strategy_cls`` receives from ``run_backtest``.

    The ``CONFIG_PARAMS`` fields of ``cfg`` and the ``CONTEXT_PARAMS`` keywords go only to a
    strategy that declares a param of that name; every other keyword must be one of its params.
    An explicit keyword wins over the config's field of the same name.

    Raises
    ------
    TypeError
        ``strategy_cls`` is not a Backtrader strategy with the result methods of
        ``strategies.base.BaseStrategy``.
    ValueError
        A keyword names no param of the strategy (the message suggests the closest one).
    """
    missing = [m for m in ("records_frame", "fills_frame", "trades_frame")
               if not hasattr(strategy_cls, m)]
    if not (isinstance(strategy_cls, type) and issubclass(strategy_cls, bt.Strategy)) or missing:
        raise TypeError(f"{getattr(strategy_cls, '__name__', strategy_cls)!r} cannot run in "
                        "run_backtest: build the strategy on strategies.base.BaseStrategy "
                        "(docs/strategies.md)")
    declared = tuple(strategy_cls.params._getkeys())
    for name in strategy_kwargs:
        if name not in declared and name not in CONTEXT_PARAMS:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{strategy_cls.__name__} has no parameter {name!r}{hint} "
                             f"(its parameters: {', '.join(declared)})")
    kwargs = {k: getattr(cfg, k) for k in CONFIG_PARAMS if k in declared}
    kwargs.update((k, v) for k, v in strategy_kwargs.items() if k in declared)
    return kwargs


def run_backtest(candles: pd.DataFrame, strategy_cls: type, cfg: StrategyConfig,
                 signals: pd.DataFrame | None = None, bar: pd.Timedelta | None = None,
                 runonce: bool = True, preload: bool = True,
                 qvalues: pd.DataFrame | None = None, **strategy_kwargs: Any) -> BacktestResult:
    """Run ``strategy_cls`` over ``candles`` (the bars to trade) in Backtrader.

    Parameters
    ----------
    candles
        OHLCV of the traded period only, DatetimeIndex; not modified.
    strategy_cls
        Any strategy built on ``strategies.base.BaseStrategy`` (the regime, DQN and SMA
        strategies, or a user's own: docs/strategies.md).
    signals
        Per-bar ``forecast`` and ``regime`` (from ``Forecaster.forecast_frame``) aligned to
        ``candles``; they reach the strategy as feed lines. None for per-bar inference.
    qvalues
        A DQN agent's Q-values (columns ``Q_LINES``) aligned to ``candles``, as feed lines.
    bar
        Bar length, so analyzers bucket intraday bars correctly; inferred when None.
    strategy_kwargs
        The strategy's params. ``cfg``'s ``CONFIG_PARAMS`` and the ``CONTEXT_PARAMS``
        (``forecaster``, ``inference``, ``history``) reach only a strategy that declares them
        (``strategy_params``), so a job can run any strategy.

    Notes
    -----
    Market orders placed at the close of t fill at the open of t+1, with commission on notional
    and slippage against the trader.
    """
    kwargs = strategy_params(strategy_cls, cfg, strategy_kwargs)
    feed_frame = candles[["open", "high", "low", "close", "volume"]].copy()
    if signals is not None:
        aligned = signals.reindex(candles.index)
        feed_frame["forecast"] = aligned["forecast"].to_numpy(dtype=float)
        feed_frame["regime"] = aligned["regime"].to_numpy(dtype=float)
    else:
        feed_frame["forecast"] = np.nan
        feed_frame["regime"] = -1.0
    feed_cls: type = SignalData
    if qvalues is not None:
        aligned_q = qvalues.reindex(candles.index)
        for col in Q_LINES:
            feed_frame[col] = aligned_q[col].to_numpy(dtype=float)
        feed_cls = QValueData
    cerebro = make_cerebro(feed_frame, cfg, bar=bar, runonce=runonce, preload=preload,
                           feed_cls=feed_cls)
    cerebro.addstrategy(strategy_cls, **kwargs)
    with gc_frozen():
        strat = cerebro.run()[0]
        result = BacktestResult(
            bars=strat.records_frame(), fills=strat.fills_frame(), trades=strat.trades_frame(),
            rejected=pd.DataFrame(strat.rejected),
            rounded_to_zero=strat.rounded_to_zero, final_value=cerebro.broker.getvalue(),
            start_cash=cfg.cash,
            info={"deferred_fills": getattr(cerebro.broker, "skipped_placeholder_fills", 0)})
    models = _models_used(result.bars, signals, strategy_kwargs.get("forecaster"))
    if models is not None:
        result.bars["model"] = models
    if result.info["deferred_fills"]:
        logger.warning("%d fills were deferred past zero-volume placeholder candles to the next "
                       "real bar's open", result.info["deferred_fills"])
    if len(result.rejected):
        logger.warning("%d orders were rejected by the broker (see rejected orders in the "
                       "report)", len(result.rejected))
    return result


def _models_used(bars: pd.DataFrame, signals: pd.DataFrame | None,
                 forecaster: Any) -> pd.Series | None:
    """Which model forecast each bar: the signals' ``model`` column (batch) or the forecaster's
    route of the bar's regime (per bar); '' where no forecast was made; None when unknown
    (hand-made signals without a ``model`` column)."""
    if signals is not None:
        if "model" not in signals:
            return None
        return signals["model"].reindex(bars.index).fillna("").astype(str)
    if not hasattr(forecaster, "routes"):  # no forecaster, or a stand-in without routing
        return None
    routes = forecaster.routes()
    made = bars["forecast"].notna().to_numpy()
    return pd.Series([routes.get(int(r), "") if m else "" for r, m in
                      zip(bars["regime"].to_numpy(), made)], index=bars.index)
