"""Causal regime classifiers: fitted on training bars, then label each bar from its own past.

The default rule: a bar whose trailing volatility is below a threshold (a quantile of the
training bars' volatility) is sideways; otherwise the sign of the trailing move says bullish or
bearish. The GMM alternative clusters the same two inputs and orders states by mean trend.

Labels: 0 bearish, 1 sideways, 2 bullish, -1 unknown (warm-up: not enough history yet).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.config import RegimeConfig
from bt_lstm.signals.features import equal_length_groups, lag, side_by_side

logger = logging.getLogger(__name__)

REGIME_LABELS = ("bearish", "sideways", "bullish")
UNKNOWN = -1


@dataclass(frozen=True)
class RegimeParams:
    """Everything needed to label new bars; JSON-serialisable."""

    method: str
    trend_bars: int
    vol_threshold: float = 0.0  # rule: trailing volatility below which a bar is sideways
    x_mean: tuple[float, ...] = ()  # gmm: standardisation of the inputs (training bars)
    x_scale: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()  # gmm: mixture weights, means, full covariances
    means: tuple[tuple[float, ...], ...] = ()
    covariances: tuple[tuple[tuple[float, ...], ...], ...] = ()
    state_labels: tuple[int, ...] = field(default=())  # gmm: component k -> regime label

    def to_dict(self) -> dict[str, Any]:
        """The fitted parameters as a JSON-ready dict (stored in every model's JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RegimeParams":
        """Rebuild the parameters from ``to_dict``'s output (lists back to tuples)."""
        def tup(v: Any) -> Any:
            return tuple(tup(x) for x in v) if isinstance(v, (list, tuple)) else v
        return cls(**{k: tup(v) for k, v in data.items()})


def regime_inputs(frame: pd.DataFrame, trend_bars: int) -> pd.DataFrame:
    """Trailing trend score and log volatility at each bar (NaN until ``trend_bars`` of history).

    ``trend_score = log(close[t] / close[t-n]) / (std(r[t-n+1..t]) * sqrt(n))``: the trailing
    move measured in units of its own trailing volatility.
    """
    score, log_vol = _regime_inputs(frame["close"].to_numpy(dtype=np.float64), trend_bars)
    return pd.DataFrame({"trend_score": score, "log_vol": log_vol}, index=frame.index)


def _regime_inputs(close: np.ndarray, trend_bars: int) -> tuple[np.ndarray, np.ndarray]:
    """``regime_inputs`` on arrays: trend score (T,) and log volatility (T,); or, of (T, M)
    closes (M markets side by side, one pandas call), (T, M) each, every market's own values."""
    ret = np.log(close / lag(close, 1))
    table = pd.Series(ret) if ret.ndim == 1 else pd.DataFrame(ret)
    vol = table.rolling(trend_bars, min_periods=trend_bars).std().to_numpy()
    move = np.log(close / lag(close, trend_bars))
    score = move / (np.where(vol > 0, vol, np.nan) * np.sqrt(trend_bars))
    score = np.where(np.isnan(vol), np.nan, np.where(np.isnan(score), 0.0, score))
    return score, np.log(np.where(vol > 0, vol, 1e-12))


def fit_regimes(train: pd.DataFrame, cfg: RegimeConfig, seed: int = 0) -> RegimeParams:
    """Fit the classifier on training bars only.

    Raises
    ------
    ValueError
        When the training bars hold too little history to fit the classifier.
    """
    if cfg.method == "column":
        if "regime" not in train.columns:
            raise ValueError("regime method 'column' needs a `regime` column in the data; add one "
                             "(0/1/2 or bearish/sideways/bullish) or use --regimes rule")
        return RegimeParams(method="column", trend_bars=cfg.trend_bars)
    x = regime_inputs(train, cfg.trend_bars).dropna()
    if len(x) < 30:
        raise ValueError(f"only {len(x)} training bars have {cfg.trend_bars} bars of history; "
                         f"need at least 30 to fit the regime classifier (use more data or a "
                         f"smaller trend window)")
    if cfg.method == "rule":
        vol = float(np.exp(np.quantile(x["log_vol"], cfg.vol_quantile)))
        return RegimeParams(method="rule", trend_bars=cfg.trend_bars, vol_threshold=vol)
    return _fit_gmm(x.to_numpy(), cfg, seed)


def _fit_gmm(x: np.ndarray, cfg: RegimeConfig, seed: int) -> RegimeParams:
    from sklearn.mixture import GaussianMixture

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    gmm = GaussianMixture(n_components=3, covariance_type="full", n_init=cfg.gmm_restarts,
                          random_state=seed).fit((x - mean) / scale)
    # Component numbers are arbitrary: order them by their mean trend score.
    order = np.argsort(gmm.means_[:, 0])
    labels = np.empty(3, dtype=int)
    labels[order] = np.arange(3)
    return RegimeParams(
        method="gmm", trend_bars=cfg.trend_bars,
        x_mean=tuple(map(float, mean)), x_scale=tuple(map(float, scale)),
        weights=tuple(map(float, gmm.weights_)),
        means=tuple(tuple(map(float, m)) for m in gmm.means_),
        covariances=tuple(tuple(tuple(map(float, r)) for r in c) for c in gmm.covariances_),
        state_labels=tuple(int(v) for v in labels))


def _gmm_states(x: np.ndarray, p: RegimeParams) -> np.ndarray:
    """Most likely component of each row on its own (no sequence decoding, so no look-ahead)."""
    z = (x - np.asarray(p.x_mean)) / np.asarray(p.x_scale)  # (N, D)
    scores = []
    for w, mu, cov in zip(p.weights, p.means, p.covariances):
        cov = np.asarray(cov)
        diff = z - np.asarray(mu)  # (N, D)
        sol = np.linalg.solve(cov, diff.T).T
        _, logdet = np.linalg.slogdet(cov)
        scores.append(np.log(w) - 0.5 * (np.einsum("nd,nd->n", diff, sol) + logdet))
    return np.argmax(np.stack(scores, axis=1), axis=1)


def apply_regimes(frame: pd.DataFrame, params: RegimeParams) -> pd.Series:
    """Label every bar from data up to that bar; -1 where history is too short."""
    if params.method == "column":
        if "regime" not in frame.columns:
            raise ValueError("these models use the data's `regime` column, which this data lacks")
        return pd.Series(frame["regime"].to_numpy(dtype=np.int64), index=frame.index,
                         name="regime")
    x = np.column_stack(_regime_inputs(frame["close"].to_numpy(dtype=np.float64),
                                       params.trend_bars))  # (T, 2)
    return pd.Series(_labels(x, params), index=frame.index, name="regime")


def apply_regimes_many(frames: list[pd.DataFrame], params: RegimeParams) -> list[np.ndarray]:
    """``apply_regimes(frame, params).to_numpy()`` of every frame, bit for bit; the inputs of
    frames of equal length are computed together (one pandas call)."""
    if params.method == "column":
        return [apply_regimes(f, params).to_numpy() for f in frames]
    out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(frames)
    for group in equal_length_groups(frames):
        if len(group) == 1:  # alone: the (T,) path, pandas' lighter Series
            out[group[0]] = apply_regimes(frames[group[0]], params).to_numpy()
            continue
        score, logvol = _regime_inputs(side_by_side(frames, group, "close"),
                                       params.trend_bars)  # (T, M) each
        for k, i in enumerate(group):
            out[i] = _labels(np.column_stack([score[:, k], logvol[:, k]]), params)
    return out


def _labels(x: np.ndarray, params: RegimeParams) -> np.ndarray:
    """(T, 2) regime inputs -> (T,) labels, -1 where an input is missing."""
    valid = ~np.isnan(x).any(axis=1)
    labels = np.full(len(x), UNKNOWN, dtype=np.int64)
    xv = x[valid]
    if params.method == "rule":
        # Quiet markets are sideways; otherwise the sign of the trailing move decides.
        quiet = np.exp(xv[:, 1]) < params.vol_threshold
        labels[valid] = np.where(quiet, 1, np.where(xv[:, 0] > 0, 2, 0))
    elif len(xv):
        labels[valid] = np.asarray(params.state_labels)[_gmm_states(xv, params)]
    return labels
