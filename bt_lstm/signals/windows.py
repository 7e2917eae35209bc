"""Target construction (the ONE place that looks forward), scaling, splits and (X, y) windows.

Legend: T bars, F features, L lookback, N windows. X is (N, L, F) float32, y is (N,).
A window "at t" covers bars t-L+1..t; its target is log(close[t+h] / close[t]) (``logret``) or
that return divided by the trailing volatility known at t (``vol-scaled``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.config import WindowConfig


def make_target(close: pd.Series, horizon: int = 1,
                exclude: np.ndarray | None = None, kind: str = "logret",
                vol_bars: int = 20) -> pd.Series:
    """The target over the next ``horizon`` bars: the only forward-looking value we build.

    Parameters
    ----------
    exclude
        (T,) bool, bars whose price is no trade (exchange placeholder candles): the target is
        NaN where bar t or bar t + horizon is one.
    kind
        ``logret``: log(close[t+h] / close[t]). ``vol-scaled``: that return divided by
        sigma_t * sqrt(h), sigma_t the standard deviation of the one-bar log returns of the
        ``vol_bars`` bars up to t (the ``volatility`` feature, known at t): a z-score whose
        units do not depend on the horizon or the market's calm or storm.

    Notes
    -----
    NaN on the last ``horizon`` bars (and, vol-scaled, during the volatility's warm-up or
    where it is 0). Used only as a training label and as the realised value in evaluation,
    never as an input; nothing after t + horizon enters it.
    """
    target = np.log(close.shift(-horizon) / close).rename("target")
    if kind == "vol-scaled":
        sigma = np.log(close / close.shift(1)).rolling(vol_bars, min_periods=vol_bars).std()
        target = (target / (sigma.where(sigma > 1e-12) * np.sqrt(horizon))).rename("target")
    elif kind != "logret":
        raise ValueError(f"target {kind!r}: use logret or vol-scaled")
    if exclude is not None and np.any(exclude):
        ex = np.asarray(exclude, dtype=bool)
        later = np.concatenate([ex[horizon:], np.zeros(horizon, dtype=bool)])
        target = target.mask(ex | later)
    return target


@dataclass(frozen=True)
class ScalerParams:
    """Standardisation fitted on training bars: features by mean/scale, target by scale."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    target_scale: float

    def to_dict(self) -> dict[str, Any]:
        """The fitted scaler as a JSON-ready dict (stored in every model's JSON)."""
        return {"mean": list(self.mean), "scale": list(self.scale),
                "target_scale": self.target_scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScalerParams":
        """Rebuild the scaler from ``to_dict``'s output."""
        return cls(tuple(data["mean"]), tuple(data["scale"]), float(data["target_scale"]))


def fit_scaler(train_features: np.ndarray, train_target: np.ndarray) -> ScalerParams:
    """Fit on training rows only (rows with any NaN are skipped)."""
    rows = train_features[np.isfinite(train_features).all(axis=1)]
    if len(rows) < 2:
        raise ValueError("too few complete training rows to fit the scaler; use more data")
    scale = rows.std(axis=0)
    tgt = train_target[np.isfinite(train_target)]
    tscale = float(tgt.std()) if len(tgt) > 1 else 1.0
    return ScalerParams(tuple(map(float, rows.mean(axis=0))),
                        tuple(float(s) if s > 1e-12 else 1.0 for s in scale),
                        tscale if tscale > 1e-12 else 1.0)


def apply_scaler(features: np.ndarray, params: ScalerParams) -> np.ndarray:
    """(T, F) -> (T, F) float32, standardised with the training statistics."""
    return ((features - np.asarray(params.mean)) / np.asarray(params.scale)).astype(np.float32)


def window_view(values: np.ndarray, lookback: int) -> np.ndarray:
    """Strided, copy-free view of every window: (T, F) -> (T-L+1, L, F); row i ends at bar i+L-1."""
    view = np.lib.stride_tricks.sliding_window_view(values, lookback, axis=0)  # (T-L+1, F, L)
    return view.transpose(0, 2, 1)  # (T-L+1, L, F), still a view


def gather_windows(values: np.ndarray, ends: np.ndarray, lookback: int) -> np.ndarray:
    """The windows ending at bars ``ends`` (each >= L-1): (N, L, F) float32, one copy."""
    if len(ends) == 0:
        return np.empty((0, lookback, values.shape[1]), dtype=np.float32)
    return np.ascontiguousarray(window_view(values, lookback)[ends - (lookback - 1)],
                                dtype=np.float32)


@dataclass(frozen=True)
class SplitBounds:
    """Half-open bar ranges [start, stop) of each part; a purge gap lies between parts."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]


def split_bounds(n_bars: int, cfg: WindowConfig) -> SplitBounds:
    """Chronological train | gap | validation | gap | test split of ``n_bars`` bars."""
    n_train = int(n_bars * cfg.train_frac)
    n_val = int(n_bars * cfg.val_frac)
    val_start = n_train + cfg.gap_bars
    test_start = val_start + n_val + cfg.gap_bars
    if n_train < 1 or n_val < 1 or test_start >= n_bars:
        raise ValueError(f"{n_bars} bars are too few for a train/validation/test split with "
                         f"fractions {cfg.train_frac}/{cfg.val_frac} and a gap of {cfg.gap_bars}")
    return SplitBounds((0, n_train), (val_start, val_start + n_val), (test_start, n_bars))


def valid_window_ends(features: np.ndarray, regimes: np.ndarray, lookback: int) -> np.ndarray:
    """Boolean (T,): the window at t exists, has no NaN, and its last bar's regime is known."""
    finite = np.isfinite(features).all(axis=1).astype(np.int64)  # (T,)
    csum = np.concatenate([[0], np.cumsum(finite)])
    t = np.arange(len(features))
    ok = t >= lookback - 1
    full = np.zeros(len(features), dtype=bool)
    full[ok] = (csum[t[ok] + 1] - csum[t[ok] + 1 - lookback]) == lookback
    return full & (regimes >= 0)
