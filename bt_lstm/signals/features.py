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
#
# Every function takes (T,) arrays, or (T, M) arrays holding M markets of equal length side by
# side: pandas then runs the same kernel on each column of one DataFrame (one call's overhead
# for M markets) and the values are those of each market alone, bit for bit
# (tests/test_causality.py). The bus engine forecasts a burst of markets this way.


def _series(x: np.ndarray) -> pd.Series | pd.DataFrame:
    return pd.Series(x) if x.ndim == 1 else pd.DataFrame(x)


def _ema(x: np.ndarray, bars: int) -> np.ndarray:
    # adjust=False is the recursive EMA: each value depends on the past only.
    return _series(x).ewm(span=bars, adjust=False, min_periods=bars).mean().to_numpy()


def _wilder(x: np.ndarray, bars: int) -> np.ndarray:
    return _series(x).ewm(alpha=1.0 / bars, adjust=False, min_periods=bars).mean().to_numpy()


def _rolling(x: np.ndarray, bars: int) -> Rolling:
    return _series(x).rolling(bars, min_periods=bars)


def lag(x: np.ndarray, bars: int) -> np.ndarray:
    """x[t - bars] at t (NaN for the first ``bars``), float64."""
    out = np.full(x.shape, np.nan)
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
    values = feature_values(*(frame[c].to_numpy(dtype=np.float64)  # candles are float64
                              for c in ("high", "low", "close", "volume")), cfg)  # (T, F)
    return pd.DataFrame(values, index=frame.index, columns=list(cfg.names))


def compute_features_many(frames: list[pd.DataFrame], cfg: FeatureConfig) -> list[np.ndarray]:
    """``compute_features(frame, cfg).to_numpy()`` of every frame, bit for bit; frames of equal
    length go through pandas' kernels together."""
    out: list[np.ndarray] = [np.empty(0)] * len(frames)
    for group in equal_length_groups(frames):
        if len(group) == 1:  # alone: the (T,) path, pandas' lighter Series
            out[group[0]] = compute_features(frames[group[0]], cfg).to_numpy()
            continue
        cols = [side_by_side(frames, group, c) for c in ("high", "low", "close", "volume")]
        values = feature_values(*cols, cfg)  # (T, M, F)
        for k, i in enumerate(group):
            out[i] = values[:, k, :]
    return out


def equal_length_groups(frames: list[pd.DataFrame]) -> list[list[int]]:
    """Indices of the frames, grouped by length (the groups that can stand side by side)."""
    by_len: dict[int, list[int]] = {}
    for i, f in enumerate(frames):
        by_len.setdefault(len(f), []).append(i)
    return list(by_len.values())


def side_by_side(frames: list[pd.DataFrame], group: list[int], column: str) -> np.ndarray:
    """(T, M) float64: ``column`` of the frames ``group`` (of equal length T)."""
    return np.column_stack([frames[i][column].to_numpy(dtype=np.float64) for i in group])


def feature_values(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
                   cfg: FeatureConfig) -> np.ndarray:
    """The configured features of (T,) candle columns as (T, F), or of (T, M) columns (M
    markets side by side) as (T, M, F)."""
    ret = log_return(close)
    builders = {
        "log_ret": lambda: ret,
        "volatility": lambda: _rolling(ret, cfg.vol_bars).std().to_numpy(),
        "rsi": lambda: rsi(close, cfg.rsi_bars),
        "ema_dist": lambda: close / _ema(close, cfg.ema_bars) - 1.0,
        "macd_hist": lambda: _macd_hist(close, cfg),
        "atr_pct": lambda: atr_pct(high, low, close, cfg.atr_bars),
        "volume_z": lambda: volume_z(volume, cfg.volume_bars),
    }
    values = np.empty(close.shape + (len(cfg.names),))
    for j, name in enumerate(cfg.names):
        values[..., j] = builders[name]()
    return values


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
