"""Return series and performance metrics (plain numpy).

Formulas: docs/concepts/costs-and-fills.md.

The one place the figures of a run are computed: the terminal, metrics.json and the tearsheet
all show these numbers (see CONVENTIONS).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.backtest.engine import BacktestResult
from bt_lstm.config import PipelineConfig

PERIODS_PER_YEAR = 365  # crypto trades every day
CONVENTIONS = (f"daily returns (each calendar day's bars compounded), {PERIODS_PER_YEAR} periods "
               f"a year (the market trades every day), risk-free rate 0; Sharpe = mean / std "
               f"(ddof 1) x sqrt({PERIODS_PER_YEAR}); Sortino uses the root mean square of the "
               f"negative daily returns; CAGR = (1 + total return) ^ ({PERIODS_PER_YEAR} / days) "
               f"- 1; exposure: the share of bars with a position")


def bar_returns(equity: pd.Series, start_value: float) -> pd.Series:
    """Simple return of each bar from the equity at each close (the first bar vs the start)."""
    prev = equity.shift(1)
    prev.iloc[0] = start_value
    return (equity / prev - 1.0).rename("returns")


def daily_returns(returns: pd.Series) -> pd.Series:
    """Compound per-bar returns into calendar-day returns (what QuantStats expects)."""
    daily = (1.0 + returns).groupby(returns.index.normalize()).prod() - 1.0
    daily.index = pd.DatetimeIndex(daily.index).tz_localize(None)
    daily.index.name = "date"
    return daily


def buy_and_hold_equity(candles: pd.DataFrame, cash: float, commission: float,
                        slippage: float) -> pd.Series:
    """Buy everything at the first bar's open (paying costs), mark to each close."""
    entry = candles["open"].iloc[0] * (1.0 + slippage)
    units = cash * (1.0 - commission) / entry
    return (units * candles["close"]).rename("value")


def max_drawdown(returns: pd.Series) -> float:
    """Most negative fall of compounded equity from its running peak (starting at 1)."""
    equity = np.concatenate([[1.0], np.cumprod(1.0 + returns.to_numpy())])
    return float(np.min(equity / np.maximum.accumulate(equity) - 1.0))


def performance(daily: pd.Series) -> dict[str, float]:
    """Total return, CAGR, Sharpe, Sortino, max drawdown and volatility of daily returns."""
    r = daily.to_numpy(dtype=float)
    n = len(r)
    total = float(np.prod(1.0 + r) - 1.0) if n else 0.0
    years = n / PERIODS_PER_YEAR
    cagr = float((1.0 + total) ** (1.0 / years) - 1.0) if n and total > -1 else float("nan")
    std = float(r.std(ddof=1)) if n > 1 else float("nan")
    downside = float(np.sqrt(np.sum(np.minimum(r, 0.0) ** 2) / n)) if n else float("nan")
    root = np.sqrt(PERIODS_PER_YEAR)
    return {
        "total_return": total,
        "cagr": cagr,
        "sharpe": float(r.mean() / std * root) if std and std > 0 else float("nan"),
        "sortino": float(r.mean() / downside * root) if downside > 0 else float("nan"),
        "max_drawdown": max_drawdown(daily) if n else 0.0,
        "volatility": float(std * root) if n > 1 else float("nan"),
    }


def trading_stats(bars: pd.DataFrame, trades: pd.DataFrame, fills: pd.DataFrame,
                  rejected: pd.DataFrame, rounded_to_zero: int) -> dict[str, Any]:
    """Trades, win rate, exposure and order problems of a backtest."""
    n_trades = int(len(trades))
    wins = int((trades["pnl_net"] > 0).sum()) if n_trades else 0
    exposure = float((bars["position"] != 0).mean()) if len(bars) else 0.0
    return {
        "trades": n_trades,
        "win_rate": wins / n_trades if n_trades else float("nan"),
        "exposure": exposure,
        "fills": int(len(fills)),
        "commission_paid": float(fills["commission"].sum()) if len(fills) else 0.0,
        "rejected_orders": int(len(rejected)),
        "rounded_to_zero": int(rounded_to_zero),
    }


def score_backtest(test: pd.DataFrame, result: BacktestResult, cfg: PipelineConfig
                   ) -> tuple[pd.Series, pd.Series, dict[str, Any], dict[str, Any]]:
    """Daily returns and performance of the strategy and of buy-and-hold over ``test``."""
    cash = cfg.strategy.cash
    strat_daily = daily_returns(bar_returns(result.equity, cash))
    bh_equity = buy_and_hold_equity(test, cash, cfg.strategy.commission, cfg.strategy.slippage)
    bh_daily = daily_returns(bar_returns(bh_equity, cash))
    strategy = performance(strat_daily)
    strategy.update(trading_stats(result.bars, result.trades, result.fills, result.rejected,
                                  result.rounded_to_zero))
    strategy["final_value"] = float(result.final_value)
    bh = performance(bh_daily)
    bh["exposure"] = 1.0 if len(test) else 0.0  # bought at the first open, held to the end
    return strat_daily, bh_daily, strategy, bh


def drawdown_periods(daily: pd.Series, top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` deepest drawdowns of compounded daily returns, deepest first.

    Each: ``start`` (the last peak's day), ``trough``, ``end`` (the first day back at the peak,
    None when the run ended below it: not recovered), ``depth`` (negative) and ``days``
    (start to end, or to the last day when not recovered).
    """
    if not len(daily):
        return []
    equity = np.cumprod(1.0 + daily.to_numpy(dtype=float))
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    under = equity / peak - 1.0
    days = daily.index
    out, i, n = [], 0, len(under)
    while i < n:
        if under[i] >= 0:
            i += 1
            continue
        j = i
        while j < n and under[j] < 0:
            j += 1
        trough = i + int(np.argmin(under[i:j]))
        start = days[i - 1] if i > 0 else days[0] - pd.Timedelta(days=1)
        end = days[j] if j < n else None
        out.append({"start": str(start.date()), "trough": str(days[trough].date()),
                    "end": None if end is None else str(end.date()),
                    "depth": float(under[trough]),
                    "days": int(((end if end is not None else days[-1]) - start).days)})
        i = j
    return sorted(out, key=lambda d: d["depth"])[:top]


def period_returns(daily: pd.Series, freq: str) -> pd.Series:
    """Compounded returns per calendar month (``"M"``) or year (``"Y"``), only periods with a
    day of the run (no month before the first day nor after the last)."""
    if not len(daily):
        return pd.Series(dtype=float)
    keys = daily.index.to_period(freq)
    return (1.0 + daily).groupby(keys).prod() - 1.0
