"""Fit the whole pipeline on one training span: regimes, scaler, one network per regime.

Legend: T bars, F features, L lookback, N windows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from bt_lstm.config import PipelineConfig, replace
from bt_lstm.data.candles import placeholder_mask
from bt_lstm.models.forecast import Forecaster
from bt_lstm.models.nets import model_hparams
from bt_lstm.models.plugins import feature_frame, plugin_meta
from bt_lstm.models.training import ProgressFn, build_seeded, predict_windows, train_model
from bt_lstm.research.scoring import skill_record
from bt_lstm.signals.groups import data_bar, group_warmup_bars, input_fingerprint
from bt_lstm.signals.regimes import REGIME_LABELS, RegimeParams, apply_regimes, fit_regimes
from bt_lstm.signals.windows import (
    ScalerParams,
    SplitBounds,
    apply_scaler,
    fit_scaler,
    gather_windows,
    make_target,
    split_bounds,
    valid_window_ends,
)

logger = logging.getLogger(__name__)

# progress_factory(model_name, n_train, n_val) -> per-epoch callback (or None)
ProgressFactory = Callable[[str, int, int], ProgressFn | None]


@dataclass
class FitResult:
    """The fitted forecaster plus what happened while fitting it."""

    forecaster: Forecaster
    model_meta: dict[str, dict[str, Any]]
    fallbacks: dict[int, str] = field(default_factory=dict)  # regime -> why it uses pooled


def min_bars(cfg: PipelineConfig, bar: pd.Timedelta | None = None) -> int:
    """Fewest bars for which a split leaves every part some windows (a coarse floor).

    With the data's ``bar``, an ``htf`` group's warm-up (counted in its higher candles) is
    added where it is longer than the rest: it is spent once, at the start of the data."""
    base = max(group_warmup_bars(cfg.features), cfg.regimes.trend_bars)
    smallest = min(cfg.windows.val_frac, cfg.windows.test_frac)
    floor = int(np.ceil((base + cfg.windows.lookback + 50 + 2 * cfg.windows.gap_bars)
                        / smallest))
    return floor + max(0, group_warmup_bars(cfg.features, bar) - base)


def check_enough_bars(n_bars: int, cfg: PipelineConfig, where: str = "data",
                      bar: pd.Timedelta | None = None) -> None:
    """Refuse data too short for the configuration.

    Raises
    ------
    ValueError
        When ``n_bars`` is below ``min_bars(cfg, bar)`` (feature warm-up, trend window and
        lookback in each part), naming ``where``, the group whose warm-up is longest when it is
        an ``htf`` group, and the fix."""
    need = min_bars(cfg, bar)
    if n_bars >= need:
        return
    slowest = slowest_htf(cfg, bar)
    if slowest is None:
        why, fix = "feature warm-up", "a shorter --lookback"
    else:
        why = f"feature group {slowest[0]}'s warm-up of {slowest[1]} bars"
        fix = f"--features without {slowest[0]}"
    raise ValueError(f"{where}: {n_bars} bars are too few for this configuration (need at "
                     f"least {need}: {why}, trend window and lookback in each part); use more "
                     f"data or {fix}")


def slowest_htf(cfg: PipelineConfig, bar: pd.Timedelta | None) -> tuple[str, int] | None:
    """The ``htf`` group whose warm-up (in data bars) is the longest, when it is longer than the
    other groups' and the trend window (``(group, bars)``); None otherwise or without ``bar``."""
    base = max(group_warmup_bars(cfg.features), cfg.regimes.trend_bars)
    best: tuple[str, int] | None = None
    for group in cfg.features.groups:
        if not group.startswith("htf:") or bar is None:
            continue
        need = group_warmup_bars(replace(cfg.features, groups=(group,)), bar)
        if need > base and (best is None or need > best[1]):
            best = (group, need)
    return best


def _part_ends(valid: np.ndarray, target: np.ndarray, part: tuple[int, int]) -> np.ndarray:
    """Window ends inside ``part`` with a complete window and a known target."""
    mask = np.zeros(len(valid), dtype=bool)
    mask[part[0]:part[1]] = True
    return np.flatnonzero(mask & valid & np.isfinite(target))


@dataclass
class PreparedWindows:
    """Scaled features, regimes and the window ends of each part, fitted on training bars."""

    scaled: np.ndarray  # (T, F) float32
    regimes: np.ndarray  # (T,) int, -1 unknown
    y: np.ndarray  # (T,) float32 target in units of its training scale
    ends: dict[str, np.ndarray]  # part -> window end bars
    lookback: int
    columns: tuple[str, ...] = ()  # the F feature columns, in order (the groups' concatenated)
    bar_ms: int | None = None  # the data's bar, kept for non-default groups (live warm-up)

    def windows(self, part: str, regime: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) of a part, all regimes or one: X (N, L, F), y (N,)."""
        e = self.ends[part]
        if regime is not None:
            e = e[self.regimes[e] == regime]
        return gather_windows(self.scaled, e, self.lookback), self.y[e]


def target_of(frame: pd.DataFrame, cfg: PipelineConfig) -> pd.Series:
    """The configured target (``windows.target`` over ``windows.horizon`` bars) of ``frame``,
    NaN where it would start or end on a placeholder candle: the label every network trains
    on and the realised value every forecast is scored against."""
    return make_target(frame["close"], cfg.windows.horizon, placeholder_mask(frame),
                       cfg.windows.target, cfg.features.vol_bars)


def prepare_windows(frame: pd.DataFrame, cfg: PipelineConfig, bounds: SplitBounds
                    ) -> tuple[PreparedWindows, RegimeParams, ScalerParams]:
    """Fit regimes and scaler on ``bounds.train`` only; index the windows of train and val."""
    train_end = bounds.train[1]
    raw = feature_frame(frame, cfg.features)  # the groups' columns, in order
    features = raw.to_numpy()  # (T, F)
    target = target_of(frame, cfg).to_numpy()  # (T,)
    regime_params = fit_regimes(frame.iloc[:train_end], cfg.regimes, cfg.train.seed)
    regimes = apply_regimes(frame, regime_params).to_numpy()
    scaler = fit_scaler(features[:train_end], target[:train_end - cfg.windows.horizon])
    scaled = apply_scaler(features, scaler)
    valid = valid_window_ends(scaled, regimes, cfg.windows.lookback)
    ends = {part: _part_ends(valid, target, getattr(bounds, part)) for part in ("train", "val")}
    y = (target / scaler.target_scale).astype(np.float32)
    bar_ms = None if tuple(cfg.features.groups) == ("price",) else int(
        data_bar(frame.index) / pd.Timedelta("1ms"))
    prep = PreparedWindows(scaled, regimes, y, ends, cfg.windows.lookback,
                           tuple(map(str, raw.columns)), bar_ms)
    return prep, regime_params, scaler


def plan_models(prep: PreparedWindows, cfg: PipelineConfig
                ) -> tuple[dict[str, int | None], dict[int, str]]:
    """Which networks to train: {model name: regime (None = pooled)} and the fallbacks.

    A regime with fewer than ``min_regime_windows`` training or ``min_val_windows``
    validation windows uses a pooled model trained on all regimes; the reason is returned.
    Under the ``pooled`` no-skill policy the pooled model is always trained, as the stand-in
    for regimes whose own model shows no skill.
    """
    plan: dict[str, int | None] = {}
    fallbacks: dict[int, str] = {}
    for regime in range(3):
        n_tr = int((prep.regimes[prep.ends["train"]] == regime).sum())
        n_va = int((prep.regimes[prep.ends["val"]] == regime).sum())
        if n_tr >= cfg.train.min_regime_windows and n_va >= cfg.train.min_val_windows:
            plan[f"regime_{regime}"] = regime
        else:
            fallbacks[regime] = (f"{n_tr} training / {n_va} validation windows (need "
                                 f"{cfg.train.min_regime_windows} / {cfg.train.min_val_windows})")
    if fallbacks or cfg.strategy.no_skill == "pooled":
        plan["pooled"] = None
    return plan, fallbacks


def train_one(prep: PreparedWindows, cfg: PipelineConfig, name: str, regime: int | None,
              target_scale: float, period: list[str], progress: ProgressFn | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one network of the plan; return its CPU state_dict and its JSON metadata.

    Pure given its arguments (seeded), so it can run in another process with the same result.
    The network's override in ``cfg.overrides`` (if any) sets its size and training settings.
    """
    cfg = cfg.for_model(name)  # this network's own settings (tuning per regime)
    xt, yt = prep.windows("train", regime)
    xv, yv = prep.windows("val", regime)
    model = build_seeded(cfg.model.arch, prep.scaled.shape[1], model_hparams(cfg),
                         cfg.train.seed, cfg.model.model_file)
    result = train_model(model, xt, yt, xv, yv, cfg.train, progress)
    pred = predict_windows(cfg.model.arch, model_hparams(cfg), result.state_dict, xv,
                           cfg.model.model_file)  # (N,) validation forecasts, scaled units
    skill = skill_record(pred, yv, float(np.mean(yt)), result.best_epoch, target_scale,
                         cfg.strategy.skill_p, cfg.windows.horizon)
    meta = {**model_file_meta(cfg),
        "arch": cfg.model.arch, "hparams": model_hparams(cfg),
        "n_features": prep.scaled.shape[1],
        "regime": "pooled" if regime is None else REGIME_LABELS[regime],
        "train_period": period, "n_train": len(xt), "n_val": len(xv),
        "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
        "val_mse": result.best_val_loss * target_scale ** 2, "history": result.history,
        "skill": skill,
    }
    return result.state_dict, meta


def assemble_forecaster(cfg: PipelineConfig, scaler: ScalerParams, regime_params: RegimeParams,
                        plan: dict[str, int | None], fallbacks: dict[int, str],
                        states: dict[str, dict[str, Any]],
                        metas: dict[str, dict[str, Any]],
                        columns: tuple[str, ...] | None = None,
                        bar_ms: int | None = None) -> Forecaster:
    """Rebuild the trained networks of a plan from their state_dicts into a Forecaster, with
    their skill records and the config's no-skill policy."""
    models = {}
    columns = tuple(columns or cfg.features.names)
    for name, state in states.items():
        mine = cfg.for_model(name)
        model = build_seeded(mine.model.arch, len(columns), model_hparams(mine), 0,
                             mine.model.model_file)
        model.load_state_dict(state)
        models[name] = model.eval()
    regime_models = {r: name for name, r in plan.items() if r is not None}
    regime_models.update({r: "pooled" for r in fallbacks})
    return Forecaster(cfg.features, cfg.windows.lookback, scaler, regime_params, models,
                      regime_models, skill={n: dict(metas[n]["skill"]) for n in states},
                      no_skill=cfg.strategy.no_skill, skill_p=cfg.strategy.skill_p,
                      columns=columns, plugins=plugin_meta(cfg.features).get(
                          "feature_plugins", {}), bar_ms=bar_ms)


def fit_pipeline(frame: pd.DataFrame, cfg: PipelineConfig, bounds: SplitBounds | None = None,
                 progress_factory: ProgressFactory | None = None) -> tuple[FitResult, SplitBounds]:
    """Fit regimes and scaler on the training part, then train one network per regime.

    Notes
    -----
    Only bars of ``bounds.train`` reach the regime classifier and the scaler; validation
    windows (after the purge gap) drive early stopping. A regime with fewer than
    ``min_regime_windows`` training or ``min_val_windows`` validation windows uses a pooled
    model trained on all regimes, and the fallback is logged and returned.
    """
    bounds = bounds or split_bounds(len(frame), cfg.windows)
    prep, regime_params, scaler = prepare_windows(frame, cfg, bounds)
    period = [str(frame.index[bounds.train[0]]), str(frame.index[bounds.train[1] - 1])]
    plan, fallbacks = plan_models(prep, cfg)
    for regime, why in fallbacks.items():
        logger.warning("regime %s: %s; it uses the pooled model", REGIME_LABELS[regime], why)
    states: dict[str, dict[str, Any]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for name, regime in plan.items():
        cb = None
        if progress_factory is not None:
            n_tr = len(prep.ends["train"]) if regime is None else int(
                (prep.regimes[prep.ends["train"]] == regime).sum())
            n_va = len(prep.ends["val"]) if regime is None else int(
                (prep.regimes[prep.ends["val"]] == regime).sum())
            cb = progress_factory(name, n_tr, n_va)
        states[name], meta[name] = train_one(prep, cfg, name, regime, scaler.target_scale,
                                             period, cb)
    forecaster = assemble_forecaster(cfg, scaler, regime_params, plan, fallbacks, states, meta,
                                     prep.columns, prep.bar_ms)
    return FitResult(forecaster, meta, fallbacks), bounds


def model_file_meta(cfg: PipelineConfig) -> dict[str, Any]:
    """Where a user's architecture comes from, and its hash (checked again at load time)."""
    if cfg.model.model_file is None:
        return {}
    from bt_lstm.data.files import sha256_file

    return {"model_file": cfg.model.model_file,
            "model_file_sha256": sha256_file(cfg.model.model_file)}


def feature_key(frame: pd.DataFrame, cfg: PipelineConfig) -> dict[str, Any]:
    """What the features depend on beside the OHLCV fingerprint and the config, for cache keys:
    plugin files' hashes and the flow / cross columns' fingerprint; {} for price-only groups
    (keys of such configs stay as they were)."""
    out: dict[str, Any] = dict(plugin_meta(cfg.features))
    inputs = input_fingerprint(frame, cfg.features)
    if inputs is not None:
        out["feature_inputs"] = inputs
    return out
