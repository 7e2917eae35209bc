"""Panel training: the regime networks of several markets under one calendar split.

``pooled``: each regime's network trains on the windows of every market together; features are
scaled, and regimes fitted, per market on that market's own training bars, so each market keeps
its own scaler and classifier. ``per-market``: one ordinary bundle per market. Either way the
skill guard judges every network per market on that market's validation windows, and each
market gets its own ``Forecaster`` (its scaler, its regimes, the shared or its own networks, its
skill records), so forecasting and routing are the single-market code.

Legend: T bars, F features, L lookback, N windows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from bt_lstm.config import PipelineConfig
from bt_lstm.models.forecast import Forecaster
from bt_lstm.models.nets import model_hparams
from bt_lstm.models.training import predict_windows
from bt_lstm.research.pipeline import (
    PreparedWindows,
    ProgressFactory,
    assemble_forecaster,
    fit_pipeline,
    plan_models,
    prepare_windows,
    train_one,
)
from bt_lstm.research.scoring import skill_record
from bt_lstm.signals.calendar import CalendarSplit, market_bounds
from bt_lstm.signals.regimes import REGIME_LABELS
from bt_lstm.signals.windows import SplitBounds

logger = logging.getLogger(__name__)

PANEL_MODES = ("pooled", "per-market")


@dataclass
class PanelFit:
    """Per market: its forecaster, its models' JSON metadata (skill judged on its own
    validation windows) and the regimes that fell back to the pooled model."""

    forecasters: dict[str, Forecaster]
    metas: dict[str, dict[str, dict[str, Any]]]
    fallbacks: dict[str, dict[int, str]] = field(default_factory=dict)


def panel_bounds(frames: Mapping[str, pd.DataFrame], split: CalendarSplit,
                 cfg: PipelineConfig) -> dict[str, SplitBounds]:
    """Each market's bar ranges of the common calendar split."""
    return {m: market_bounds(f.index, split, cfg.windows.horizon) for m, f in frames.items()}


def merge_prepared(preps: list[PreparedWindows]) -> PreparedWindows:
    """The markets' prepared windows end to end: (sum T, F), window ends shifted.

    Notes
    -----
    Every window end is a valid end of its own market (at least L-1 rows into it), so no
    window reaches across two markets.
    """
    offsets = np.cumsum([0] + [len(p.scaled) for p in preps[:-1]])
    ends = {part: np.concatenate([p.ends[part] + off for p, off in zip(preps, offsets)])
            for part in ("train", "val")}
    return PreparedWindows(np.concatenate([p.scaled for p in preps]),  # (sum T, F)
                           np.concatenate([p.regimes for p in preps]),
                           np.concatenate([p.y for p in preps]), ends, preps[0].lookback)


def check_same_columns(columns: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse a pooled panel whose markets' feature columns differ (a plugin that returns
    other columns for another market): one network cannot read both.

    Raises
    ------
    ValueError
        One line naming the two markets and the first column that differs.
    """
    first, cols = next(iter(columns.items()))
    for m, mine in columns.items():
        if mine != cols:
            diff = next((a for a, b in zip(mine, cols) if a != b), None) or (
                f"{len(mine)} vs {len(cols)} columns")
            raise ValueError(f"--panel pooled: {m}'s feature columns differ from {first}'s "
                             f"({diff}); one pooled network needs the same columns for every "
                             f"market (use --panel per-market, or make the plugin return the "
                             f"same columns)")


def market_skill(prep: PreparedWindows, cfg: PipelineConfig, name: str, regime: int | None,
                 state: dict[str, Any], train_mean: float, best_epoch: int,
                 target_scale: float) -> dict[str, Any]:
    """A (pooled) network's skill record on one market's validation windows."""
    mine = cfg.for_model(name)
    xv, yv = prep.windows("val", regime)  # (N, L, F), (N,)
    pred = predict_windows(mine.model.arch, model_hparams(mine), state, xv,
                           mine.model.model_file)  # (N,)
    return skill_record(pred, yv, train_mean, best_epoch, target_scale, cfg.strategy.skill_p,
                        cfg.windows.horizon)  # K-bar targets overlap: the long-run variance


def _train_mean(prep: PreparedWindows, regime: int | None) -> float:
    ends = prep.ends["train"]
    if regime is not None:
        ends = ends[prep.regimes[ends] == regime]
    return float(np.mean(prep.y[ends])) if len(ends) else 0.0


def fit_pooled(frames: Mapping[str, pd.DataFrame], cfg: PipelineConfig,
               bounds: Mapping[str, SplitBounds],
               progress_factory: ProgressFactory | None = None) -> PanelFit:
    """One network per regime on all markets' training windows; skill judged per market.

    Notes
    -----
    Each market's target is in units of its own training scale, so a pooled network forecasts
    scaled returns and each market's forecaster turns them back with its own scale.
    """
    prepped = {m: prepare_windows(frames[m], cfg, bounds[m]) for m in frames}
    check_same_columns({m: p.columns for m, (p, _, _) in prepped.items()})
    merged = merge_prepared([p for p, _, _ in prepped.values()])
    plan, fallbacks = plan_models(merged, cfg)
    for regime, why in fallbacks.items():
        logger.warning("pooled panel, regime %s: %s; it uses the pooled model",
                       REGIME_LABELS[regime], why)
    period = [str(min(f.index[0] for f in frames.values())),
              str(max(frames[m].index[bounds[m].train[1] - 1] for m in frames))]
    states: dict[str, dict[str, Any]] = {}
    pooled_meta: dict[str, dict[str, Any]] = {}
    for name, regime in plan.items():
        cb = None
        if progress_factory is not None:
            cb = progress_factory(name, len(merged.windows("train", regime)[1]),
                                  len(merged.windows("val", regime)[1]))
        states[name], pooled_meta[name] = train_one(merged, cfg, name, regime, 1.0, period, cb)
    fit = PanelFit({}, {}, {})
    for m, (prep, regime_params, scaler) in prepped.items():
        metas = {}
        for name, regime in plan.items():
            skill = market_skill(prep, cfg, name, regime, states[name],
                                 _train_mean(merged, regime), pooled_meta[name]["best_epoch"],
                                 scaler.target_scale)
            metas[name] = dict(pooled_meta[name], skill=skill, val_mse=skill["val_mse"],
                               n_val=skill["n_val"], panel={"mode": "pooled",
                                                            "markets": list(frames)},
                               n_train_pooled=pooled_meta[name]["n_train"])
        fit.forecasters[m] = assemble_forecaster(cfg, scaler, regime_params, plan, fallbacks,
                                                 states, metas, prep.columns, prep.bar_ms)
        fit.metas[m] = metas
        fit.fallbacks[m] = dict(fallbacks)
    return fit


def fit_panel(frames: Mapping[str, pd.DataFrame], cfg: PipelineConfig, split: CalendarSplit,
              mode: str = "pooled", progress_factory: ProgressFactory | None = None
              ) -> PanelFit:
    """Fit the markets' models under one calendar split (``mode``: pooled or per-market).

    Raises
    ------
    ValueError
        An unknown ``mode``.
    """
    if mode not in PANEL_MODES:
        raise ValueError(f"--panel {mode!r}: use one of {', '.join(PANEL_MODES)}")
    bounds = panel_bounds(frames, split, cfg)
    if mode == "pooled":
        return fit_pooled(frames, cfg, bounds, progress_factory)
    fit = PanelFit({}, {}, {})
    for m, frame in frames.items():
        one, _ = fit_pipeline(frame, cfg, bounds[m], progress_factory)
        fit.forecasters[m] = one.forecaster
        fit.metas[m] = {n: dict(meta, panel={"mode": "per-market", "markets": [m]})
                        for n, meta in one.model_meta.items()}
        fit.fallbacks[m] = dict(one.fallbacks)
    return fit
