"""Feature groups and targets through the jobs: the audit covers every group, the backtest
trades the sign of a vol-scaled forecast, walk-forward and evaluate take the same flags."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_FLAGS

from bt_lstm.config import FeatureConfig, PipelineConfig, WindowConfig, replace
from bt_lstm.research.audit import run_audit
from bt_lstm.research.pipeline import fit_pipeline
from bt_lstm.signals import groups as groups_module
from runners import backtest as backtest_runner
from runners import evaluate as evaluate_runner
from runners import walk_forward as wf_runner

GROUPS = ("price", "calendar", "htf:1d")


@pytest.fixture(scope="module")
def grouped(market, tiny_cfg):
    cfg = replace(tiny_cfg, features=FeatureConfig(groups=GROUPS))
    return fit_pipeline(market.frame, cfg)[0].forecaster


def test_the_audit_is_clean_on_every_group_and_covers_their_columns(market, grouped):
    report = run_audit(market.frame, grouped, threshold=0.001, n_cuts=8)
    assert report.clean, report.differences[:3]


def test_the_audit_catches_an_htf_group_using_the_unfinished_day(market, grouped, monkeypatch):
    real = groups_module.asof_rows

    def unfinished(values, known_at, row_close, index, columns):
        """Planted leak: a day's candle is used from its first bar (known at its open)."""
        day = np.int64(pd.Timedelta("1D").value)
        return real(values, known_at - day if len(columns) == 7 else known_at, row_close,
                    index, columns)

    monkeypatch.setattr(groups_module, "asof_rows", unfinished)
    report = run_audit(market.frame, grouped, threshold=0.001, n_cuts=8)
    flagged = set(report.columns_differing())
    assert "feature:htf:1d:log_ret" in flagged and "forecast" in flagged
    assert not any(c.startswith(("feature:hour", "feature:dow")) for c in flagged)


def test_backtest_positions_follow_the_sign_of_a_vol_scaled_forecast(market_csv, tmp_path):
    rc = backtest_runner.main(["--csv", str(market_csv), *TINY_FLAGS, "--target", "vol-scaled",
                               "--horizon", "2", "--threshold", "0.05", "--no-skill", "trade",
                               "--models-dir", str(tmp_path / "m"), "--reports-dir",
                               str(tmp_path / "r"), "--no-tearsheet"])
    assert rc == 0
    run = next((tmp_path / "r").glob("backtest_*/latest"))
    cfg = PipelineConfig.from_json((run / "config.json").read_text())
    assert (cfg.windows.target, cfg.windows.horizon, cfg.windows.gap_bars) == ("vol-scaled", 2, 2)
    bars = pd.read_csv(run / "bars.csv", index_col=0)
    f = bars["forecast"].to_numpy()
    assert np.nanmax(np.abs(f)) > 0.05, "a vol-scaled forecast is a z-score, not a return"
    want = np.where(f > 0.05, 1, np.where(f < -0.05, -1, 0))
    ok = np.isfinite(f)
    assert (bars["signal"].to_numpy()[ok] == want[ok]).all()
    held = np.sign(bars["position"].to_numpy()[1:])  # position at t+1: the order of t filled
    moved = ok[:-1] & (want[:-1] != 0)
    assert moved.sum() > 10 and (held[moved] == want[:-1][moved]).all()
    bundle = next(p.parent for p in (tmp_path / "m").rglob("manifest.json"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["config"]["windows"]["target"] == "vol-scaled"


def test_walk_forward_and_evaluate_take_groups_and_target(market_csv, tmp_path):
    reports = tmp_path / "reports"
    assert wf_runner.main(["--csv", str(market_csv), "--train-bars", "500", "--test-bars",
                           "200", *TINY_FLAGS, "--features", "price,calendar", "--target",
                           "vol-scaled", "--no-tearsheet", "--run-id", "wf",
                           "--reports-dir", str(reports)]) == 0
    cfg = json.loads((reports / "wf" / "config.json").read_text())["pipeline"]
    assert cfg["features"]["groups"] == ["price", "calendar"]
    assert cfg["windows"]["target"] == "vol-scaled"
    manifest = json.loads(next((reports / "wf" / "folds").rglob("manifest.json")).read_text())
    assert manifest["features"][-4:] == ["hour_sin", "hour_cos", "dow_sin", "dow_cos"]
    assert evaluate_runner.main(["--run", str(reports / "wf"), "--quiet"]) == 0
    table = pd.read_csv(reports / "wf" / "evaluation" / "forecasts.csv", index_col=0)
    run_fc = pd.read_csv(reports / "wf" / "forecasts.csv", index_col=0)
    np.testing.assert_array_equal(table["regime_model"].to_numpy(),
                                  run_fc.loc[table.index, "forecast"].to_numpy())
    np.testing.assert_allclose(table["realised"].to_numpy(),
                               run_fc.loc[table.index, "realised"].to_numpy())
    assert np.nanstd(table["realised"]) > 0.3  # realised in the target's units (z-scores)


def test_default_config_gives_the_same_features_and_target_as_before(market):
    cfg = PipelineConfig(windows=WindowConfig(horizon=1))
    from bt_lstm.models.plugins import feature_frame
    from bt_lstm.research.pipeline import target_of
    from bt_lstm.signals.features import compute_features
    from bt_lstm.signals.windows import make_target

    pd.testing.assert_frame_equal(feature_frame(market.frame, cfg.features),
                                  compute_features(market.frame, cfg.features))
    pd.testing.assert_series_equal(target_of(market.frame, cfg),
                                   make_target(market.frame["close"], 1))


def test_too_short_data_for_an_htf_warm_up_is_refused_up_front_naming_the_group(
        market_csv, tmp_path, capsys):
    """1d candles on 4h bars need their warm-up in days: 900 bars are enough for price alone
    (the floor is 727) but not with htf:1w, which is refused in one line before any training."""
    from bt_lstm.research.pipeline import check_enough_bars, min_bars

    cfg = PipelineConfig(windows=WindowConfig(lookback=8))
    bar = pd.Timedelta("4h")
    weekly = replace(cfg, features=FeatureConfig(groups=("price", "htf:1w")))
    assert min_bars(weekly, bar) - min_bars(cfg, bar) >= 7 * 6 * 30  # weeks, counted in bars
    check_enough_bars(900, cfg, "X", bar)
    with pytest.raises(ValueError, match="feature group htf:1w's warm-up of"):
        check_enough_bars(900, weekly, "X", bar)
    lines = Path(market_csv).read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:901]) + "\n")
    rc = backtest_runner.main(["--csv", str(short), *TINY_FLAGS, "--features", "price,htf:1w",
                               "--models-dir", str(tmp_path / "m"), "--reports-dir",
                               str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "htf:1w" in err, err
    assert not (tmp_path / "m").exists()
