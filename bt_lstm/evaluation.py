"""Return series and performance metrics (plain numpy; formulas in the README)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

PERIODS_PER_YEAR = 365  # crypto trades every day


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


def forecast_scores(forecast: np.ndarray, realised: np.ndarray) -> dict[str, float]:
    """MSE, MAE and directional accuracy of a forecast, beside the zero forecast's MSE and MAE.

    Rows where either value is NaN are left out; ``n`` counts the rest. Directional accuracy is
    the share of rows where sign(forecast) == sign(realised).
    """
    f = np.asarray(forecast, dtype=float)
    r = np.asarray(realised, dtype=float)
    ok = np.isfinite(f) & np.isfinite(r)
    f, r = f[ok], r[ok]
    if not len(f):
        nan = float("nan")
        return {"n": 0, "mse": nan, "mae": nan, "dir_acc": nan, "zero_mse": nan, "zero_mae": nan}
    return {"n": int(len(f)), "mse": float(np.mean((f - r) ** 2)),
            "mae": float(np.mean(np.abs(f - r))),
            "dir_acc": float(np.mean(np.sign(f) == np.sign(r))),
            "zero_mse": float(np.mean(r ** 2)), "zero_mae": float(np.mean(np.abs(r)))}


def regression_scores(forecast: np.ndarray, realised: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE, R², directional accuracy and Spearman IC of a forecast, with ``n``.

    R² is ``1 - SSE / SST`` with SST around the mean of the realised values scored (so a
    constant forecast at that mean scores 0). NaN rows in either input are left out.
    """
    from scipy.stats import spearmanr

    f = np.asarray(forecast, dtype=float)
    r = np.asarray(realised, dtype=float)
    ok = np.isfinite(f) & np.isfinite(r)
    f, r = f[ok], r[ok]
    nan = float("nan")
    if len(f) < 2:
        return {"n": int(len(f)), "mse": nan, "rmse": nan, "mae": nan, "r2": nan,
                "dir_acc": nan, "ic": nan}
    sse = float(np.sum((f - r) ** 2))
    sst = float(np.sum((r - r.mean()) ** 2))
    ic = float(spearmanr(f, r).statistic) if np.ptp(f) > 0 and np.ptp(r) > 0 else nan
    return {"n": int(len(f)), "mse": sse / len(f), "rmse": float(np.sqrt(sse / len(f))),
            "mae": float(np.mean(np.abs(f - r))), "r2": 1.0 - sse / sst if sst > 0 else nan,
            "dir_acc": float(np.mean(np.sign(f) == np.sign(r))), "ic": ic}


def diebold_mariano(errors_a: np.ndarray, errors_b: np.ndarray) -> dict[str, float]:
    """Diebold–Mariano test of equal squared-error loss for one-step forecasts.

    ``d_t = e_a,t² - e_b,t²``; ``DM = mean(d) / sqrt(var(d) / n)`` with the lag-0 variance
    (``ddof=0``), as for horizon 1; two-sided p-value from the standard normal. A negative
    statistic means ``a`` has the smaller loss. NaN when the losses are identical.
    """
    from scipy.stats import norm

    a = np.asarray(errors_a, dtype=float)
    b = np.asarray(errors_b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] ** 2 - b[ok] ** 2
    var = float(np.mean((d - d.mean()) ** 2)) if len(d) else 0.0
    if len(d) < 2 or var <= 0:
        return {"dm": float("nan"), "p_value": float("nan"), "n": int(len(d))}
    stat = float(d.mean() / np.sqrt(var / len(d)))
    return {"dm": stat, "p_value": float(2 * norm.sf(abs(stat))), "n": int(len(d))}
