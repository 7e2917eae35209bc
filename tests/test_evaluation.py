"""Forecast metrics, the Diebold–Mariano test, baselines and runners/evaluate.py."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_FLAGS
from scipy.stats import spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from bt_lstm.research.baselines import MODELS
from bt_lstm.research.scoring import diebold_mariano, forecast_scores, regression_scores
from runners import evaluate as runner
from runners import walk_forward as wf_runner

F = np.array([0.010, -0.020, 0.003, 0.000, -0.004, 0.012, np.nan])
R = np.array([0.008, -0.010, -0.002, 0.005, -0.006, 0.020, 0.3])


def test_regression_scores_equal_direct_computations():
    s = regression_scores(F, R)
    f, r = F[:-1], R[:-1]  # the NaN row is left out
    assert s["n"] == 6
    assert s["mse"] == pytest.approx(mean_squared_error(r, f), rel=1e-12)
    assert s["rmse"] == pytest.approx(math.sqrt(mean_squared_error(r, f)), rel=1e-12)
    assert s["mae"] == pytest.approx(mean_absolute_error(r, f), rel=1e-12)
    assert s["r2"] == pytest.approx(r2_score(r, f), rel=1e-12)
    assert s["ic"] == pytest.approx(spearmanr(f, r).statistic, rel=1e-12)
    # signs: + + / - - / + - / 0 + / - - / + +  -> 4 of 6 agree
    assert s["dir_acc"] == pytest.approx(4 / 6)


def test_forecast_scores_beside_zero():
    s = forecast_scores(F, R)
    f, r = F[:-1], R[:-1]
    assert s["mse"] == pytest.approx(np.mean((f - r) ** 2))
    assert s["zero_mse"] == pytest.approx(np.mean(r ** 2))
    assert s["zero_mae"] == pytest.approx(np.mean(np.abs(r)))


def test_diebold_mariano_matches_a_hand_computation():
    # d = e_a^2 - e_b^2 = [0, 3, 8]; mean 11/3; lag-0 variance 294/27
    out = diebold_mariano(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]))
    dm = (11 / 3) / math.sqrt((294 / 27) / 3)
    assert out["dm"] == pytest.approx(dm, rel=1e-12)
    assert out["dm"] == pytest.approx(1.92460, abs=1e-5)
    assert out["p_value"] == pytest.approx(math.erfc(dm / math.sqrt(2)), rel=1e-12)
    assert math.isnan(diebold_mariano(np.ones(4), -np.ones(4))["dm"])  # identical losses


def test_evaluate_runner_main_job(market_csv, market, tmp_path, capsys):
    args = ["--csv", str(market_csv), *TINY_FLAGS, "--models-dir", str(tmp_path / "models"),
            "--reports-dir", str(tmp_path / "reports")]
    assert runner.main(args) == 0
    out_dir = tmp_path / "reports" / "evaluate_candles_4h" / "latest"
    for name in ("evaluation.json", "forecasts.csv", "forecast_vs_realised.png", "index.html"):
        assert (out_dir / name).is_file(), name
    res = json.loads((out_dir / "evaluation.json").read_text())
    assert set(res["models"]) == set(MODELS)
    table = pd.read_csv(out_dir / "forecasts.csv", index_col=0, parse_dates=True)
    close = market.frame["close"]
    # the scores in the JSON are the scores of the forecasts in the CSV
    for name in MODELS:
        again = regression_scores(table[name], table["realised"])
        assert res["models"][name]["overall"]["mse"] == pytest.approx(again["mse"], rel=1e-9)
        for regime, s in res["models"][name]["by_regime"].items():
            assert s["n"] == int((table["regime"] == ["bearish", "sideways",
                                                      "bullish"].index(regime)).sum())
    # persistence is the last bar's log return; realised is the next bar's
    logret = np.log(close / close.shift(1))
    np.testing.assert_allclose(table["persistence"], logret.reindex(table.index), rtol=1e-12)
    np.testing.assert_allclose(table["realised"], logret.shift(-1).reindex(table.index),
                               rtol=1e-12)
    assert (table["zero"] == 0).all() and table["train_mean"].nunique() == 1
    assert res["models"]["zero"]["dm_vs_zero"]["dm"] is None
    assert "regime_model" in capsys.readouterr().out


def test_evaluate_runner_on_a_walk_forward_run(market_csv, tmp_path, capsys):
    reports = tmp_path / "reports"
    assert wf_runner.main(["--csv", str(market_csv), "--train-bars", "400", "--test-bars", "200",
                           *TINY_FLAGS, "--no-tearsheet", "--run-id", "wf",
                           "--reports-dir", str(reports)]) == 0
    assert runner.main(["--run", str(reports / "wf"), "--quiet"]) == 0
    res = json.loads((reports / "wf" / "evaluation" / "evaluation.json").read_text())
    table = pd.read_csv(reports / "wf" / "evaluation" / "forecasts.csv", index_col=0)
    run_fc = pd.read_csv(reports / "wf" / "forecasts.csv", index_col=0)
    # each fold's regime-model forecasts are exactly the ones the walk-forward traded on
    np.testing.assert_array_equal(table["regime_model"].to_numpy(),
                                  run_fc.loc[table.index, "forecast"].to_numpy())
    assert sorted(table["fold"].unique()) == sorted(run_fc["fold"].unique())
    assert res["period"]["bars"] == len(table)
    assert runner.main(["--run", str(reports / "wf"), "--csv", "x.csv", "--quiet"]) == 2
    assert "drop --csv" in capsys.readouterr().err
