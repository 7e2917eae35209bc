"""Walk-forward: fold invariants, fit discipline, parallel equality, resume, stitched backtest."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_FLAGS

from bt_lstm.config import PipelineConfig
from bt_lstm.research import walkforward as wf
from bt_lstm.research.walkforward import WalkForwardSpec, fit_folds, make_folds, parse_span
from runners import walk_forward as runner

SPANS = ["--train-bars", "400", "--test-bars", "200", *TINY_FLAGS]
WF_FLAGS = [*SPANS, "--no-tearsheet"]


def check_invariants(folds, n_bars, spec, gap):
    assert [f.index for f in folds] == list(range(len(folds)))
    for f in folds:
        assert f.train[0] == f.fit[0] < f.fit[1] < f.val[0] < f.val[1] == f.train[1]
        assert f.val[0] - f.fit[1] == gap  # purge gap between fitting and validation
        assert f.test[0] - f.train[1] == gap + spec.embargo_bars  # purge gap (+ embargo)
        assert 0 < f.test[1] - f.test[0] <= spec.test_bars
        if spec.mode == "rolling":
            assert f.train[1] - f.train[0] == spec.train_bars
        else:
            assert f.train[0] == 0
    for a, b in zip(folds, folds[1:]):
        assert a.test[1] == b.test[0]  # tiles: no overlap, no hole
        assert a.train[0] <= b.train[0] and a.train[1] < b.train[1]
    assert folds[0].test[0] == spec.train_bars + gap + spec.embargo_bars
    assert folds[-1].test[1] == n_bars  # the evaluated span is covered to the end


@pytest.mark.parametrize("mode", ["rolling", "expanding"])
@pytest.mark.parametrize("n_bars, train, test, embargo", [
    (3000, 500, 250, 0), (3001, 700, 333, 5), (1200, 400, 1000, 0), (2000, 365, 1, 2)])
def test_fold_invariants(mode, n_bars, train, test, embargo):
    cfg = PipelineConfig()
    spec = WalkForwardSpec(train, test, mode=mode, embargo_bars=embargo)
    folds = make_folds(n_bars, spec, cfg)
    check_invariants(folds, n_bars, spec, cfg.windows.gap_bars)


@pytest.mark.parametrize("n_bars, spec, match", [
    (1000, WalkForwardSpec(999, 100), "no fold fits"),
    (1000, WalkForwardSpec(400, 1001), "longer than the data"),
    (5000, WalkForwardSpec(100, 100), "too short"),
])
def test_impossible_plans_are_one_clear_error(n_bars, spec, match):
    with pytest.raises(ValueError, match=match):
        make_folds(n_bars, spec, PipelineConfig())


def test_step_must_tile_and_spans_parse():
    with pytest.raises(ValueError, match="tile"):
        WalkForwardSpec(100, 50, step_bars=60)
    bar = pd.Timedelta("4h")
    assert parse_span("365d", bar, "--train") == 2190
    assert parse_span("90d", bar, "--test") == 540
    assert parse_span(17, bar, "--test") == 17
    for bad, match in [("5h", "whole number"), ("soon", "not a duration"), ("1h", "shorter")]:
        with pytest.raises(ValueError, match=match):
            parse_span(bad, bar, "--test")


def test_changing_a_folds_test_data_leaves_its_weights_unchanged(market, tiny_cfg, tmp_path):
    frame = market.frame
    spec = WalkForwardSpec(400, 200)
    folds = make_folds(len(frame), spec, tiny_cfg)[:2]
    a, _ = fit_folds(frame, folds, tiny_cfg, tmp_path / "a")
    changed = frame.copy()
    t0, t1 = folds[0].test
    rng = np.random.default_rng(0)
    changed.iloc[t0:t1, :4] *= rng.uniform(0.5, 1.5, size=(t1 - t0, 1))
    changed["high"] = changed[["open", "high", "low", "close"]].max(axis=1)
    changed["low"] = changed[["open", "high", "low", "close"]].min(axis=1)
    b, _ = fit_folds(changed, folds, tiny_cfg, tmp_path / "b")
    for name, model in a[0].models.items():
        for key, value in model.state_dict().items():
            assert torch.equal(value, b[0].models[name].state_dict()[key]), (name, key)
    # fold 1 trains on fold 0's test span, so its weights do change
    assert any(not torch.equal(v, b[1].models[n].state_dict()[k])
               for n, m in a[1].models.items() for k, v in m.state_dict().items())


def test_first_test_window_comes_from_earlier_bars(market, tiny_cfg, tmp_path):
    frame = market.frame
    folds = make_folds(len(frame), WalkForwardSpec(400, 200), tiny_cfg)[:2]
    fcs, _ = fit_folds(frame, folds, tiny_cfg, tmp_path)
    stitched = wf.stitch_forecasts(frame, folds, fcs)
    # the forecast at each fold's first test bar is there and equals the one computed on data
    # cut right after that bar: its window is made of earlier bars only
    for f in folds:
        first = frame.index[f.test[0]]
        cut = frame.iloc[f.train[0]:f.test[0] + 1]
        alone = fcs[f.index].forecast_frame(cut)["forecast"].iloc[-1]
        assert np.isfinite(stitched.loc[first, "forecast"])
        assert stitched.loc[first, "forecast"] == alone


def run(tmp_path, run_id, *extra):
    rc = runner.main(["--csv", str(tmp_path / "candles.csv"), *WF_FLAGS, "--run-id", run_id,
                      "--reports-dir", str(tmp_path / "reports"), *extra])
    assert rc == 0
    return tmp_path / "reports" / run_id


def forecasts(run_dir):
    return pd.read_csv(run_dir / "forecasts.csv", index_col=0)


@pytest.fixture()
def baseline_run(market_csv, tmp_path):
    return run(tmp_path, "base")


def test_runner_writes_every_output(market_csv, tmp_path, capsys):
    run_dir = run(tmp_path, "full", "--jobs", "1")
    run_dir_tear = tmp_path / "reports" / "full"
    out = capsys.readouterr().out
    for name in ("config.json", "manifest.json", "forecasts.csv", "folds.csv", "metrics.json",
                 "overview.png", "index.html", "returns.csv", "bars.csv", "trades.csv",
                 "fills.csv"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    folds = pd.read_csv(run_dir / "folds.csv")
    assert len(list((run_dir / "folds").glob("fold_*/manifest.json"))) == len(folds)
    assert {"all_mse", "all_zero_mse", "all_dir_acc", "bullish_mae", "windows_bearish",
            "train_start", "test_end"} <= set(folds.columns)
    for regime in ("bearish", "sideways", "bullish"):  # the skill guard, per fold and regime
        assert {f"verdict_{regime}", f"val_ratio_{regime}", f"dm_p_{regime}",
                f"route_{regime}"} <= set(folds.columns)
        assert set(folds[f"verdict_{regime}"].dropna()) <= {"skill", "no_skill"}
    skill = json.loads((run_dir / "metrics.json").read_text())["skill"]
    assert skill["fold_regime_models"] == 3 * len(folds)
    assert skill["traded"] == int(sum((folds[f"route_{r}"] != "flat:no_skill").sum()
                                      for r in ("bearish", "sideways", "bullish")))
    fc = forecasts(run_dir)
    assert list(fc.columns) == ["fold", "regime", "model", "forecast", "realised"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {"data_fingerprint", "seeds", "packages", "git_commit"} <= set(manifest)
    page = (run_dir / "index.html").read_text()
    assert "overview.png" in page and "folds.csv" in page
    assert f"{skill['traded']} of {skill['fold_regime_models']} fold × regime models traded" \
        in page
    assert "skill guard:" in out
    assert (run_dir / "overview.png").read_bytes()[:4] == b"\x89PNG"
    assert "folds (rolling" in out and str(run_dir_tear) in out
    # the tearsheet, when asked for, is linked from the page
    tear = runner.main(["--csv", str(tmp_path / "candles.csv"), *SPANS, "--run-id", "t",
                        "--reports-dir", str(tmp_path / "reports")])
    assert tear == 0 and (tmp_path / "reports" / "t" / "tearsheet.html").is_file()
    assert "tearsheet.html" in (tmp_path / "reports" / "t" / "index.html").read_text()


def test_stitched_backtest_follows_forecasts_bar_by_bar(baseline_run):
    bars = pd.read_csv(baseline_run / "bars.csv", index_col=0)
    fc = forecasts(baseline_run)
    cfg = json.loads((baseline_run / "config.json").read_text())["pipeline"]["strategy"]
    th = cfg["threshold"]
    assert (bars.index == fc.index).all()
    want = np.where(fc["forecast"] > th, 1, np.where(fc["forecast"] < -th, -1, 0))
    want[np.isnan(fc["forecast"].to_numpy())] = 0
    np.testing.assert_array_equal(bars["signal"].to_numpy(), want)
    # the position held at bar t comes from the signal at t-1 (filled at t's open)
    np.testing.assert_array_equal(np.sign(bars["position"].to_numpy()[1:]), want[:-1])
    assert bars["position"].iloc[0] == 0
    # models switch at fold boundaries: each bar's forecast comes from its own fold's models
    assert fc["fold"].is_monotonic_increasing and fc["fold"].nunique() > 2


def test_jobs_2_and_a_dask_cluster_give_identical_forecasts(baseline_run, tmp_path):
    pytest.importorskip("dask.distributed")
    from dask.distributed import LocalCluster

    two = run(tmp_path, "two", "--jobs", "2")
    pd.testing.assert_frame_equal(forecasts(baseline_run), forecasts(two))
    # ":0": a free port for the dashboard; the default 8787 may be taken by another cluster
    # on this machine (a second test run), and distributed's warning about it is an error here.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", scheduler_port=0) as cluster:
        dask_run = run(tmp_path, "dask", "--scheduler", cluster.scheduler_address)
    pd.testing.assert_frame_equal(forecasts(baseline_run), forecasts(dask_run))


def test_resume_after_interruption_equals_an_uninterrupted_run(baseline_run, tmp_path,
                                                               monkeypatch, capsys):
    real = wf._train_task
    calls = {"n": 0}

    def dies_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(wf, "_train_task", dies_midway)
    args = ["--csv", str(tmp_path / "candles.csv"), *WF_FLAGS, "--run-id", "cut",
            "--reports-dir", str(tmp_path / "reports")]
    assert runner.main(args) == 130
    cut = tmp_path / "reports" / "cut"
    saved = sorted(p.parent.name for p in (cut / "folds").glob("fold_*/manifest.json"))
    assert f"{len(saved)} finished folds are kept" in capsys.readouterr().err
    assert saved and len(saved) < len(pd.read_csv(baseline_run / "folds.csv"))
    assert not (cut / "forecasts.csv").exists()
    monkeypatch.setattr(wf, "_train_task", real)
    capsys.readouterr()
    assert runner.main(["--resume", "cut", "--reports-dir", str(tmp_path / "reports"),
                        "--no-tearsheet", "--quiet"]) == 0
    assert f"{len(saved)} folds already trained are reused" in capsys.readouterr().err
    pd.testing.assert_frame_equal(forecasts(baseline_run), forecasts(cut))
    base_m = json.loads((baseline_run / "metrics.json").read_text())
    cut_m = json.loads((cut / "metrics.json").read_text())
    assert base_m["strategy"] == cut_m["strategy"]


def test_existing_run_is_never_overwritten_and_bad_plans_fail_before_training(
        baseline_run, tmp_path, capsys):
    before = (baseline_run / "metrics.json").read_bytes()
    args = ["--csv", str(tmp_path / "candles.csv"), *WF_FLAGS, "--run-id", "base",
            "--reports-dir", str(tmp_path / "reports")]
    assert runner.main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (baseline_run / "metrics.json").read_bytes() == before
    bad = ["--csv", str(tmp_path / "candles.csv"), "--train-bars", "1199", "--test-bars", "10",
           "--run-id", "bad", "--reports-dir", str(tmp_path / "reports"), "--quiet"]
    assert runner.main(bad) == 2
    assert "no fold fits" in capsys.readouterr().err
    assert not (tmp_path / "reports" / "bad").exists()
    assert runner.main(["--resume", "base", "--csv", "x.csv",
                        "--reports-dir", str(tmp_path / "reports")]) == 2
    assert "drop --csv" in capsys.readouterr().err
    assert runner.main(["--resume", "base", "--epochs", "3",
                        "--reports-dir", str(tmp_path / "reports")]) == 2
    assert "drop --epochs" in capsys.readouterr().err
