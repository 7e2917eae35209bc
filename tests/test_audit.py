"""The look-ahead audit: clean on the real pipeline, and it catches planted leaks."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_FLAGS

from bt_lstm.models import forecast as forecast_module
from bt_lstm.research.audit import run_audit
from runners import lookahead as runner

real_features = forecast_module.compute_features
real_regimes = forecast_module.apply_regimes


def leaky_features(frame, cfg):
    """Planted leak: log_ret at t is the return of the NEXT bar (a shift(-1))."""
    out = real_features(frame, cfg)
    return out.assign(log_ret=out["log_ret"].shift(-1))


def smoothed_regimes(frame, params):
    """Planted leak: labels smoothed over the whole sequence (a centred majority vote), as
    Viterbi / forward-backward decoding would."""
    labels = real_regimes(frame, params)
    onehot = pd.get_dummies(labels).astype(float)
    smooth = onehot.rolling(31, center=True, min_periods=1).mean()
    return smooth.idxmax(axis=1).astype(np.int64).rename("regime")


def test_default_pipeline_is_clean(market, fitted):
    report = run_audit(market.frame, fitted[0].forecaster, threshold=0.001, n_cuts=20)
    assert len(report.cuts) == 20
    assert report.clean, report.differences[:3]
    assert [w["history_bars"] for w in report.warmup] == [200, 500, 1000]


@pytest.mark.parametrize("plant, must_flag", [
    (("compute_features", leaky_features), {"feature:log_ret", "scaled:log_ret", "forecast"}),
    (("apply_regimes", smoothed_regimes), {"regime", "forecast"}),
])
def test_planted_leaks_are_caught(market, fitted, monkeypatch, plant, must_flag):
    monkeypatch.setattr(forecast_module, *plant)
    report = run_audit(market.frame, fitted[0].forecaster, threshold=0.001, n_cuts=20)
    assert not report.clean
    assert must_flag <= set(report.columns_differing())
    d = report.differences[0]
    assert d["full"] != d["truncated"] and d["bar"] <= d["cut"]


def test_runner_exit_codes_and_report(market_csv, tmp_path, monkeypatch, capsys):
    args = ["--csv", str(market_csv), *TINY_FLAGS, "--models-dir", str(tmp_path / "m"),
            "--reports-dir", str(tmp_path / "r")]
    assert runner.main(args) == 0
    out = json.loads((tmp_path / "r" / "lookahead_candles_4h.json").read_text())
    assert out["clean"] and len(out["cuts"]) == 20 and out["differences"] == []
    monkeypatch.setattr(forecast_module, "compute_features", leaky_features)
    assert runner.main(args) == 1
    out = json.loads((tmp_path / "r" / "lookahead_candles_4h.json").read_text())
    assert not out["clean"] and "feature:log_ret" in out["columns_differing"]
    assert "LOOK-AHEAD FOUND" in capsys.readouterr().out
    assert runner.main([*args, "--cuts", "1"]) == 2
