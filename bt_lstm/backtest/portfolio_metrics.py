"""The figures of a portfolio backtest: the book beside the equal-weight buy-and-hold basket, and
each market's sleeve beside that market's buy-and-hold (``score_portfolio``).

The same formulas as a one-market run (``backtest.metrics``): daily returns, performance,
trading statistics. Definitions (docs/guides/portfolio-backtest.md):

basket
    The benchmark: the starting cash split equally among the run's N markets; each market's
    share buys it at its first bar's open (commission and slippage paid) and is held to the
    end, marked at its last close. A market that starts later keeps its share in cash until
    its first bar. With one market it is that market's buy-and-hold.
sleeve
    A market's own line: a nominal ``cash / N`` plus its P&L from its fills
    (``PortfolioResult.pnl``, costs included), from its first bar. The sleeves' P&L sum to the
    book's.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.backtest.metrics import (
    bar_returns,
    buy_and_hold_equity,
    daily_returns,
    performance,
    trading_stats,
)
from bt_lstm.backtest.portfolio import PortfolioResult
from bt_lstm.config import PipelineConfig

Luck = Callable[[pd.Series, pd.Series], dict[str, Any]]


def basket_equity(candles: Mapping[str, pd.DataFrame], cash: float, commission: float,
                  slippage: float, index: pd.DatetimeIndex) -> pd.Series:
    """The equal-weight buy-and-hold basket's value at each time of ``index``.

    Each of the N markets gets ``cash / N``: cash until its first bar, then
    ``buy_and_hold_equity`` of that share marked at its last close at or before t.
    """
    share = cash / len(candles)
    total = pd.Series(0.0, index=index)
    for frame in candles.values():
        held = buy_and_hold_equity(frame, share, commission, slippage)
        total += held.reindex(index, method="ffill").fillna(share).to_numpy()
    return total.rename("value")


def book_positions(result: PortfolioResult) -> pd.DataFrame:
    """Each market's position at every step of the clock (columns: symbols).

    A market's position changes only at its own bars (its fills are at its opens), so between
    them it is its last bar's; 0 before it starts.
    """
    bars = result.bars
    out = {}
    for symbol in result.symbols:
        own = bars.loc[bars["symbol"] == symbol, "position"]
        out[symbol] = own.reindex(result.equity.index, method="ffill").fillna(0.0)
    return pd.DataFrame(out, index=result.equity.index)


def score_portfolio(candles: Mapping[str, pd.DataFrame], result: PortfolioResult,
                    cfg: PipelineConfig, luck: Luck | None = None
                    ) -> tuple[dict[str, Any], dict[str, pd.Series]]:
    """The figures of ``metrics.json``'s ``"portfolio"`` and ``"markets"`` sections.

    Parameters
    ----------
    candles
        Per symbol, the traded candles (those given to ``run_portfolio_backtest``).
    luck
        A function of (strategy daily returns, benchmark daily returns) -> the luck statistics
        (``jobs.backtest.luck_figures``); None leaves them out.

    Returns
    -------
    metrics
        ``{"portfolio": {...}, "markets": {symbol: {...}}}``: each with ``period``,
        ``strategy``, ``buy_and_hold`` (the basket for the portfolio) and ``statistics``
        when ``luck`` is given; each market adds its ``counts``.
    daily
        The daily returns: ``"portfolio"``, ``"basket"``, and ``<symbol>`` /
        ``<symbol>:buy_and_hold`` for each market.
    """
    s = cfg.strategy
    equity = result.equity
    basket = basket_equity(candles, s.cash, s.commission, s.slippage, equity.index)
    port_daily = daily_returns(bar_returns(equity, s.cash))
    basket_daily = daily_returns(bar_returns(basket, s.cash))
    strategy = performance(port_daily)
    strategy.update(trading_stats(result.bars, result.trades, result.fills, result.rejected,
                                  sum(c["rounded_to_zero"] for c in result.counts.values())))
    strategy["exposure"] = float((book_positions(result) != 0).any(axis=1).mean()) \
        if len(equity) else 0.0
    strategy["final_value"] = float(result.final_value)
    bench = performance(basket_daily)
    bench["exposure"] = 1.0 if len(equity) else 0.0
    portfolio = {"period": _period(equity.index, len(port_daily)), "strategy": strategy,
                 "buy_and_hold": bench, "benchmark": "equal-weight buy-and-hold basket",
                 "markets": list(result.symbols),
                 "costs": {"commission": s.commission, "slippage": s.slippage}}
    if luck is not None:
        portfolio["statistics"] = luck(port_daily, basket_daily)
    daily = {"portfolio": port_daily, "basket": basket_daily}
    markets = {}
    for symbol in result.symbols:
        markets[symbol], own_daily, own_bh = _score_market(symbol, candles[symbol], result, cfg,
                                                           luck)
        daily[symbol], daily[f"{symbol}:buy_and_hold"] = own_daily, own_bh
    return {"portfolio": portfolio, "markets": markets}, daily


def _score_market(symbol: str, frame: pd.DataFrame, result: PortfolioResult,
                  cfg: PipelineConfig, luck: Luck | None
                  ) -> tuple[dict[str, Any], pd.Series, pd.Series]:
    s = cfg.strategy
    share = s.cash / len(result.symbols)
    rows = result.market(symbol)
    pnl = result.pnl[symbol]
    sleeve = share + pnl[pnl.index >= frame.index[0]].reindex(frame.index)
    own_daily = daily_returns(bar_returns(sleeve, share))
    bh_daily = daily_returns(bar_returns(buy_and_hold_equity(frame, share, s.commission,
                                                             s.slippage), share))
    counts = result.counts[symbol]
    strategy = performance(own_daily)
    strategy.update(trading_stats(rows["bars"], rows["trades"], rows["fills"], rows["rejected"],
                                  counts["rounded_to_zero"]))
    strategy["pnl"] = float(pnl.iloc[-1]) if len(pnl) else 0.0
    bh = performance(bh_daily)
    bh["exposure"] = 1.0
    out = {"period": _period(frame.index, len(own_daily)), "strategy": strategy,
           "buy_and_hold": bh, "counts": dict(counts),
           "weight": _weights(rows["bars"])}
    if luck is not None:
        out["statistics"] = luck(own_daily, bh_daily)
    return out, own_daily, bh_daily


def _weights(bars: pd.DataFrame) -> dict[str, float]:
    w = bars["weight"].to_numpy(dtype=float) if len(bars) else np.zeros(0)
    return {"mean": float(w.mean()) if len(w) else float("nan"),
            "min": float(w.min()) if len(w) else float("nan"),
            "max": float(w.max()) if len(w) else float("nan")}


def _period(index: pd.DatetimeIndex, n_days: int) -> dict[str, Any]:
    return {"start": str(index[0]) if len(index) else None,
            "end": str(index[-1]) if len(index) else None, "bars": len(index), "days": n_days}
