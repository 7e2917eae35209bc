"""Pure, causal feature functions: the value at bar t uses candles up to t only."""
from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.typing import Rolling

from bt_lstm.config import FeatureConfig

# The arithmetic is numpy on float64 arrays; pandas runs only the recursive and rolling kernels
# (ewm, rolling), on bare Series. Same values as the all-pandas version (the elementwise operations
# are the same numpy ufuncs), at a fraction of the per-call overhead: the live model server
# computes these for every request.


def _ema(x: np.ndarray, bars: int) -> np.ndarray:
    # adjust=False is the recursive EMA: each value depends on the past only.
    return pd.Series(x).ewm(span=bars, adjust=False, min_periods=bars).mean().to_numpy()


def _wilder(x: np.ndarray, bars: int) -> np.ndarray:
    return pd.Series(x).ewm(alpha=1.0 / bars, adjust=False, min_periods=bars).mean().to_numpy()


def _rolling(x: np.ndarray, bars: int) -> Rolling:
    return pd.Series(x).rolling(bars, min_periods=bars)


def lag(x: np.ndarray, bars: int) -> np.ndarray:
    """x[t - bars] at t (NaN for the first ``bars``), float64."""
    out = np.full(len(x), np.nan)
    if bars < len(x):
        out[bars:] = x[:len(x) - bars]
    return out


def _clip_below(x: np.ndarray, lower: float) -> np.ndarray:
    # pandas' clip: NaN stays NaN, values below ``lower`` become ``lower``
    return np.where(np.isnan(x) | (x >= lower), x, lower)


def log_return(close: np.ndarray) -> np.ndarray:
    """log(close[t] / close[t-1])."""
    return np.log(close / lag(close, 1))


def rsi(close: np.ndarray, bars: int) -> np.ndarray:
    """Wilder RSI rescaled to [-1, 1]: (RSI - 50) / 50."""
    delta = close - lag(close, 1)
    gain = _wilder(_clip_below(delta, 0.0), bars)
    loss = _wilder(_clip_below(-delta, 0.0), bars)
    total = gain + loss
    out = (gain - loss) / np.where(total > 0, total, np.nan)
    return np.where(np.isnan(gain), np.nan, np.where(total > 0, out, 0.0))


def atr_pct(high: np.ndarray, low: np.ndarray, close: np.ndarray, bars: int) -> np.ndarray:
    """Wilder average true range as a fraction of close."""
    prev_close = lag(close, 1)
    # np.maximum propagates NaN, like pandas' max(skipna=False)
    true_range = np.maximum(np.maximum(high - low, np.abs(high - prev_close)),
                            np.abs(low - prev_close))
    return _wilder(true_range, bars) / close


def volume_z(volume: np.ndarray, bars: int) -> np.ndarray:
    """Trailing z-score of log volume; 0 where the trailing window is constant."""
    logv = np.log1p(volume)
    mean = _rolling(logv, bars).mean().to_numpy()
    std = _rolling(logv, bars).std().to_numpy()
    z = (logv - mean) / np.where(std > 1e-12, std, np.nan)
    return np.where(np.isnan(mean), np.nan, np.where(std > 1e-12, z, 0.0))


def compute_features(frame: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """Compute the configured features, in ``cfg.names`` order, NaN during warm-up.

    Notes
    -----
    Only trailing windows and recursive averages are used, so cutting the data after bar t or
    changing later bars leaves every value at t unchanged (tests/test_causality.py proves it).
    The input frame is not modified.
    """
    close = frame["close"].to_numpy(dtype=np.float64)  # candles are float64 (data.candles)
    ret = log_return(close)
    builders = {
        "log_ret": lambda: ret,
        "volatility": lambda: _rolling(ret, cfg.vol_bars).std().to_numpy(),
        "rsi": lambda: rsi(close, cfg.rsi_bars),
        "ema_dist": lambda: close / _ema(close, cfg.ema_bars) - 1.0,
        "macd_hist": lambda: _macd_hist(close, cfg),
        "atr_pct": lambda: atr_pct(frame["high"].to_numpy(dtype=np.float64),
                                   frame["low"].to_numpy(dtype=np.float64), close, cfg.atr_bars),
        "volume_z": lambda: volume_z(frame["volume"].to_numpy(dtype=np.float64), cfg.volume_bars),
    }
    values = np.empty((len(frame), len(cfg.names)))  # (T, F)
    for j, name in enumerate(cfg.names):
        values[:, j] = builders[name]()
    return pd.DataFrame(values, index=frame.index, columns=list(cfg.names))


def _macd_hist(close: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    macd = _ema(close, cfg.macd_fast) - _ema(close, cfg.macd_slow)
    return (macd - _ema(macd, cfg.macd_signal)) / close


def warmup_bars(cfg: FeatureConfig) -> int:
    """Bars before every configured feature has a value (first valid row index)."""
    need = {
        "log_ret": 1,
        "volatility": cfg.vol_bars,
        "rsi": cfg.rsi_bars,
        "ema_dist": cfg.ema_bars - 1,
        "macd_hist": cfg.macd_slow + cfg.macd_signal - 2,
        "atr_pct": cfg.atr_bars,
        "volume_z": cfg.volume_bars - 1,
    }
    return max(need[name] for name in cfg.names)
