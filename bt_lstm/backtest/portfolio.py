"""One Backtrader run over several markets: a feed per market, one broker (shared cash, costs),
``run_portfolio_backtest`` -> ``PortfolioResult`` (per-market bars, fills, trades, P&L)."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from bt_lstm.backtest.allocation import VOL_BARS, check_allocation, trailing_volatility
from bt_lstm.backtest.engine import (
    SignalData,
    TradableBarBroker,
    _models_used,
    cerebro_with_broker,
    gc_frozen,
    make_feed,
    strategy_params,
)
from bt_lstm.config import StrategyConfig
from bt_lstm.trading.values import is_placeholder

logger = logging.getLogger(__name__)


class PortfolioData(SignalData):
    """SignalData plus ``vol``: the market's trailing volatility at each close
    (``allocation.trailing_volatility``), which the inverse-vol weights read."""

    lines = ("vol",)
    _COLUMNS = SignalData._COLUMNS + ("vol",)


class PortfolioBroker(TradableBarBroker):
    """TradableBarBroker for feeds on different clocks: an order is tried only at a new bar of
    its own market, and fills deferred past placeholder candles are counted per market.

    Notes
    -----
    Backtrader steps all feeds on the union of their timestamps and leaves a feed without a
    bar at t on its last bar. BackBroker already refuses to fill a market order at a bar no
    later than the order's (``_try_exec_market``); the check here comes first, so a market
    closed after a placeholder candle does not count that placeholder's deferral again at
    every step of the other markets' clock, and any order type waits for its own market.
    """

    def start(self) -> None:
        """TradableBarBroker.start, and empty counts of deferred fills per market."""
        super().start()
        self.deferred: dict[str, int] = {}
        self._tried: dict[int, int] = {}  # order ref -> its market's length when last tried

    def _try_exec(self, order: bt.Order) -> None:
        d = order.data
        n = len(d)
        if n == self._tried.get(order.ref) or d.datetime[0] <= order.created.dt:
            return  # its market has had no new bar (closed, gap, not after the decision)
        self._tried[order.ref] = n
        if is_placeholder(d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0]):
            self.deferred[d._name] = self.deferred.get(d._name, 0) + 1
            return
        bt.brokers.BackBroker._try_exec(self, order)


@dataclass
class PortfolioResult:
    """What happened in a portfolio backtest, per market and for the whole book."""

    # per market per bar of that market (index: bar time), ``symbol`` first: bar, regime,
    # forecast, signal, position (before the bar's order), value (the whole book at that
    # close), weight (the market's allocation), model (when known)
    bars: pd.DataFrame
    fills: pd.DataFrame  # datetime, bar (in its market's feed), size, price, commission, symbol
    trades: pd.DataFrame  # closed trades: opened, closed, pnl, pnl_net, symbol
    rejected: pd.DataFrame  # orders the broker refused: datetime, status, size, symbol
    equity: pd.Series  # the book's value at every step of the clock (the union of bar times)
    pnl: pd.DataFrame  # per market (columns), on equity's index: P&L from its fills, costs in
    symbols: tuple[str, ...]
    start_cash: float
    final_value: float
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per market
    info: dict[str, Any] = field(default_factory=dict)

    def market(self, symbol: str) -> dict[str, pd.DataFrame]:
        """``symbol``'s rows of bars, fills, trades and rejected orders."""
        def rows(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[frame["symbol"] == symbol] if len(frame) else frame

        return {"bars": rows(self.bars), "fills": rows(self.fills),
                "trades": rows(self.trades), "rejected": rows(self.rejected)}


def market_pnl(fills: pd.DataFrame, closes: Mapping[str, pd.Series],
               index: pd.DatetimeIndex) -> pd.DataFrame:
    """Each market's P&L at every time of ``index``, from its fills alone.

    ``-(sum of size x price + commission)`` of its fills up to t plus its position at t marked
    at its last close at or before t (the close of a bar it had; no price is made up for a bar
    it did not have). Summed over the markets and added to the starting cash it is the book's
    value (``PortfolioResult.equity``), costs included.
    """
    out = {}
    for symbol, close in closes.items():
        own = fills[fills["symbol"] == symbol] if len(fills) else fills
        flows = pd.Series(-(own["size"] * own["price"] + own["commission"]).to_numpy(dtype=float),
                          index=pd.DatetimeIndex(own["datetime"]))
        sizes = pd.Series(own["size"].to_numpy(dtype=float), index=flows.index)
        cash = flows.groupby(level=0).sum().cumsum().reindex(index, method="ffill").fillna(0.0)
        pos = sizes.groupby(level=0).sum().cumsum().reindex(index, method="ffill").fillna(0.0)
        last_close = close.reindex(index, method="ffill")
        out[symbol] = cash + (pos * last_close).fillna(0.0)
    return pd.DataFrame(out, index=index)


def _check_markets(candles: Mapping[str, pd.DataFrame],
                   signals: Mapping[str, pd.DataFrame | None]) -> None:
    if not len(candles):
        raise ValueError("a portfolio backtest needs at least one market")
    extra = sorted(set(signals) - set(candles))
    if extra:
        raise ValueError(f"signals for {extra}, which have no candles")
    for symbol, frame in candles.items():
        if not len(frame):
            raise ValueError(f"{symbol}: no candles in the traded span")
        if not (frame.index.is_monotonic_increasing and frame.index.is_unique):
            raise ValueError(f"{symbol}: candle times must be sorted and unique")


def _feed_frame(frame: pd.DataFrame, signals: pd.DataFrame | None, vol_bars: int | None
                ) -> pd.DataFrame:
    out = frame[["open", "high", "low", "close", "volume"]].copy()
    if signals is not None:
        aligned = signals.reindex(frame.index)
        out["forecast"] = aligned["forecast"].to_numpy(dtype=float)
        out["regime"] = aligned["regime"].to_numpy(dtype=float)
    else:
        out["forecast"] = np.nan
        out["regime"] = -1.0
    if vol_bars is not None:
        out["vol"] = trailing_volatility(frame["close"], vol_bars).to_numpy(dtype=float)
    return out


def run_portfolio_backtest(candles: Mapping[str, pd.DataFrame],
                           signals: Mapping[str, pd.DataFrame | None], strategy_cls: type,
                           cfg: StrategyConfig, allocation: str = "equal",
                           bar: pd.Timedelta | None = None, runonce: bool = True,
                           preload: bool = True, vol_bars: int = VOL_BARS,
                           **strategy_kwargs: Any) -> PortfolioResult:
    """Trade every market of ``candles`` in one Backtrader run with one broker.

    Parameters
    ----------
    candles
        Per symbol, OHLCV of the traded span on that market's own timestamps (a market may
        start later, have gaps or close at weekends); not modified.
    signals
        Per symbol, the ``forecast`` and ``regime`` (and optional ``model``) of each bar,
        aligned to ``candles[symbol]``, as ``run_backtest`` takes them; None (or absent) for a
        market without precomputed forecasts (per-bar inference, or flat).
    strategy_cls
        ``strategies.portfolio.PortfolioStrategy`` or a subclass.
    allocation
        ``equal`` or ``inverse-vol`` (``bt_lstm.backtest.allocation``).
    bar
        The bar length (the same for every market); inferred from the first market when None.
    vol_bars
        Trailing bars of each market's own log returns for the inverse-vol weights.
    strategy_kwargs
        The strategy's params (``forecasters`` and ``histories`` for ``inference='per_bar'``).

    Notes
    -----
    A market's decision at the close of its bar t fills at the open of its next bar, on its
    own clock (``PortfolioBroker``); a market with no bar at a step (closed, not started, gap)
    neither decides nor fills there.
    """
    _check_markets(candles, signals)
    check_allocation(allocation)
    kwargs = strategy_params(strategy_cls, cfg, dict(strategy_kwargs, allocation=allocation))
    cerebro = cerebro_with_broker(cfg, runonce=runonce, preload=preload,
                                  broker_cls=PortfolioBroker)
    symbols = tuple(candles)
    vols = allocation != "equal"  # only inverse-vol reads the volatility line
    if bar is None:
        from bt_lstm.data.candles import infer_bar

        bar = infer_bar(candles[symbols[0]].index)
    for symbol in symbols:
        frame = _feed_frame(candles[symbol], signals.get(symbol), vol_bars if vols else None)
        cerebro.adddata(make_feed(frame, bar, PortfolioData if vols else SignalData),
                        name=symbol)
    cerebro.addstrategy(strategy_cls, **kwargs)
    with gc_frozen():
        strat = cerebro.run()[0]
        result = _result(strat, cerebro.broker, candles, signals, cfg, strategy_kwargs)
    _log_problems(result)
    return result


def _result(strat: Any, broker: PortfolioBroker, candles: Mapping[str, pd.DataFrame],
            signals: Mapping[str, pd.DataFrame | None], cfg: StrategyConfig,
            strategy_kwargs: dict[str, Any]) -> PortfolioResult:
    symbols = tuple(strat.symbols)
    bars, fills = strat.records_frame(), strat.fills_frame()
    rejected = pd.DataFrame(strat.rejected, columns=["datetime", "status", "size", "symbol"])
    equity = strat.equity_series()
    closes = {s: candles[s]["close"] for s in symbols}
    forecasters = strategy_kwargs.get("forecasters") or {}
    models = []
    for s in symbols:
        own = bars[bars["symbol"] == s]
        used = _models_used(own, signals.get(s), forecasters.get(s))
        models.append(used if used is not None else pd.Series("", index=own.index))
    if any(s is not None and "model" in s for s in signals.values()) or forecasters:
        bars["model"] = _in_bar_order(bars, symbols, models)
    counts = {s: {"rounded_to_zero": strat.rounded[k], "no_room": strat.no_room[k],
                  "deferred_fills": broker.deferred.get(s, 0),
                  "rejected_orders": int((rejected["symbol"] == s).sum())}
              for k, s in enumerate(symbols)}
    return PortfolioResult(
        bars=bars, fills=fills, trades=strat.trades_frame(), rejected=rejected, equity=equity,
        pnl=market_pnl(fills, closes, equity.index), symbols=symbols, start_cash=cfg.cash,
        final_value=broker.getvalue(), counts=counts,
        info={"deferred_fills": sum(broker.deferred.values()),
              "rounded_to_zero": strat.rounded_to_zero})


def _in_bar_order(bars: pd.DataFrame, symbols: tuple[str, ...],
                  models: list[pd.Series]) -> np.ndarray:
    out = np.empty(len(bars), dtype=object)
    sym = bars["symbol"].to_numpy()
    for s, used in zip(symbols, models):
        out[sym == s] = used.to_numpy(dtype=object)
    return out


def _log_problems(result: PortfolioResult) -> None:
    for symbol, c in result.counts.items():
        if c["deferred_fills"]:
            logger.warning("%s: %d fills were deferred past zero-volume placeholder candles to "
                           "the next real bar's open", symbol, c["deferred_fills"])
        if c["rejected_orders"]:
            logger.warning("%s: %d orders were rejected by the broker (see rejected orders in "
                           "the report)", symbol, c["rejected_orders"])
        if c["no_room"]:
            logger.warning("%s: %d entries found no room under --fraction (the other markets' "
                           "positions held it)", symbol, c["no_room"])
