"""The panel's model cache: one bundle per market under ``<models>/<NAME>_<tf>_<panel>/<m>/``,
reused when the markets' data, the config, the panel mode and the split dates are unchanged."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Mapping

import pandas as pd

from bt_lstm import __version__
from bt_lstm.config import PipelineConfig
from bt_lstm.data.candles import fingerprint_frame
from bt_lstm.data.files import replace_dir, staging_dir
from bt_lstm.models.artifacts import ArtifactError, read_manifest
from bt_lstm.models.forecast import Forecaster, load_forecaster
from bt_lstm.research.panel import PanelFit, fit_panel
from bt_lstm.research.pipeline import ProgressFactory, feature_key, model_file_meta
from bt_lstm.signals.calendar import CalendarSplit
from bt_lstm.signals.regimes import REGIME_LABELS

logger = logging.getLogger(__name__)


def panel_key(frames: Mapping[str, pd.DataFrame], cfg: PipelineConfig, split: CalendarSplit,
              mode: str) -> str:
    """Cache key: every market's data fingerprint, the training config (its feature groups,
    target and horizon among them), the panel mode, the split dates, the library version and,
    beside price-only groups, what each market's features read beyond its OHLCV (plugin
    files' sha256, flow / cross columns: ``research.pipeline.feature_key``)."""
    features = {m: feature_key(f, cfg) for m, f in frames.items()}
    extra = {"features": features} if any(features.values()) else {}  # price-only: as before
    blob = json.dumps({"data": {m: fingerprint_frame(f) for m, f in frames.items()},
                       "config": cfg.training_dict(), "panel": mode, "split": split.to_dict(),
                       "version": __version__, **model_file_meta(cfg), **extra},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_saved_panel(model_dir: Path, markets: list[str], key: str,
                     cfg: PipelineConfig) -> dict[str, Forecaster] | None:
    """Every market's bundle under ``model_dir`` when all are complete, valid and made for
    ``key``; else None."""
    out = {}
    for m in markets:
        manifest = read_manifest(model_dir / m)
        if manifest is None or manifest.get("model_key") != key:
            return None
        try:
            out[m] = load_forecaster(model_dir / m, cfg.strategy.no_skill, cfg.strategy.skill_p)
        except ArtifactError as exc:
            logger.warning("saved panel models unusable (%s); training again", exc)
            return None
    logger.info("reusing saved panel models in %s (--retrain to train again)", model_dir)
    return out


def save_panel(model_dir: Path, frames: Mapping[str, pd.DataFrame], fit: PanelFit, key: str,
               cfg: PipelineConfig, split: CalendarSplit, mode: str) -> None:
    """Every market's bundle into one staged folder, moved into place whole."""
    staged = staging_dir(model_dir)
    for m, fc in fit.forecasters.items():
        fingerprint = fingerprint_frame(frames[m])
        fc.info = {"model_key": key, "data_fingerprint": fingerprint,
                   "config": cfg.training_dict(), "library_version": __version__,
                   "panel": mode, "markets": list(frames), "split": split.to_dict(),
                   "train_period": [str(frames[m].index[0]), str(split.train_end)],
                   "fallbacks": {REGIME_LABELS[r]: why for r, why in fit.fallbacks[m].items()}}
        meta = {n: dict(x, data_fingerprint=fingerprint) for n, x in fit.metas[m].items()}
        fc.save(staged / m, meta)
    replace_dir(staged, model_dir)


def obtain_panel(frames: Mapping[str, pd.DataFrame], cfg: PipelineConfig, split: CalendarSplit,
                 mode: str, model_dir: Path, retrain: bool = False,
                 progress_factory: ProgressFactory | None = None
                 ) -> tuple[dict[str, Forecaster], bool]:
    """Each market's forecaster: the saved panel bundles when they match, else fitted and saved
    (all markets' bundles replace the folder together). Returns (forecasters, reused)."""
    key = panel_key(frames, cfg, split, mode)
    if not retrain:
        found = load_saved_panel(model_dir, list(frames), key, cfg)
        if found is not None:
            return found, True
    fit = fit_panel(frames, cfg, split, mode, progress_factory)
    save_panel(model_dir, frames, fit, key, cfg, split, mode)
    return load_saved_panel(model_dir, list(frames), key, cfg) or fit.forecasters, False
