"""Baseline forecasts beside the regime models, fitted on the same training part, same windows.

Legend: T bars, F features, L lookback, N windows. Forecasts are next-bar log returns.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.config import PipelineConfig
from bt_lstm.models.forecast import Forecaster
from bt_lstm.models.nets import model_hparams
from bt_lstm.models.training import predict_windows
from bt_lstm.research.pipeline import PreparedWindows, prepare_windows, target_of, train_one
from bt_lstm.signals.windows import SplitBounds, gather_windows, valid_window_ends

# regime_model: the forecasts that trade (skill guard applied); regime_model_raw: every regime's
# own model, skill or not (--no-skill trade)
MODELS = ("regime_model", "regime_model_raw", "zero", "train_mean", "persistence", "ridge",
          "global_lstm", "mlp")


def _net_forecast(prep: PreparedWindows, cfg: PipelineConfig, arch: str, x_test: np.ndarray,
                  target_scale: float, period: list[str]) -> np.ndarray:
    """Train one network of ``arch`` on all regimes' training windows; forecast ``x_test``."""
    net_cfg = replace(cfg, model=replace(cfg.model, arch=arch, model_file=None))
    state, _ = train_one(prep, net_cfg, arch, None, target_scale, period)
    return predict_windows(arch, model_hparams(net_cfg), state, x_test) * target_scale


def segment_forecasts(frame: pd.DataFrame, cfg: PipelineConfig, bounds: SplitBounds,
                      forecaster: Forecaster) -> pd.DataFrame:
    """Every model's forecast at the test bars of one train/val/test segment of ``frame``.

    Returns one row per test bar that the regime model forecasts and whose next bar exists:
    ``regime``, ``realised`` and a column per entry of MODELS. The baselines see only the
    training part (ridge, global LSTM and MLP also use the validation part for early
    stopping, as the regime models do).
    """
    prep, _, scaler = prepare_windows(frame, cfg, bounds)
    ours = forecaster.forecast_frame(frame)
    raw = forecaster.with_policy("trade", forecaster.skill_p).forecast_frame(frame)
    realised = target_of(frame, cfg).to_numpy()  # (T,)
    valid = valid_window_ends(prep.scaled, prep.regimes, cfg.windows.lookback)
    t = np.arange(len(frame))
    test = (t >= bounds.test[0]) & (t < bounds.test[1]) & valid & np.isfinite(realised) \
        & np.isfinite(ours["forecast"].to_numpy())
    ends = np.flatnonzero(test)
    x_test = gather_windows(prep.scaled, ends, cfg.windows.lookback)  # (N, L, F)
    xt, yt = prep.windows("train")  # (N, L, F), (N,) in units of the target scale
    scale = scaler.target_scale
    period = [str(frame.index[bounds.train[0]]), str(frame.index[bounds.train[1] - 1])]
    from sklearn.linear_model import Ridge

    ridge = Ridge(alpha=1.0).fit(xt.reshape(len(xt), -1), yt)  # (N, L*F)
    close = frame["close"].to_numpy()
    prev = np.concatenate([[np.nan], close[:-1]])
    out: dict[str, Any] = {
        "regime": ours["regime"].to_numpy()[ends], "realised": realised[ends],
        "regime_model": ours["forecast"].to_numpy()[ends],
        "regime_model_raw": raw["forecast"].to_numpy()[ends],
        "zero": np.zeros(len(ends)),
        "train_mean": np.full(len(ends), float(np.mean(yt)) * scale),
        "persistence": np.log(close / prev)[ends],  # the last bar's log return
        "ridge": ridge.predict(x_test.reshape(len(x_test), -1)) * scale,
        "global_lstm": _net_forecast(prep, cfg, "lstm", x_test, scale, period),
        "mlp": _net_forecast(prep, cfg, "mlp", x_test, scale, period),
    }
    return pd.DataFrame(out, index=frame.index[ends])
