"""The portfolio run's figures and files on our side of the portfolio backtest: the book's
performance beside the equal-weight buy-and-hold basket, each market's P&L line and its own
buy-and-hold, luck statistics, and the CSVs of the run folder.

Interim: the portfolio backtest's own report helpers (metrics per market, tearsheet, overview
picture) replace the figures here once they exist; the keys stay.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from bt_lstm.backtest.metrics import (
    bar_returns,
    buy_and_hold_equity,
    daily_returns,
    performance,
    trading_stats,
)
from bt_lstm.config import PipelineConfig
from bt_lstm.data.files import atomic_write_text


def basket_equity(candles: Mapping[str, pd.DataFrame], index: pd.DatetimeIndex,
                  cfg: PipelineConfig) -> pd.Series:
    """The equal-weight buy-and-hold basket: cash split evenly, each market bought at its first
    test open, marked at its last close at or before each time (a closed market keeps its last
    close; before its first bar its share is cash)."""
    share = cfg.strategy.cash / len(candles)
    parts = []
    for frame in candles.values():
        held = buy_and_hold_equity(frame, share, cfg.strategy.commission,
                                   cfg.strategy.slippage)
        parts.append(held.reindex(index, method="ffill").fillna(share))
    return pd.concat(parts, axis=1).sum(axis=1).rename("value")


def portfolio_figures(result: Any, candles: Mapping[str, pd.DataFrame], cfg: PipelineConfig
                      ) -> tuple[dict[str, Any], pd.Series, pd.Series]:
    """({"portfolio": ..., "markets": {m: ...}}, the book's daily returns, the basket's)."""
    cash = cfg.strategy.cash
    port_daily = daily_returns(bar_returns(result.equity, cash))
    basket_daily = daily_returns(bar_returns(basket_equity(candles, result.equity.index, cfg),
                                             cash))
    port = performance(port_daily)
    port.update(trading_stats(result.bars, result.trades, result.fills, result.rejected,
                              result.info.get("rounded_to_zero", 0)))
    port.update(final_value=float(result.final_value), basket=performance(basket_daily))
    markets = {}
    for sym in result.symbols:
        own = result.market(sym)
        pnl = result.pnl[sym]
        bh = buy_and_hold_equity(candles[sym], cash, cfg.strategy.commission,
                                 cfg.strategy.slippage)
        markets[sym] = dict(trading_stats(own["bars"], own["trades"], own["fills"],
                                          own["rejected"], result.counts[sym]["rounded_to_zero"]),
                            pnl=float(pnl.iloc[-1]) if len(pnl) else 0.0,
                            buy_and_hold=performance(daily_returns(bar_returns(bh, cash))),
                            counts=dict(result.counts[sym]))
    return {"portfolio": port, "markets": markets}, port_daily, basket_daily


def write_portfolio_files(folder: Path, result: Any, port_daily: pd.Series,
                          basket_daily: pd.Series) -> None:
    """returns.csv (book, basket), bars.csv (with ``symbol``), fills.csv, trades.csv,
    pnl.csv (each market's P&L at every time), each written atomically."""
    returns = pd.DataFrame({"portfolio": port_daily, "basket": basket_daily})
    atomic_write_text(folder / "returns.csv", returns.to_csv())
    atomic_write_text(folder / "bars.csv", result.bars.to_csv())
    atomic_write_text(folder / "fills.csv", result.fills.to_csv(index=False))
    atomic_write_text(folder / "trades.csv", result.trades.to_csv(index=False))
    atomic_write_text(folder / "pnl.csv", result.pnl.to_csv())
