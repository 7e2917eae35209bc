"""Pure, causal feature functions: the value at bar t uses candles up to t only."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bt_lstm.config import FeatureConfig


def _ema(series: pd.Series, bars: int) -> pd.Series:
    # adjust=False is the recursive EMA: each value depends on the past only.
    return series.ewm(span=bars, adjust=False, min_periods=bars).mean()


def _wilder(series: pd.Series, bars: int) -> pd.Series:
    return series.ewm(alpha=1.0 / bars, adjust=False, min_periods=bars).mean()


def log_return(close: pd.Series) -> pd.Series:
    """log(close[t] / close[t-1])."""
    return np.log(close / close.shift(1))


def rsi(close: pd.Series, bars: int) -> pd.Series:
    """Wilder RSI rescaled to [-1, 1]: (RSI - 50) / 50."""
    delta = close.diff()
    gain = _wilder(delta.clip(lower=0.0), bars)
    loss = _wilder((-delta).clip(lower=0.0), bars)
    total = gain + loss
    out = (gain - loss) / total.where(total > 0)
    return out.where(total > 0, 0.0).where(gain.notna())


def atr_pct(frame: pd.DataFrame, bars: int) -> pd.Series:
    """Wilder average true range as a fraction of close."""
    prev_close = frame["close"].shift(1)
    true_range = pd.concat([frame["high"] - frame["low"],
                            (frame["high"] - prev_close).abs(),
                            (frame["low"] - prev_close).abs()], axis=1).max(axis=1, skipna=False)
    return _wilder(true_range, bars) / frame["close"]


def volume_z(volume: pd.Series, bars: int) -> pd.Series:
    """Trailing z-score of log volume; 0 where the trailing window is constant."""
    logv = np.log1p(volume)
    mean = logv.rolling(bars, min_periods=bars).mean()
    std = logv.rolling(bars, min_periods=bars).std()
    z = (logv - mean) / std.where(std > 1e-12)
    return z.where(std > 1e-12, 0.0).where(mean.notna())


def compute_features(frame: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """Compute the configured features, in ``cfg.names`` order, NaN during warm-up.

    Notes
    -----
    Only trailing windows and recursive averages are used, so cutting the data after bar t or
    changing later bars leaves every value at t unchanged (tests/test_features.py proves it).
    The input frame is not modified.
    """
    close = frame["close"]
    ret = log_return(close)
    builders = {
        "log_ret": lambda: ret,
        "volatility": lambda: ret.rolling(cfg.vol_bars, min_periods=cfg.vol_bars).std(),
        "rsi": lambda: rsi(close, cfg.rsi_bars),
        "ema_dist": lambda: close / _ema(close, cfg.ema_bars) - 1.0,
        "macd_hist": lambda: _macd_hist(close, cfg),
        "atr_pct": lambda: atr_pct(frame, cfg.atr_bars),
        "volume_z": lambda: volume_z(frame["volume"], cfg.volume_bars),
    }
    out = pd.DataFrame({name: builders[name]() for name in cfg.names}, index=frame.index)
    return out.astype(np.float64)


def _macd_hist(close: pd.Series, cfg: FeatureConfig) -> pd.Series:
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
