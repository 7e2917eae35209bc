"""A trained ``BtLstmRegressor`` model on disk and in memory: networks as ``state_dict`` + JSON
(``bt_lstm.models.artifacts``), one manifest JSON holding everything else, no pickled class.

Files of a model ``<stem>`` (freqtrade's ``dk.model_filename``) in its sub-train folder::

    <stem>_bt_lstm.json              manifest: features, lookback, architecture, scaler, regime
                                     parameters, routes, skill records, versions, and the
                                     sha256 of each network's JSON
    <stem>_bt_lstm_<net>.json / .pt  one network (pooled, regime_0..2): its JSON (architecture,
                                     hyperparameters, sha256 of the .pt) and its state_dict

Legend: T candles, F features, L lookback, N windows. X is (N, L, F), forecasts are (T,).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm import __version__
from bt_lstm.data.files import atomic_write_json, clean_json, sha256_file
from bt_lstm.models.artifacts import ArtifactError, load_model, save_model
from bt_lstm.models.skill import FLAT
from bt_lstm.models.training import build_seeded, predict_windows
from bt_lstm.signals.regimes import UNKNOWN, RegimeParams, apply_regimes
from bt_lstm.signals.windows import ScalerParams, apply_scaler, gather_windows, valid_window_ends

FORMAT = "bt_lstm.freqai"
SCHEMA_VERSION = 1
SUFFIX = "_bt_lstm"


def manifest_path(folder: Path, stem: str) -> Path:
    """The manifest of model ``stem``: its presence marks a complete bundle."""
    return Path(folder) / f"{stem}{SUFFIX}.json"


@dataclass
class LstmBundle:
    """Networks (``states``: name -> state_dict) and the ``meta`` that rebuilds and routes
    them. ``predict`` applies the scaler, the regime labels and the skill guard."""

    meta: dict[str, Any]
    states: dict[str, dict]

    @property
    def features(self) -> list[str]:
        """The feature columns the networks read, in order."""
        return list(self.meta["features"])

    def routes(self) -> dict[int, str]:
        """Regime label (-1: unknown or no regimes) -> network name or ``FLAT``."""
        return {int(k): v for k, v in self.meta["routes"].items()}

    def regime_labels(self, frame: pd.DataFrame) -> np.ndarray:
        """(T,) causal regime label of each candle (-1 when regimes are off or warming up)."""
        if self.meta["regimes"] is None:
            return np.full(len(frame), UNKNOWN, dtype=np.int64)
        return apply_regimes(frame, RegimeParams.from_dict(self.meta["regimes"])).to_numpy()

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Forecasts (T,) in the label's units and ``do_predict`` (T,) 1/0 for ``frame``'s rows.

        A row gets 0 and ``do_predict`` 0 when its window (the row and the L-1 before it, all
        inside ``frame``) holds a NaN or starts before the frame, or when its regime's route is
        flat (no network with validated skill).
        """
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise ArtifactError(f"the model was trained on features the frame lacks: "
                                f"{', '.join(missing[:5])}; retrain after changing features")
        raw = frame[self.features].to_numpy(dtype=np.float64)
        raw = np.where(np.isfinite(raw), raw, np.nan)
        scaler = ScalerParams.from_dict(self.meta["scaler"])
        xs = apply_scaler(raw, scaler)  # (T, F) float32
        lookback = int(self.meta["lookback"])
        ok = valid_window_ends(xs, np.zeros(len(xs), dtype=np.int64), lookback)  # (T,)
        routes = self.routes()
        regimes = self.regime_labels(frame)
        net_of = np.array([routes.get(int(r), routes[UNKNOWN]) for r in regimes], dtype=object)
        pred = np.zeros(len(frame))
        do = np.zeros(len(frame), dtype=np.int64)
        for name in set(net_of[ok]) - {FLAT}:
            ends = np.flatnonzero(ok & (net_of == name))
            x = gather_windows(xs, ends, lookback)  # (N, L, F)
            pred[ends] = self._forward(name, x) * scaler.target_scale
            do[ends] = 1
        return pred, do

    def _forward(self, name: str, x: np.ndarray) -> np.ndarray:
        return predict_windows(self.meta["arch"], dict(self.meta["hparams"]), self.states[name],
                               x, self.meta["model_file"])

    def save(self, folder: Path, stem: str) -> Path:
        """Write every network, then the manifest (last: a crash leaves no manifest)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        nets = {}
        for name, state in self.states.items():
            model = build_seeded(self.meta["arch"], len(self.features),
                                 dict(self.meta["hparams"]), 0, self.meta["model_file"])
            model.load_state_dict(state)
            file_stem = f"{stem}{SUFFIX}_{name}"
            save_model(model, folder, file_stem, {
                "arch": self.meta["arch"], "hparams": self.meta["hparams"],
                "n_features": len(self.features), "model_file": self.meta["model_file"],
                "model_file_sha256": self.meta["model_file_sha256"],
                "skill": self.meta["skill"].get(name)})
            nets[name] = {"file": f"{file_stem}.json",
                          "sha256": sha256_file(folder / f"{file_stem}.json")}
        path = manifest_path(folder, stem)
        atomic_write_json(path, clean_json(dict(self.meta, format=FORMAT,
                                                schema_version=SCHEMA_VERSION,
                                                library_version=__version__, nets=nets)))
        return path


def read_manifest(folder: Path, stem: str) -> dict[str, Any]:
    """The manifest of ``stem``, checked for format and schema; ArtifactError otherwise."""
    path = manifest_path(folder, stem)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; this model was not saved by BtLstmRegressor "
                            f"or was removed; retrain (delete the sub-train folder)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"{path}: format {meta.get('format')!r} schema "
                            f"{meta.get('schema_version')!r} is not {FORMAT!r} schema "
                            f"{SCHEMA_VERSION}; retrain with this version")
    return meta


def load_bundle(folder: Path, stem: str, features: list[str] | None = None) -> LstmBundle:
    """Rebuild model ``stem`` from its JSON and load each network's weights (weights_only).

    Raises
    ------
    ArtifactError
        One line: a missing or changed file (sha256), weights that do not fit, or a feature
        list other than ``features`` (the strategy's, when given).
    """
    folder = Path(folder)
    meta = read_manifest(folder, stem)
    states = {}
    for name, entry in meta["nets"].items():
        net_json = folder / entry["file"]
        if not net_json.is_file() or sha256_file(net_json) != entry["sha256"]:
            raise ArtifactError(f"{net_json}: missing or changed since the model was saved "
                                f"(sha256 differs from {manifest_path(folder, stem).name}); "
                                f"retrain")
        model, _ = load_model(folder, entry["file"][:-len(".json")])
        states[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if features is not None and list(features) != list(meta["features"]):
        extra = sorted(set(features) - set(meta["features"]))
        gone = sorted(set(meta["features"]) - set(features))
        raise ArtifactError(f"{manifest_path(folder, stem)}: trained on other features (new: "
                            f"{', '.join(extra[:3]) or '-'}; missing: {', '.join(gone[:3]) or '-'}"
                            f"; or another order); retrain")
    return LstmBundle(meta=meta, states=states)
