"""Regime -> model -> forecast, per bar (streaming) and in batch (backtests); identical results.

Legend: T bars, F features, L lookback, N windows. Forecasts are next-bar log returns.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bt_lstm.config import DEFAULT_SKILL_P, FeatureConfig
from bt_lstm.data.files import atomic_write_json
from bt_lstm.models.artifacts import (
    MANIFEST,
    SCHEMA_VERSION,
    ArtifactError,
    load_model,
    read_manifest,
    read_model_meta,
    save_model,
)
from bt_lstm.models.plugins import check_plugin_files, feature_frame
from bt_lstm.models.skill import FLAT, SKILL_FIELDS, route_regimes
from bt_lstm.signals.features import compute_features, compute_features_many
from bt_lstm.signals.groups import DEFAULT_GROUPS
from bt_lstm.signals.regimes import RegimeParams, apply_regimes, apply_regimes_many
from bt_lstm.signals.windows import ScalerParams, apply_scaler, gather_windows, valid_window_ends

INFER_BATCH = 4096
# Fields every model JSON of a bundle must agree on with the manifest.
SHARED_FIELDS = ("features", "feature_config", "lookback", "scaler", "regime_params", "arch",
                 "feature_plugins", "bar_ms")
# Each network's hparams: the manifest's ``model_hparams[name]``, or (bundles from before
# per-regime settings) its one ``hparams`` for all.


@dataclass
class Forecaster:
    """The fitted pipeline: features, scaler, regime classifier and one model per regime.

    ``skill`` holds each model's validation skill record; ``no_skill`` and ``skill_p`` decide
    (through ``models.skill.route_regimes``) which regimes trade and which stay flat. Every
    forecast, batch or per bar, goes through that routing.
    """

    feature_cfg: FeatureConfig
    lookback: int
    scaler: ScalerParams
    regime_params: RegimeParams
    models: dict[str, nn.Module]  # model name ("regime_0", "pooled", ...) -> network
    regime_models: dict[int, str]  # regime label -> model name
    info: dict[str, Any] = field(default_factory=dict)  # manifest extras (fingerprint, config...)
    skill: dict[str, dict[str, Any]] = field(default_factory=dict)  # model name -> skill record
    no_skill: str = "flat"  # policy for a regime whose model has no validated skill
    skill_p: float = DEFAULT_SKILL_P
    columns: tuple[str, ...] = ()  # the feature columns, in order (default: feature_cfg.names)
    plugins: dict[str, str] = field(default_factory=dict)  # plugin group -> its file's sha256
    # the training data's bar (ms), recorded for non-default groups: the live warm-up of htf
    bar_ms: int | None = None

    def raw_features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The unscaled feature columns of ``frame`` (the groups' concatenated), causal."""
        if tuple(self.feature_cfg.groups) == DEFAULT_GROUPS:  # today's path
            return compute_features(frame, self.feature_cfg)
        return feature_frame(frame, self.feature_cfg)

    def with_policy(self, no_skill: str, skill_p: float) -> Forecaster:
        """The same fitted models under another no-skill policy (networks are shared)."""
        route_regimes({}, {}, no_skill, skill_p)  # validates the policy name
        return dataclasses.replace(self, no_skill=no_skill, skill_p=skill_p)

    def routes(self) -> dict[int, str]:
        """Regime -> the model that forecasts its bars, or ``flat:no_skill``."""
        return route_regimes(self.regime_models, self.skill, self.no_skill, self.skill_p)

    def model_for(self, regime: int) -> str:
        """The route of one regime ('' for an unknown regime)."""
        return self.routes().get(int(regime), "")

    def prepare(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scaled features (T, F), regimes (T,) and the valid-window mask (T,), all causal."""
        return self._prepared(self.raw_features(frame).to_numpy(),
                              apply_regimes(frame, self.regime_params).to_numpy())

    def _prepared(self, features: np.ndarray,
                  regimes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scaled = apply_scaler(features, self.scaler)
        return scaled, regimes, valid_window_ends(scaled, regimes, self.lookback)

    def _predict(self, name: str, x: np.ndarray) -> np.ndarray:
        model = self.models[name]
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), INFER_BATCH):
                out.append(model(torch.from_numpy(x[i:i + INFER_BATCH])).numpy())  # (B,)
        pred = np.concatenate(out) if out else np.empty(0, dtype=np.float32)
        return pred.astype(np.float64) * self.scaler.target_scale

    def forecast_frame(self, frame: pd.DataFrame, start: int = 0) -> pd.DataFrame:
        """Batch path: the forecast at every bar from the window ending at that bar.

        Returns a frame with ``regime`` (-1 unknown), ``model`` and ``forecast`` (NaN where the
        window is incomplete, and before row ``start``: the networks run only from there on).
        Each bar's value depends on bars up to it only.
        """
        scaled, regimes, valid = self.prepare(frame)
        forecast = np.full(len(frame), np.nan)
        model_used = np.full(len(frame), "", dtype=object)
        for regime, name in sorted(self.routes().items()):
            ends = np.flatnonzero(valid & (regimes == regime))
            ends = ends[ends >= start]
            if len(ends):
                forecast[ends] = (0.0 if name == FLAT else
                                  self._predict(name, gather_windows(scaled, ends, self.lookback)))
                model_used[ends] = name
        return pd.DataFrame({"regime": regimes, "model": model_used, "forecast": forecast},
                            index=frame.index)

    def forecast_last(self, frame: pd.DataFrame) -> tuple[int, float]:
        """Per-bar path: regime and forecast at the last bar of ``frame`` (NaN when not ready)."""
        return self.forecast_last_many([frame])[0]

    def forecast_last_many(self, frames: list[pd.DataFrame]) -> list[tuple[int, float]]:
        """``forecast_last`` of each frame (e.g. one per market), each network run once on the
        stacked windows of the frames it forecasts, as the batch path runs it."""
        routes = self.routes()
        out: list[tuple[int, float]] = [(-1, float("nan"))] * len(frames)
        todo: dict[str, list[tuple[int, int, np.ndarray]]] = {}  # model -> (frame, regime, window)
        # each frame's own compute_features / apply_regimes, equal-length frames together
        if tuple(self.feature_cfg.groups) == DEFAULT_GROUPS:
            features = compute_features_many(frames, self.feature_cfg)
        else:
            features = [self.raw_features(f).to_numpy() for f in frames]
        labels = apply_regimes_many(frames, self.regime_params)
        for i, frame in enumerate(frames):
            t = len(frame) - 1
            if t < 0:
                continue
            scaled, regimes, valid = self._prepared(features[i], labels[i])
            regime = int(regimes[t])
            if not valid[t] or regime not in routes:
                out[i] = (regime, float("nan"))
            elif routes[regime] == FLAT:
                out[i] = (regime, 0.0)
            else:
                window = gather_windows(scaled, np.array([t]), self.lookback)  # (1, L, F)
                todo.setdefault(routes[regime], []).append((i, regime, window))
        for name, rows in todo.items():
            pred = self._predict(name, np.concatenate([w for _, _, w in rows]))  # (B,)
            for (i, regime, _), p in zip(rows, pred):
                out[i] = (regime, float(p))
        return out

    def shared_meta(self) -> dict[str, Any]:
        """The fields every model JSON of the bundle and the manifest hold alike."""
        out = {"features": list(self.columns or self.feature_cfg.names),
               "feature_config": self.feature_config_dict(), "lookback": self.lookback,
               "scaler": self.scaler.to_dict(), "regime_params": self.regime_params.to_dict()}
        if self.plugins:
            out["feature_plugins"] = dict(self.plugins)
        if self.bar_ms:
            out["bar_ms"] = self.bar_ms
        return out

    def feature_config_dict(self) -> dict[str, Any]:
        """The feature config as saved; without ``groups`` when they are the default, so
        bundles of default configs stay byte for byte what they were."""
        out = self.feature_cfg.to_dict()
        if tuple(self.feature_cfg.groups) == DEFAULT_GROUPS:
            out.pop("groups")
        return out

    def save(self, folder: Path, model_meta: dict[str, dict[str, Any]]) -> None:
        """Write every model, then the manifest last: a folder with a manifest is complete."""
        folder = Path(folder)
        shared = self.shared_meta()
        first = model_meta[next(iter(self.models))]
        shared.update(arch=first["arch"])  # one architecture and lookback for all
        per_model = {name: model_meta[name]["hparams"] for name in sorted(self.models)}
        for name, model in self.models.items():
            save_model(model, folder, name, dict(model_meta[name], **shared))
        atomic_write_json(folder / MANIFEST, dict(
            self.info, schema_version=SCHEMA_VERSION, models=sorted(self.models),
            regime_models={str(k): v for k, v in sorted(self.regime_models.items())},
            hparams=first["hparams"], model_hparams=per_model, **shared))


def load_forecaster(folder: str | Path, no_skill: str = "flat",
                    skill_p: float = DEFAULT_SKILL_P) -> Forecaster:
    """Load a saved bundle, checking every model file against the manifest.

    ``no_skill`` and ``skill_p``: the policy for models without validated skill (see
    ``Forecaster``); a model JSON without a skill record is refused.

    Raises
    ------
    ArtifactError
        No complete bundle in ``folder``, or any file that disagrees with the manifest (the
        message lists the differing fields).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise ArtifactError(f"{folder}: no complete model bundle ({MANIFEST} missing or "
                            f"unreadable); train one with runners/backtest.py --retrain")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"{folder}: bundle schema {manifest.get('schema_version')} is not "
                            f"{SCHEMA_VERSION}; retrain with --retrain")
    try:  # a plugin file changed since training: its features would not be the trained ones
        check_plugin_files(manifest.get("feature_plugins") or {}, str(folder))
    except ValueError as exc:
        raise ArtifactError(str(exc)) from None
    regime_models = {int(k): v for k, v in manifest["regime_models"].items()}
    models: dict[str, nn.Module] = {}
    skill: dict[str, dict[str, Any]] = {}
    for name in sorted(set(regime_models.values()) | _extra_models(manifest)):
        meta = read_model_meta(folder, name)  # checked against the manifest before any weights
        differing = [f for f in SHARED_FIELDS if meta.get(f) != manifest.get(f)]
        if meta.get("hparams") != manifest.get("model_hparams", {}).get(
                name, manifest.get("hparams")):
            differing.append("hparams")
        if differing:
            raise ArtifactError(f"{folder / (name + '.json')}: differs from {MANIFEST} in "
                                f"{', '.join(differing)}; the bundle is inconsistent, retrain")
        skill[name] = _skill_record(folder, name, meta)
        models[name], _ = load_model(folder, name)
    info = {k: v for k, v in manifest.items()
            if k not in SHARED_FIELDS and k not in ("regime_models", "schema_version", "models",
                                                    "hparams", "model_hparams")}
    return Forecaster(feature_cfg=FeatureConfig.from_dict(manifest["feature_config"]),
                      lookback=int(manifest["lookback"]),
                      scaler=ScalerParams.from_dict(manifest["scaler"]),
                      regime_params=RegimeParams.from_dict(manifest["regime_params"]),
                      models=models, regime_models=regime_models, info=info, skill=skill,
                      no_skill=no_skill, skill_p=skill_p,
                      columns=tuple(manifest.get("features") or ()),
                      plugins=dict(manifest.get("feature_plugins") or {}),
                      bar_ms=manifest.get("bar_ms"))


def _extra_models(manifest: dict[str, Any]) -> set[str]:
    """Models of the bundle beside those a regime uses (a pooled model kept for the policy)."""
    return set(manifest.get("models", []))


def _skill_record(folder: Path, name: str, meta: dict[str, Any]) -> dict[str, Any]:
    record = meta.get("skill")
    if not isinstance(record, dict) or any(k not in record for k in SKILL_FIELDS):
        raise ArtifactError(f"{folder / (name + '.json')}: no skill record (the model was "
                            f"trained before the skill guard, so nobody knows whether it beat "
                            f"the zero forecast); retrain with --retrain")
    return dict(record)
