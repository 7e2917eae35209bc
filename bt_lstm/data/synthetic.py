"""Seeded regime-switching market with known truth: the bundled SAMPLE data and test fixtures."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SAMPLE_NAME = "SAMPLE"

# Per regime (0 bearish, 1 sideways, 2 bullish): drift and volatility of the per-bar log
# return, and its autocorrelation (momentum when > 0, mean reversion when < 0).
DRIFT = np.array([-0.005, 0.0, 0.005])
VOLATILITY = np.array([0.014, 0.007, 0.011])
AUTOCORR = np.array([0.20, -0.35, 0.25])
MEAN_SPELL_BARS = 300.0


@dataclass(frozen=True)
class SyntheticMarket:
    """Candles plus the truth behind them.

    ``regime[t]`` is the regime that generated the return of bar t; ``expected_return[t]`` is
    E[log(close[t+1] / close[t]) | everything known at the close of t, including regime[t]].
    """

    frame: pd.DataFrame
    regime: pd.Series
    expected_return: pd.Series


def transition_matrix(mean_spell_bars: float = MEAN_SPELL_BARS) -> np.ndarray:
    """Markov transitions: stay with prob 1 - 1/spell, else move to one of the others evenly."""
    leave = 1.0 / mean_spell_bars
    m = np.full((3, 3), leave / 2.0)
    np.fill_diagonal(m, 1.0 - leave)
    return m


def make_market(n_bars: int = 6570, seed: int = 42, freq: str = "4h",
                start: str = "2021-01-01") -> SyntheticMarket:
    """Generate ``n_bars`` candles of a three-regime market, deterministic for a given seed.

    Notes
    -----
    Each bar's return is ``drift[j] + autocorr[j] * (r_prev - drift[j]) + vol[j] * eps`` with
    j the bar's regime; open equals the previous close (crypto trades around the clock).
    """
    if n_bars < 10:
        raise ValueError(f"n_bars={n_bars} is too small; use at least 10")
    rng = np.random.default_rng(seed)
    trans = transition_matrix()
    regime = np.empty(n_bars, dtype=np.int64)
    regime[0] = 1
    for t in range(1, n_bars):
        regime[t] = rng.choice(3, p=trans[regime[t - 1]])
    eps = rng.standard_normal(n_bars)
    ret = np.empty(n_bars)
    prev = 0.0
    for t in range(n_bars):
        j = regime[t]
        ret[t] = DRIFT[j] + AUTOCORR[j] * (prev - DRIFT[j]) + VOLATILITY[j] * eps[t]
        prev = ret[t]
    close = 100.0 * np.exp(np.cumsum(ret))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.standard_normal((2, n_bars))) * 0.3 * VOLATILITY[regime]
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume = 100.0 * np.exp(0.2 * regime + 20.0 * np.abs(ret) + 0.3 * rng.standard_normal(n_bars))
    index = pd.date_range(start, periods=n_bars, freq=freq, name="timestamp")
    frame = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                          "volume": volume}, index=index)
    # E[r_{t+1}] mixes the next bar's possible regimes by their transition probabilities.
    cond = DRIFT[None, :] + AUTOCORR[None, :] * (ret[:, None] - DRIFT[None, :])  # (T, 3)
    expected = (trans[regime] * cond).sum(axis=1)
    return SyntheticMarket(frame=frame,
                           regime=pd.Series(regime, index=index, name="regime"),
                           expected_return=pd.Series(expected, index=index, name="expected_return"))


def make_sample() -> SyntheticMarket:
    """The bundled SAMPLE market: three years of 4h bars, always the same."""
    return make_market(n_bars=6570, seed=42, freq="4h")
