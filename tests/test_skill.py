"""The skill guard: a model that showed no skill on its validation windows never trades."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from bt_lstm.backtest.engine import run_backtest
from bt_lstm.config import (
    ModelConfig,
    PipelineConfig,
    RegimeConfig,
    StrategyConfig,
    TrainConfig,
    WindowConfig,
    replace,
)
from bt_lstm.models.artifacts import ArtifactError
from bt_lstm.models.forecast import load_forecaster
from bt_lstm.models.skill import FLAT, SKILL_FIELDS, route_regimes, skill_verdict
from bt_lstm.research.pipeline import fit_pipeline
from bt_lstm.research.scoring import skill_record
from strategies.lstm_strategy import RegimeLSTMStrategy

NOISE, PREDICTABLE = 0, 2


def two_regime_market(n_bars: int = 1800, seed: int = 5, phi: float = 0.6,
                      test_seed: int | None = None, test_from: int | None = None) -> pd.DataFrame:
    """Spells of 100 bars: regime 0 is pure noise, regime 2 an AR(1) with coefficient ``phi``.

    ``test_seed`` redraws the noise of the bars from ``test_from`` on (other test bars).
    """
    rng = np.random.default_rng(seed)
    regime = (np.arange(n_bars) // 100) % 2 * 2
    eps = rng.standard_normal(n_bars) * 0.01
    if test_seed is not None:
        redraw = np.random.default_rng(test_seed).standard_normal(n_bars - test_from)
        eps[test_from:] = redraw * 0.01
    ret = np.empty(n_bars)
    prev = 0.0
    for t in range(n_bars):
        ret[t] = (phi * prev if regime[t] == PREDICTABLE else 0.0) + eps[t]
        prev = ret[t]
    close = 100.0 * np.exp(np.cumsum(ret))
    open_ = np.concatenate([[100.0], close[:-1]])
    index = pd.date_range("2021-01-01", periods=n_bars, freq="4h", name="timestamp")
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.001,
                         "low": np.minimum(open_, close) * 0.999, "close": close,
                         "volume": 100.0 + np.arange(n_bars) % 7, "regime": regime}, index=index)


@pytest.fixture(scope="module")
def skill_cfg() -> PipelineConfig:
    return PipelineConfig(
        regimes=RegimeConfig(method="column"), windows=WindowConfig(lookback=8),
        model=ModelConfig(hidden_size=8),
        train=TrainConfig(epochs=5, patience=5, batch_size=64, min_regime_windows=20,
                          min_val_windows=5, device="cpu"))


@pytest.fixture(scope="module")
def two_regime_fit(skill_cfg):
    frame = two_regime_market()
    fit, bounds = fit_pipeline(frame, skill_cfg)
    return frame, fit, bounds


def test_noise_regime_has_no_skill_and_holds_no_position(two_regime_fit, skill_cfg):
    frame, fit, bounds = two_regime_fit
    skill = {name: meta["skill"] for name, meta in fit.model_meta.items()}
    assert skill["regime_0"]["verdict"] == "no_skill"
    assert skill["regime_2"]["verdict"] == "skill"
    assert skill["regime_2"]["ratio"] < 1 and skill["regime_2"]["dm_p"] <= 0.05
    for record in skill.values():
        assert set(SKILL_FIELDS) <= set(record)
    fc = fit.forecaster
    assert fc.routes()[NOISE] == FLAT and fc.routes()[PREDICTABLE] == "regime_2"
    signals = fc.forecast_frame(frame).iloc[bounds.test[0]:]
    test = frame.iloc[bounds.test[0]:]
    noise = (signals["regime"] == NOISE) & signals["forecast"].notna()
    assert noise.sum() > 50
    assert (signals.loc[noise, "forecast"] == 0).all()
    assert (signals.loc[noise, "model"] == FLAT).all()
    res = run_backtest(test, RegimeLSTMStrategy, skill_cfg.strategy, signals=signals,
                       forecaster=fc)
    bars = res.bars
    in_noise = (bars["regime"] == NOISE).to_numpy()
    assert (bars.loc[in_noise, "signal"] == 0).all()
    # the close of t decides, the open of t+1 fills: flat from the second bar of a spell
    settled = in_noise & np.r_[False, in_noise[:-1]]
    assert (bars.loc[settled, "position"] == 0).all()
    traded = (bars["regime"] == PREDICTABLE) & (bars["signal"] != 0)
    assert traded.sum() > 20 and len(res.fills) > 10
    assert set(bars.loc[in_noise & bars["forecast"].notna().to_numpy(), "model"]) == {FLAT}
    # the per-bar path takes the same route
    t = int(np.flatnonzero(noise.to_numpy())[-1]) + bounds.test[0]
    assert fc.forecast_last(frame.iloc[:t + 1]) == (NOISE, 0.0)


def test_changing_the_test_bars_changes_no_verdict(two_regime_fit, skill_cfg):
    frame, fit, bounds = two_regime_fit
    other = two_regime_market(test_seed=99, test_from=bounds.test[0])
    assert not np.allclose(other["close"].iloc[-50:], frame["close"].iloc[-50:])
    again, _ = fit_pipeline(other, skill_cfg)
    assert {n: m["skill"] for n, m in again.model_meta.items()} == \
        {n: m["skill"] for n, m in fit.model_meta.items()}


def test_best_epoch_zero_is_no_skill_whatever_its_ratio():
    strong = {"ratio": 0.5, "dm_p": 1e-9, "best_epoch": 3}
    assert skill_verdict(strong) == "skill"
    assert skill_verdict(dict(strong, best_epoch=0)) == "no_skill"
    assert skill_verdict(dict(strong, ratio=1.0)) == "no_skill"
    assert skill_verdict(dict(strong, dm_p=0.2)) == "no_skill"
    assert skill_verdict(dict(strong, dm_p=0.2), skill_p=0.25) == "skill"
    assert skill_verdict(dict(strong, dm_p=float("nan"))) == "no_skill"
    y = np.random.default_rng(0).standard_normal(300)
    record = skill_record(y * 0.9, y, 0.0, best_epoch=0)  # nearly perfect, but untrained
    assert record["ratio"] < 0.05 and record["dm_p"] < 1e-6 and record["verdict"] == "no_skill"
    assert skill_record(y * 0.9, y, 0.0, best_epoch=1)["verdict"] == "skill"


def test_policies_route_regimes():
    regime_models = {0: "regime_0", 1: "pooled", 2: "regime_2"}
    good, bad = {"ratio": 0.9, "dm_p": 0.01, "best_epoch": 2}, {"ratio": 1.01, "dm_p": 0.6,
                                                                "best_epoch": 2}
    skill = {"regime_0": bad, "regime_2": good, "pooled": good}
    assert route_regimes(regime_models, skill, "flat") == {0: FLAT, 1: "pooled", 2: "regime_2"}
    assert route_regimes(regime_models, skill, "pooled") == {0: "pooled", 1: "pooled",
                                                            2: "regime_2"}
    assert route_regimes(regime_models, dict(skill, pooled=bad), "pooled") == \
        {0: FLAT, 1: FLAT, 2: "regime_2"}
    assert route_regimes(regime_models, skill, "trade") == regime_models
    with pytest.raises(ValueError, match="no_skill='hold'"):
        route_regimes(regime_models, skill, "hold")
    with pytest.raises(ValueError, match="no_skill"):
        StrategyConfig(no_skill="hold")
    with pytest.raises(ValueError, match="skill_p"):
        StrategyConfig(skill_p=0.0)


def test_the_no_skill_policy_of_the_config_decides_whether_the_noise_regime_trades(
        two_regime_fit, tmp_path):
    """The policy travels as the jobs pass it (``StrategyConfig.no_skill`` -> the bundle's
    loader -> forecasts -> backtest): ``trade`` holds positions in the noise regime on its
    network's own forecasts, ``flat`` holds none there."""
    frame, fit, bounds = two_regime_fit
    fit.forecaster.save(tmp_path / "b", fit.model_meta)
    test = frame.iloc[bounds.test[0]:bounds.test[1]]
    regime = test["regime"].to_numpy()
    # noise bars whose previous bar was noise too: the position decided there is the regime's
    settled = np.flatnonzero((regime == NOISE) & (np.roll(regime, 1) == NOISE))[1:]
    held = {}
    for policy in ("trade", "flat"):
        cfg = StrategyConfig(no_skill=policy, threshold=0.0)
        fc = load_forecaster(tmp_path / "b", cfg.no_skill, cfg.skill_p)
        signals = fc.forecast_frame(frame)
        res = run_backtest(test, RegimeLSTMStrategy, cfg, signals=signals)
        noise_fc = signals["forecast"].reindex(test.index).to_numpy()[settled]
        if policy == "trade":
            own = fit.forecaster.with_policy("trade", cfg.skill_p).forecast_frame(frame)
            np.testing.assert_array_equal(
                noise_fc, own["forecast"].reindex(test.index).to_numpy()[settled])
            assert np.isfinite(noise_fc).all() and (noise_fc != 0).any()
        else:
            assert (noise_fc == 0).all()
        held[policy] = int((res.bars["position"].to_numpy()[settled] != 0).sum())
    assert held["flat"] == 0
    assert held["trade"] > len(settled) // 4, held


def test_trade_policy_forecasts_are_the_networks_own(two_regime_fit):
    frame, fit, _ = two_regime_fit
    fc = fit.forecaster.with_policy("trade", 0.05)
    out = fc.forecast_frame(frame)
    scaled, regimes, valid = fc.prepare(frame)
    from bt_lstm.signals.windows import gather_windows

    for regime, name in fc.regime_models.items():
        ends = np.flatnonzero(valid & (regimes == regime))
        own = fc._predict(name, gather_windows(scaled, ends, fc.lookback))
        np.testing.assert_array_equal(out["forecast"].to_numpy()[ends], own)
        assert (out["model"].to_numpy()[ends] == name).all()


def test_bundle_without_a_skill_record_is_refused_with_the_fix(two_regime_fit, tmp_path):
    _, fit, _ = two_regime_fit
    fit.forecaster.save(tmp_path / "b", fit.model_meta)
    loaded = load_forecaster(tmp_path / "b")
    assert loaded.routes() == fit.forecaster.routes()
    assert loaded.skill["regime_2"] == fit.model_meta["regime_2"]["skill"]
    assert load_forecaster(tmp_path / "b", "trade").routes() == loaded.regime_models
    path = tmp_path / "b" / "regime_0.json"
    meta = json.loads(path.read_text())
    del meta["skill"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="no skill record.*--retrain"):
        load_forecaster(tmp_path / "b")


def test_pooled_policy_trains_a_pooled_model_for_the_noise_regime(skill_cfg):
    frame = two_regime_market()
    cfg = replace(skill_cfg, strategy=StrategyConfig(no_skill="pooled"))
    assert cfg.training_dict() != skill_cfg.training_dict()  # another model cache key
    fit, _ = fit_pipeline(frame, cfg)
    assert "pooled" in fit.forecaster.models
    pooled_has_skill = fit.model_meta["pooled"]["skill"]["verdict"] == "skill"
    assert fit.forecaster.routes()[NOISE] == ("pooled" if pooled_has_skill else FLAT)
    assert fit.forecaster.routes()[PREDICTABLE] == "regime_2"
    assert math.isfinite(fit.model_meta["pooled"]["skill"]["mean_mse"])


def test_main_job_shows_verdicts_in_terminal_metrics_and_bars(tmp_path, capsys):
    from bt_lstm.cli import backtest as runner

    csv = tmp_path / "two_regimes.csv"
    frame = two_regime_market()
    frame.index = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(csv, index_label="timestamp")
    flags = ["--csv", str(csv), "--regimes", "column", "--lookback", "8", "--hidden-size", "8",
             "--epochs", "5", "--patience", "5", "--batch-size", "64",
             "--min-regime-windows", "20", "--quiet", "--models-dir", str(tmp_path / "m"),
             "--reports-dir", str(tmp_path / "r")]
    assert runner.main(flags) == 0
    out = capsys.readouterr().out
    assert "bearish: no validated skill (val MSE" in out and "→ flat" in out
    assert "bullish: skill (val MSE" in out and "→ trade regime_2" in out
    report = tmp_path / "r" / "backtest_two_regimes_4h" / "latest"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["skill"]["policy"] == "flat" and metrics["skill"]["skill_p"] == 0.05
    assert metrics["skill"]["bearish"]["verdict"] == "no_skill"
    assert metrics["skill"]["bearish"]["route"] == FLAT
    assert metrics["skill"]["bullish"]["verdict"] == "skill"
    # sideways has no bars here: it falls back to the pooled model, which has skill
    assert metrics["skill"]["sideways"]["model"] == "pooled"
    assert metrics["models_traded"] == 1 + (metrics["skill"]["sideways"]["verdict"] == "skill")
    bars = pd.read_csv(report / "bars.csv", index_col=0)
    made = bars["forecast"].notna()
    assert set(bars.loc[made & (bars["regime"] == NOISE), "model"]) == {FLAT}
    assert set(bars.loc[made & (bars["regime"] == PREDICTABLE), "model"]) == {"regime_2"}
    # another policy or p reuses the saved models and only changes the routing
    assert runner.main(flags + ["--no-skill", "trade", "--no-tearsheet"]) == 0
    out = capsys.readouterr().out
    assert "(reused)" in out and "bearish: no validated skill" in out and "→ trade regime_0" in out
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["models_traded"] == 3


def test_a_strategy_that_never_trades_gets_a_page_with_buy_and_hold(tmp_path):
    from bt_lstm.backtest.metrics import performance
    from bt_lstm.backtest.reports import write_tearsheet

    idx = pd.date_range("2024-01-01", periods=50, freq="D")
    bench = pd.Series(np.random.default_rng(0).normal(0, 0.02, 50), index=idx)
    flat = pd.Series(0.0, index=idx)
    metrics = {"period": {"start": "2024-01-01", "end": "2024-02-19", "bars": 50},
               "costs": {"commission": 0.001, "slippage": 0.0},
               "strategy": dict(performance(flat), trades=0, exposure=0.0),
               "buy_and_hold": performance(bench)}
    write_tearsheet(tmp_path / "t.html", metrics, flat, bench, "flat")
    page = (tmp_path / "t.html").read_text()
    assert f"{metrics['buy_and_hold']['sharpe']:,.2f}" in page  # buy-and-hold's figures
    assert 'alt="equity: strategy and buy-and-hold"' in page and "--no-skill trade" in page
