from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bt_lstm.data.files import atomic_write_text
from bt_lstm.models.artifacts import ArtifactError, load_model
from bt_lstm.models.forecast import load_forecaster
from bt_lstm.research.pipeline import fit_pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def saved(fitted, tmp_path):
    result, _ = fitted
    folder = tmp_path / "bundle"
    result.forecaster.save(folder, result.model_meta)
    return folder


def test_bundle_holds_everything_to_rebuild(saved, fitted):
    name = sorted(fitted[0].forecaster.models)[0]
    meta = json.loads((saved / f"{name}.json").read_text())
    for key in ("arch", "hparams", "features", "lookback", "scaler", "regime_params",
                "weights_sha256", "library_version", "schema_version", "train_period",
                "val_mse", "n_train"):
        assert key in meta, key
    assert meta["features"] == list(fitted[0].forecaster.feature_cfg.names)
    # weights only: loadable with weights_only=True, no pickled module inside
    state = torch.load(saved / f"{name}.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_save_load_in_fresh_process_from_other_cwd_gives_identical_forecasts(
        saved, fitted, market, tmp_path):
    expected = fitted[0].forecaster.forecast_frame(market.frame)["forecast"].to_numpy()
    csv = tmp_path / "m.csv"
    market.frame.to_csv(csv)
    out = tmp_path / "out.npy"
    code = ("import sys, numpy as np, pandas as pd\n"
            "from bt_lstm.models.forecast import load_forecaster\n"
            f"f = load_forecaster({str(saved)!r})\n"
            f"frame = pd.read_csv({str(csv)!r}, index_col=0, parse_dates=True)\n"
            f"np.save({str(out)!r}, f.forecast_frame(frame)['forecast'].to_numpy())\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-c", code], cwd=elsewhere, check=True)
    np.testing.assert_array_equal(np.load(out), expected)


def test_loaded_forecaster_equals_original_in_process(saved, fitted, market):
    a = fitted[0].forecaster.forecast_frame(market.frame)
    b = load_forecaster(saved).forecast_frame(market.frame)
    pd.testing.assert_frame_equal(a, b)


def test_corrupted_weights_are_refused_by_checksum(saved):
    pt = saved / "regime_1.pt"
    data = bytearray(pt.read_bytes())
    data[-10] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load_forecaster(saved)


def test_pickle_payload_is_refused(saved, tmp_path):
    """A .pt holding a pickled object never runs it (weights_only=True, no fallback)."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    pt = saved / "regime_2.pt"
    torch.save({"x": Evil()}, pt)
    meta_path = saved / "regime_2.json"
    meta = json.loads(meta_path.read_text())
    import hashlib
    meta["weights_sha256"] = hashlib.sha256(pt.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        load_model(saved, "regime_2")
    assert not marker.exists()


def test_inconsistent_json_lists_the_differing_fields(saved):
    meta_path = saved / "regime_2.json"
    meta = json.loads(meta_path.read_text())
    meta["lookback"] = 99
    meta["features"] = list(reversed(meta["features"]))
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="features, .*lookback"):
        load_forecaster(saved)


def test_incomplete_bundle_is_refused(saved):
    (saved / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no complete model bundle"):
        load_forecaster(saved)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "good")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "half")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_same_seed_same_weights_and_test_bars_do_not_reach_training(market, tiny_cfg, fitted):
    """Same seed -> identical weights; changing the test part leaves every weight unchanged."""
    fit_a, bounds = fitted
    changed = market.frame.copy()
    changed.iloc[bounds.test[0]:, :4] *= 0.7
    fit_b, _ = fit_pipeline(changed, tiny_cfg)
    for name, model in fit_a.forecaster.models.items():
        other = fit_b.forecaster.models[name].state_dict()
        for key, value in model.state_dict().items():
            assert torch.equal(value, other[key]), (name, key)


def test_per_regime_settings_rebuild_each_network_and_old_bundles_still_load(market, tiny_cfg,
                                                                             tmp_path):
    """Tuning per regime gives each network its own size; the bundle rebuilds each one, and
    the warm-up and both forecast paths are those of a bundle with one size for all."""
    from bt_lstm.config import ModelOverride, replace

    cfg = replace(tiny_cfg, overrides=(ModelOverride("sideways", hidden_size=6, num_layers=2,
                                                     dropout=0.1, lr=0.005, batch_size=64),))
    result, _ = fit_pipeline(market.frame, cfg)
    fc = result.forecaster
    assert fc.models["regime_1"].lstm.hidden_size == 6
    assert fc.models["regime_1"].lstm.num_layers == 2 and fc.models["pooled"].lstm.hidden_size == 4
    folder = tmp_path / "bundle"
    fc.save(folder, result.model_meta)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model_hparams"]["regime_1"]["hidden_size"] == 6
    assert manifest["model_hparams"]["regime_1"]["num_layers"] == 2
    assert all(h["hidden_size"] == 4 for n, h in manifest["model_hparams"].items()
               if n != "regime_1")
    loaded = load_forecaster(folder)
    frame = market.frame.iloc[:900]
    batch = loaded.forecast_frame(frame)
    pd.testing.assert_frame_equal(batch, fc.forecast_frame(frame))
    for t in (850, 899):  # the per-bar path gives the batch path's value
        regime, value = loaded.forecast_last(frame.iloc[:t + 1])
        assert regime == batch["regime"].iloc[t]
        np.testing.assert_allclose(value, batch["forecast"].iloc[t], equal_nan=True)
    # a bundle written before per-network settings (one hparams, no model_hparams) loads
    old = tmp_path / "old"
    fc_old, _ = fit_pipeline(market.frame, tiny_cfg)
    fc_old.forecaster.save(old, fc_old.model_meta)
    m = json.loads((old / "manifest.json").read_text())
    m.pop("model_hparams")
    atomic_write_text(old / "manifest.json", json.dumps(m))
    assert sorted(load_forecaster(old).models) == sorted(fc_old.forecaster.models)
