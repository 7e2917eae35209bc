"""The tuned networks together, without Optuna: which regimes get a network of their own, and
one fit of every network with its own settings, scored on the validation tail, where the
trading threshold is chosen. Legend: V validation window ends, L lookback, F features.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bt_lstm.config import PipelineConfig
from bt_lstm.models.nets import model_hparams
from bt_lstm.models.training import one_torch_thread, predict_windows
from bt_lstm.research.pipeline import PreparedWindows, plan_models, prepare_windows, train_one
from bt_lstm.research.selection import choose_threshold, mse_ratio
from bt_lstm.signals.regimes import REGIME_LABELS
from bt_lstm.signals.windows import SplitBounds, gather_windows


def validation_realised(prep: PreparedWindows, b: SplitBounds, scaler: Any) -> np.ndarray:
    """Realised next-bar log returns (V,) over the validation part."""
    return prep.y[b.val[0]:b.val[1]].astype(float) * scaler.target_scale


def planned_regimes(frame: Any, bounds: SplitBounds, cfg: PipelineConfig) -> list[int]:
    """The regimes with a network of their own under ``cfg`` (the others use the pooled one)."""
    prep, _, _ = prepare_windows(frame, cfg, bounds)
    plan, _ = plan_models(prep, cfg)
    return [r for r in plan.values() if r is not None]


def validate_combined(frame: Any, bounds: SplitBounds, cfg: PipelineConfig, floor: float
                      ) -> dict[str, Any]:
    """Fit every network of ``cfg``'s plan (each with its own settings) on the training part
    and score the whole on the validation tail: MSE ratio, the threshold chosen there (>=
    ``floor``) and its after-cost Sharpe. The tuned config's trading threshold comes from here.
    """
    b = bounds
    prep, _, scaler = prepare_windows(frame, cfg, b)
    plan, fallbacks = plan_models(prep, cfg)
    ends = prep.ends["val"]  # (V,)
    regs, yv = prep.regimes[ends], prep.y[ends].astype(float)
    pred = np.full(len(ends), np.nan)
    period = [str(frame.index[b.train[0]]), str(frame.index[b.train[1] - 1])]
    per_model: dict[str, Any] = {}
    with one_torch_thread():
        for name, regime in plan.items():
            mine = regs == regime if regime is not None else np.isin(regs, list(fallbacks))
            state, meta = train_one(prep, cfg, name, regime, scaler.target_scale, period)
            net = cfg.for_model(name)
            if mine.any():
                x = gather_windows(prep.scaled, ends[mine], cfg.windows.lookback)  # (v, L, F)
                pred[mine] = predict_windows(net.model.arch, model_hparams(net), state, x,
                                             net.model.model_file)
            per_model[name] = {
                "regimes": [REGIME_LABELS[r] for r in ([regime] if regime is not None
                                                       else sorted(fallbacks))],
                "n_val": int(mine.sum()), "best_epoch": meta["best_epoch"],
                "hparams": meta["hparams"],
                "mse_ratio": mse_ratio(pred[mine], yv[mine]) if mine.any() else None}
    known = np.isfinite(pred)
    forecast = np.full(b.val[1] - b.val[0], np.nan)
    forecast[ends - b.val[0]] = pred * scaler.target_scale
    choice = choose_threshold(forecast, validation_realised(prep, b, scaler),
                              frame.index[b.val[0]:b.val[1]], cfg.strategy, floor)
    return {"value": mse_ratio(pred[known], yv[known]) if known.any() else None,
            "threshold": choice.threshold, "val_sharpe": choice.sharpe, "per_model": per_model}
