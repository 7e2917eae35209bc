"""Score a trial on the validation tail: forecast MSE relative to the zero forecast, and the
after-cost Sharpe of the trading rule at the threshold chosen there. Plain numpy, no Optuna.

Legend: V validation window ends. Forecasts and realised returns are next-bar log returns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bt_lstm.backtest.metrics import PERIODS_PER_YEAR, daily_returns
from bt_lstm.config import StrategyConfig

QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9)  # of |forecast| above the floor: threshold candidates


def mse_ratio(pred: np.ndarray, y: np.ndarray) -> float:
    """sum((pred - y)^2) / sum(y^2): below 1 beats forecasting zero (scale-free)."""
    denom = float(np.sum(np.square(y)))
    if denom <= 0:
        raise ValueError("validation targets are all zero; the MSE ratio is undefined")
    return float(np.sum(np.square(pred - y)) / denom)


def round_trip_cost(strategy: StrategyConfig) -> float:
    """Commission and slippage paid entering and leaving a position (as a log-return floor)."""
    return 2.0 * (strategy.commission + strategy.slippage)


def rule_returns(forecast: np.ndarray, realised: np.ndarray, threshold: float,
                 strategy: StrategyConfig) -> np.ndarray:
    """Per-bar after-cost returns (V,) of long/short/flat on ``forecast`` vs ``threshold``.

    Notes
    -----
    Bar t's position is decided at its close and earns the log return ``realised[t]`` to the
    next close (an approximation of the backtest's next-open fill); each change of position
    pays commission plus slippage on the traded fraction. NaN forecasts mean flat.
    """
    f = np.nan_to_num(forecast, nan=0.0)
    pos = np.where(f > threshold, 1.0, np.where(f < -threshold, -1.0, 0.0))
    if strategy.long_only:
        pos = np.maximum(pos, 0.0)
    pos = pos * strategy.position_fraction
    turnover = np.abs(np.diff(np.concatenate([[0.0], pos])))
    gross = pos * np.expm1(np.nan_to_num(realised, nan=0.0))
    return gross - turnover * (strategy.commission + strategy.slippage)


def sharpe_of(returns: np.ndarray, index: pd.DatetimeIndex) -> float:
    """Annualised Sharpe of the daily-compounded returns (as docs/concepts/costs-and-fills.md
    defines it); 0 if flat."""
    daily = daily_returns(pd.Series(returns, index=index)).to_numpy()
    if len(daily) < 2:
        return 0.0
    sd = float(np.std(daily, ddof=1))
    return 0.0 if sd <= 1e-15 else float(np.mean(daily) / sd * np.sqrt(PERIODS_PER_YEAR))


@dataclass(frozen=True)
class ThresholdChoice:
    """The trading threshold chosen on the validation tail, its after-cost Sharpe there, and
    every candidate's Sharpe."""
    threshold: float
    sharpe: float  # annualised, after costs, on the validation tail at ``threshold``
    candidates: dict[float, float]  # threshold -> Sharpe


def choose_threshold(forecast: np.ndarray, realised: np.ndarray, index: pd.DatetimeIndex,
                     strategy: StrategyConfig, floor: float) -> ThresholdChoice:
    """The threshold >= ``floor`` with the best after-cost Sharpe on the validation tail.

    Candidates: the floor and quantiles of |forecast| above it; ties go to the smaller one.
    """
    a = np.abs(forecast[np.isfinite(forecast)])
    above = a[a > floor]
    cands = sorted({float(floor)} | {float(q) for q in (np.quantile(above, QUANTILES)
                                                         if len(above) else [])})
    scores = {t: sharpe_of(rule_returns(forecast, realised, t, strategy), index) for t in cands}
    best = max(cands, key=lambda t: (scores[t], -t))
    return ThresholdChoice(best, scores[best], scores)
