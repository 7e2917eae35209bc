"""Feature groups, targets and plugins with several markets: pooled and per-market panels train
and trade on non-default groups and the vol-scaled target, a plugin is checked and recorded for
every market, the panel stays causal, the caches and --resume follow the groups and inputs."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_FLAGS

from bt_lstm.config import FeatureConfig, StrategyConfig, WindowConfig
from bt_lstm.data.files import sha256_file
from bt_lstm.data.synthetic import make_market
from bt_lstm.jobs import portfolio_folds
from bt_lstm.jobs.panel_models import obtain_panel
from bt_lstm.jobs.portfolio import plan_panel
from bt_lstm.research.panel import fit_panel
from bt_lstm.signals import groups as groups_module
from bt_lstm.signals.groups import attach_cross

GROUPS = ("price", "calendar", "htf:1d")
N_COLUMNS = 7 + 4 + 7  # price, calendar, htf:1d's price features
CAUSAL = '''def ranged(candles):
    rng = (candles["high"] - candles["low"]) / candles["close"]
    return pd.DataFrame({"range_z": (rng - rng.rolling(20).mean()) / rng.rolling(20).std()},
                        index=candles.index)
'''
LEAKY = '''def peek(candles):
    return pd.DataFrame({"next": candles["close"].shift(-1) / candles["close"]},
                        index=candles.index)
'''
BY_MARKET = '''def named(candles):
    return pd.DataFrame({f"m{candles.index[0].month}": candles["close"].pct_change()},
                        index=candles.index)
'''


@pytest.fixture(scope="module")
def markets() -> dict[str, pd.DataFrame]:
    """A full market and one that starts 60 days later with a 10-bar outage."""
    a = make_market(n_bars=1200, seed=3).frame
    b = make_market(n_bars=900, seed=4, start="2021-03-02").frame
    return {"AAA": a, "BBB": b.drop(b.index[400:410])}


@pytest.fixture(scope="module")
def other() -> pd.DataFrame:
    """The market ``cross:CCC`` reads beside each of them."""
    return make_market(n_bars=1200, seed=5).frame


def _cfg(tiny_cfg, groups=GROUPS, **windows):
    return replace(tiny_cfg, features=FeatureConfig(groups=tuple(groups)),
                   windows=WindowConfig(lookback=8, **windows),
                   strategy=StrategyConfig(no_skill="trade", threshold=0.0))


def _write(frame: pd.DataFrame, path) -> str:
    out = frame.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index_label="timestamp")
    return str(path)


def _plugin(folder, body: str, name: str) -> str:
    path = folder / f"{name}.py"
    path.write_text("import numpy as np\nimport pandas as pd\n\n\n" + body)
    return f"{path}:{name if name != 'leaky' else 'peek'}"


def _manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize("mode", ["pooled", "per-market"])
def test_both_panels_train_and_trade_on_groups_and_the_vol_scaled_target(markets, tiny_cfg,
                                                                         tmp_path, mode):
    from bt_lstm.jobs.portfolio import run_portfolio_job
    from strategies.portfolio import PortfolioStrategy

    cfg = _cfg(tiny_cfg, target="vol-scaled", horizon=2, gap_bars=2)
    job = run_portfolio_job(markets, cfg, PortfolioStrategy, tmp_path / "m",
                            tmp_path / "r" / "portfolio_AAA+BBB_4h", panel=mode,
                            timeframe="4h", tearsheet=False)
    for sym in markets:
        manifest = _manifest(tmp_path / "m" / sym)
        assert len(manifest["features"]) == N_COLUMNS
        assert manifest["features"][-1].startswith("htf:1d:")
        assert manifest["config"]["windows"]["target"] == "vol-scaled"
        assert manifest["config"]["windows"]["horizon"] == 2
        assert manifest["panel"] == mode
    fills = job.backtest.fills
    assert set(fills["symbol"]) == {"AAA", "BBB"}
    bars = pd.read_csv(job.report_dir / "bars.csv")
    assert np.nanmax(np.abs(bars["forecast"])) > 0.05  # a z-score, not a 4h return


def test_a_leaking_plugin_in_a_panel_is_refused_in_one_line(markets, tmp_path, capsys):
    from bt_lstm.cli.backtest import main

    csvs = [_write(f, tmp_path / f"{m}_4h.csv") for m, f in markets.items()]
    spec = _plugin(tmp_path, LEAKY, "leaky")
    rc = main([*(a for c in csvs for a in ("--csv", c)), *TINY_FLAGS, "--features",
               f"price,{spec}", "--models-dir", str(tmp_path / "m"),
               "--reports-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "looks ahead" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_a_plugin_in_a_panel_is_recorded_in_every_market_bundle(markets, tmp_path):
    from bt_lstm.cli.backtest import main

    csvs = [_write(f, tmp_path / f"{m}_4h.csv") for m, f in markets.items()]
    spec = _plugin(tmp_path, CAUSAL, "ranged")
    assert main([*(a for c in csvs for a in ("--csv", c)), *TINY_FLAGS, "--features",
                 f"price,calendar,{spec}", "--no-skill", "trade", "--no-tearsheet",
                 "--models-dir", str(tmp_path / "m"), "--reports-dir",
                 str(tmp_path / "r")]) == 0
    sha = sha256_file(spec.rpartition(":")[0])
    for sym in markets:
        manifest = _manifest(tmp_path / "m" / "AAA+BBB_4h_pooled" / sym)
        assert manifest["feature_plugins"] == {spec: sha}
        assert manifest["features"][-1] == "range_z"


def test_a_pooled_panel_refuses_markets_whose_plugin_columns_differ(markets, tiny_cfg,
                                                                    tmp_path):
    cfg = _cfg(tiny_cfg, groups=("price", _plugin(tmp_path, BY_MARKET, "named")))
    plan = plan_panel(markets, cfg)
    with pytest.raises(ValueError, match="BBB's feature columns differ from AAA's"):
        fit_panel(plan.panel.frames, cfg, plan.split, "pooled")


def _causality(frames, cfg):
    plan = plan_panel(frames, cfg)
    fit = fit_panel(plan.panel.frames, cfg, plan.split, "pooled")
    changed = {m: f.copy() for m, f in plan.panel.frames.items()}
    later = changed["BBB"].index >= plan.split.val_start
    changed["BBB"].loc[later, ["open", "high", "low", "close"]] *= 1.5
    refit = fit_panel(changed, cfg, plan.split, "pooled")
    for sym in frames:
        f0, f1 = fit.forecasters[sym], refit.forecasters[sym]
        assert f0.scaler == f1.scaler and f0.regime_params == f1.regime_params
        for name in f0.models:
            for p0, p1 in zip(f0.models[name].parameters(), f1.models[name].parameters()):
                assert np.array_equal(p0.detach().numpy(), p1.detach().numpy())
    fc = fit.forecasters["BBB"].with_policy("trade", 0.05)
    frame = plan.panel.frames["BBB"]
    full = fc.forecast_frame(frame)
    start = plan.bounds["BBB"].test[0]
    for t in (start, start + 1, start + 2, start + 37, len(frame) - 5):
        cut = fc.forecast_frame(frame.iloc[:t + 1])
        assert cut["forecast"].iloc[-1] == pytest.approx(full["forecast"].iloc[t], abs=1e-12)


def test_the_panel_is_causal_on_a_non_default_group_set(markets, other, tiny_cfg):
    """Bars after the training end changed: scalers, regimes and networks unchanged; a forecast
    at t unchanged when the bars after t are cut (htf, calendar, cross groups included)."""
    frames = {m: attach_cross(f, "CCC", other) for m, f in markets.items()}
    _causality(frames, _cfg(tiny_cfg, groups=(*GROUPS, "cross:CCC"), target="vol-scaled"))


def test_the_causality_check_catches_an_htf_group_using_the_unfinished_day(markets, tiny_cfg,
                                                                           monkeypatch):
    real = groups_module.asof_rows

    def unfinished(values, known_at, row_close, index, columns):
        """Planted leak: a day's candle is used from its first bar (known at its open)."""
        day = np.int64(pd.Timedelta("1D").value)
        return real(values, known_at - day if len(columns) == 7 else known_at, row_close,
                    index, columns)

    monkeypatch.setattr(groups_module, "asof_rows", unfinished)
    with pytest.raises(AssertionError):
        _causality(dict(markets), _cfg(tiny_cfg))


@pytest.mark.parametrize("mode", ["pooled", "per-market"])
def test_the_panel_cache_refits_when_groups_or_cross_inputs_change(markets, other, tiny_cfg,
                                                                   tmp_path, mode):
    price = _cfg(tiny_cfg, groups=("price",))
    plan = plan_panel(markets, price)
    frames, split = plan.panel.frames, plan.split

    def obtain(cfg, fr=frames):
        fcs, reused = obtain_panel(fr, cfg, split, mode, tmp_path)
        return reused, {m: len(_manifest(tmp_path / m)["features"]) for m in fcs}

    assert obtain(price) == (False, {"AAA": 7, "BBB": 7})
    assert obtain(price) == (True, {"AAA": 7, "BBB": 7})
    assert obtain(_cfg(tiny_cfg)) == (False, {"AAA": N_COLUMNS, "BBB": N_COLUMNS})
    assert obtain(_cfg(tiny_cfg, target="vol-scaled"))[0] is False
    cross = _cfg(tiny_cfg, groups=("price", "cross:CCC"))
    with_c = {m: attach_cross(f, "CCC", other) for m, f in frames.items()}
    assert obtain(cross, with_c) == (False, {"AAA": 14, "BBB": 14})
    assert obtain(cross, with_c)[0] is True
    moved = other.copy()
    moved.loc[moved.index[-100:], "close"] *= 1.01  # CCC's candles changed, AAA's and BBB's not
    assert obtain(cross, {m: attach_cross(f, "CCC", moved) for m, f in frames.items()})[0] \
        is False


def test_the_panel_walk_forward_resumes_with_its_groups_and_target(markets, tmp_path,
                                                                    monkeypatch, capsys):
    """Interrupted after fold 0: --resume reads the groups and the target back from the run,
    keeps fold 0's bundles (same cache key) and fits only the later folds with them."""
    from bt_lstm.cli.walk_forward import main

    csvs = [_write(f, tmp_path / f"{m}_4h.csv") for m, f in markets.items()]
    base = [*(a for c in csvs for a in ("--csv", c)), *TINY_FLAGS, "--train-bars", "500",
            "--test-bars", "200", "--no-skill", "trade", "--threshold", "0", "--no-tearsheet",
            "--features", ",".join(GROUPS), "--target", "vol-scaled", "--horizon", "2",
            "--reports-dir", str(tmp_path / "r")]
    save, fit, fitted = portfolio_folds.save_panel, portfolio_folds._fit_task, []

    def killed_after_fold_0(fold_dir, *args, **kwargs):
        save(fold_dir, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(portfolio_folds, "save_panel", killed_after_fold_0)
    assert main([*base, "--run-id", "cut"]) == 130
    assert "--resume cut" in capsys.readouterr().err
    monkeypatch.setattr(portfolio_folds, "save_panel", save)
    monkeypatch.setattr(portfolio_folds, "_fit_task",
                        lambda frames, cfg, split, *a: fitted.append(split.test_start)
                        or fit(frames, cfg, split, *a))
    assert main(["--resume", "cut", "--reports-dir", str(tmp_path / "r")]) == 0
    run = tmp_path / "r" / "cut"
    saved = json.loads((run / "config.json").read_text())["pipeline"]
    assert saved["features"]["groups"] == list(GROUPS)
    assert (saved["windows"]["target"], saved["windows"]["horizon"]) == ("vol-scaled", 2)
    folds = sorted((run / "folds").iterdir())
    assert len(fitted) == len(folds) - 1 >= 2  # fold 0 was kept, not fitted again
    for bundle in (f / m for f in folds for m in ("AAA", "BBB") if (f / m).is_dir()):
        manifest = _manifest(bundle)
        assert len(manifest["features"]) == N_COLUMNS
        assert manifest["config"]["windows"]["target"] == "vol-scaled"


def test_resume_refuses_a_run_whose_cross_market_changed(markets, other, tiny_cfg, tmp_path):
    from bt_lstm.data.panel import align_markets
    from bt_lstm.jobs.portfolio_wf import PanelRunSpec, start_panel_run
    from bt_lstm.research.walkforward import WalkForwardSpec

    cfg = _cfg(tiny_cfg, groups=("price", "cross:CCC"))
    spec = WalkForwardSpec(train_bars=500, test_bars=150)
    first = align_markets({m: attach_cross(f, "CCC", other) for m, f in markets.items()})
    start_panel_run(tmp_path / "run", first, cfg, spec, PanelRunSpec(), False, False)
    start_panel_run(tmp_path / "run", first, cfg, spec, PanelRunSpec(), True, False)  # same
    moved = other.copy()
    moved.loc[moved.index[-100:], "close"] *= 1.01
    changed = align_markets({m: attach_cross(f, "CCC", moved) for m, f in markets.items()})
    with pytest.raises(ValueError, match="what the feature groups read changed"):
        start_panel_run(tmp_path / "run", changed, cfg, spec, PanelRunSpec(), True, False)


def test_a_market_too_short_for_the_htf_warm_up_is_refused(markets, tiny_cfg):
    """LATE has enough training bars for the price features but not for a day's candles' warm-up
    (counted in days: 6 bars each)."""
    late = make_market(n_bars=600, seed=6, start="2021-04-15").frame
    frames = {"AAA": markets["AAA"], "LATE": late}
    assert set(plan_panel(frames, _cfg(tiny_cfg, groups=("price",))).bounds) == {"AAA", "LATE"}
    with pytest.raises(ValueError, match="LATE: too few bars"):
        plan_panel(frames, _cfg(tiny_cfg))
