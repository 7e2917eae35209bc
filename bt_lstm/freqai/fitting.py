"""Fit a ``LstmBundle`` on FreqAI's training frame: scaler and regime classifier on the
training rows only, a pooled network (and optionally one per regime) with early stopping on the
validation rows, a skill record per network and the routes of the skill guard.

Legend: T candles, F features, L lookback, N windows. X is (N, L, F), y is (N,).
"""
from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.data.files import sha256_file
from bt_lstm.freqai.bundle import LstmBundle
from bt_lstm.freqai.params import LstmParams
from bt_lstm.models.skill import describe_route, route_regimes
from bt_lstm.models.training import build_seeded, predict_windows, train_model
from bt_lstm.research.scoring import skill_record
from bt_lstm.signals.regimes import REGIME_LABELS, UNKNOWN, apply_regimes, fit_regimes
from bt_lstm.signals.windows import apply_scaler, fit_scaler, gather_windows, valid_window_ends

logger = logging.getLogger(__name__)


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def fit_bundle(frame: pd.DataFrame, features: list[str], label: str, val_start: int,
               params: LstmParams, extra_meta: dict[str, Any] | None = None,
               horizon: int = 1) -> LstmBundle:
    """Train on ``frame`` (candles in time order: ``close``, the features, the label).

    Rows ``[0, val_start)`` train; windows ending at ``val_start`` or later validate (early
    stopping and the skill record). Training windows end ``gap_bars`` before ``val_start`` so
    no training label reaches into the validation rows. ``horizon``: the candles the label
    spans (FreqAI's ``label_period_candles``); the skill guard's Diebold–Mariano test takes
    the long-run variance over ``horizon`` - 1 lags, as ``train_one`` does, since the labels
    of consecutive validation windows overlap.

    Raises
    ------
    ValueError
        Too few complete windows on either side, or too few rows to fit the regimes.
    """
    raw = frame[features].to_numpy(dtype=np.float64)
    raw = np.where(np.isfinite(raw), raw, np.nan)  # (T, F)
    y = frame[label].to_numpy(dtype=np.float64)  # (T,)
    pos = np.arange(len(frame))
    # the target scale from training labels only: the last gap_bars labels look into validation
    scaler = fit_scaler(raw[:val_start], np.where(pos < val_start - params.gap_bars, y, np.nan))
    xs = apply_scaler(raw, scaler)  # (T, F) float32
    ys = (y / scaler.target_scale).astype(np.float32)  # (T,) scaled target
    ok = valid_window_ends(xs, np.zeros(len(xs), dtype=np.int64), params.lookback)
    ok &= np.isfinite(ys)
    train_ok, val_ok = ok & (pos < val_start - params.gap_bars), ok & (pos >= val_start)
    regime_params, regimes = None, np.full(len(frame), UNKNOWN, dtype=np.int64)
    if params.regimes is not None:
        regime_params = fit_regimes(frame.iloc[:val_start], params.regimes, params.train.seed)
        regimes = apply_regimes(frame, regime_params).to_numpy()
    states, skill, regime_models = {}, {}, {UNKNOWN: "pooled"}
    groups = [("pooled", None)] + ([(f"regime_{r}", r) for r in range(len(REGIME_LABELS))]
                                   if regime_params is not None else [])
    for name, regime in groups:
        mask = np.ones(len(frame), dtype=bool) if regime is None else regimes == regime
        tr, va = np.flatnonzero(train_ok & mask), np.flatnonzero(val_ok & mask)
        if regime is not None:
            if len(tr) < params.train.min_regime_windows or len(va) < params.train.min_val_windows:
                logger.info("bt-lstm: %s has %d training / %d validation windows (fewer than "
                            "%d / %d): the pooled network forecasts it", REGIME_LABELS[regime],
                            len(tr), len(va), params.train.min_regime_windows,
                            params.train.min_val_windows)
                regime_models[regime] = "pooled"
                continue
            regime_models[regime] = name
        states[name], skill[name] = _fit_one(xs, ys, tr, va, params, scaler.target_scale, name,
                                             horizon)
    routes = route_regimes(regime_models, skill, params.no_skill, params.skill_p)
    for regime, net in sorted(regime_models.items()):
        word = "unknown/all" if regime == UNKNOWN else REGIME_LABELS[regime]
        logger.info("bt-lstm: %s", describe_route(word, net, skill.get(net), routes[regime],
                                                   params.skill_p))
    meta = _meta(params, features, label, scaler, regime_params, routes, skill, extra_meta)
    return LstmBundle(meta=meta, states=states)


def _fit_one(xs: np.ndarray, ys: np.ndarray, tr: np.ndarray, va: np.ndarray,
             params: LstmParams, target_scale: float, name: str,
             horizon: int = 1) -> tuple[dict, dict]:
    """Train one network on windows ending at ``tr``, validate on ``va``; state and skill."""
    if len(tr) == 0 or len(va) == 0:
        raise ValueError(f"{name}: {len(tr)} training and {len(va)} validation windows of "
                         f"{params.lookback} complete candles; give FreqAI more training "
                         f"data (train_period_days) or a test_size > 0")
    x_tr, x_va = gather_windows(xs, tr, params.lookback), gather_windows(xs, va, params.lookback)
    y_tr, y_va = ys[tr], ys[va]
    model = build_seeded(params.model.arch, xs.shape[1], params.hparams(), params.train.seed,
                         params.model.model_file)
    result = train_model(model, x_tr, y_tr, x_va, y_va, params.train)
    pred = predict_windows(params.model.arch, params.hparams(), result.state_dict, x_va,
                           params.model.model_file)
    record = skill_record(pred, y_va, float(y_tr.mean()), result.best_epoch, target_scale,
                          params.skill_p, horizon)
    record.update(n_train=int(len(tr)), history=result.history)
    return result.state_dict, record


def _meta(params: LstmParams, features: list[str], label: str, scaler: Any,
          regime_params: Any, routes: dict[int, str], skill: dict[str, dict],
          extra: dict[str, Any] | None) -> dict[str, Any]:
    model_file = params.model.model_file
    return dict({
        "features": list(features), "label": label, "lookback": params.lookback,
        "arch": params.model.arch, "hparams": params.hparams(), "model_file": model_file,
        "model_file_sha256": sha256_file(model_file) if model_file else None,
        "scaler": scaler.to_dict(),
        "regimes": regime_params.to_dict() if regime_params is not None else None,
        "routes": {str(k): v for k, v in sorted(routes.items())}, "skill": skill,
        "params": {"train": params.train.to_dict(), "no_skill": params.no_skill,
                   "skill_p": params.skill_p, "gap_bars": params.gap_bars},
        "versions": {"torch": package_version("torch"), "bt_lstm": package_version("bt-lstm")},
    }, **(extra or {}))
