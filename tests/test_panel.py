"""Several markets: alignment, the calendar split, pooled training with the skill guard per
market, causality on a panel, one-market runs, bad input."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_FLAGS, real_data_dir

from bt_lstm.config import ModelConfig, PipelineConfig, TrainConfig, WindowConfig
from bt_lstm.data.candles import load_ohlcv
from bt_lstm.data.panel import align_markets, snap_to_grid
from bt_lstm.data.synthetic import make_market
from bt_lstm.jobs.portfolio import forecast_test_span, plan_panel
from bt_lstm.research.panel import fit_panel
from bt_lstm.signals.calendar import calendar_split, market_bounds
from bt_lstm.signals.windows import split_bounds

H4 = pd.Timedelta("4h")


def ar_market(n: int, phi: float, seed: int, start: str = "2021-01-01") -> pd.DataFrame:
    """AR(1) log returns (phi 0: noise, nothing to forecast; phi 0.5: predictable)."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal(n) * 0.01
    r = np.empty(n)
    prev = 0.0
    for t in range(n):
        r[t] = prev = phi * prev + eps[t]
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.002,
                         "low": np.minimum(open_, close) * 0.998, "close": close,
                         "volume": 100 * np.exp(0.3 * rng.standard_normal(n))},
                        index=pd.date_range(start, periods=n, freq="4h", name="timestamp"))


@pytest.fixture(scope="module")
def two_markets() -> dict[str, pd.DataFrame]:
    """A full market and one that starts 60 days later with a 10-bar outage."""
    a = make_market(n_bars=1200, seed=3).frame
    b = make_market(n_bars=900, seed=4, start="2021-03-02").frame
    b = b.drop(b.index[400:410])
    return {"AAA": a, "BBB": b}


def _write(frame: pd.DataFrame, path) -> str:
    out = frame.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index_label="timestamp")
    return str(path)


def test_a_later_market_joins_when_it_starts_and_its_gap_is_reported(two_markets):
    panel = align_markets(two_markets)
    rep = panel.reports["BBB"]
    assert rep.first_bar == "2021-03-02 00:00:00" and rep.n_missing == 10
    assert panel.reports["AAA"].n_missing == 0
    # nothing forward-filled: the outage stays empty, the timeline is the union
    assert len(panel.frames["BBB"]) == 890
    outage = pd.date_range("2021-05-07 16:00", periods=10, freq="4h")
    assert not outage.isin(panel.frames["BBB"].index).any()
    assert len(panel.timeline()) == len(two_markets["AAA"].index.union(two_markets["BBB"].index))


def test_off_grid_candles_go_to_the_next_slot_never_an_earlier_one():
    idx = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 04:00", "2024-01-01 05:00",
                            "2024-01-01 09:00", "2024-01-01 13:00", "2024-01-01 16:00"])
    frame = pd.DataFrame({c: np.arange(6.0) + 1 for c in ("open", "high", "low", "close")}
                         | {"volume": np.ones(6)}, index=idx)
    out, moved, dropped = snap_to_grid(frame, H4)
    # 05:00 -> 08:00 and 09:00 -> 12:00 (their slots close after they do); 13:00 -> 16:00
    # collides with the on-grid 16:00 candle, which stays
    assert list(out.index.strftime("%H:%M")) == ["00:00", "04:00", "08:00", "12:00", "16:00"]
    assert out.loc["2024-01-01 08:00", "close"] == 3.0 and out.loc["2024-01-01 16:00",
                                                                    "close"] == 6.0
    assert (moved, dropped) == (2, 1)
    assert (out.index + H4 >= frame.index[[0, 1, 2, 3, 5]] + H4).all()  # never earlier
    assert frame.index[2].hour == 5  # the input is not modified


def test_calendar_split_gives_every_market_the_same_dates(two_markets, tiny_cfg):
    plan = plan_panel(two_markets, tiny_cfg)
    split = plan.split
    for sym, frame in plan.panel.frames.items():
        b = plan.bounds[sym]
        assert frame.index[b.train[1] - 1] < split.train_end
        assert frame.index[b.val[0]] >= split.val_start
        assert frame.index[b.test[0]] >= split.test_start
        assert frame.index[b.test[0] - 1] < split.test_start
        # a training target (close t+h) never reaches the validation part
        assert frame.index[b.train[1] - 1 + tiny_cfg.windows.horizon] < split.val_start
    # one market without gaps: the calendar split is today's split by bars
    a = two_markets["AAA"]
    one = calendar_split(a.index, tiny_cfg.windows)
    assert market_bounds(a.index, one, tiny_cfg.windows.horizon) == split_bounds(
        len(a), tiny_cfg.windows)


def test_a_gap_inside_the_purge_gap_shortens_the_training_part():
    idx = pd.date_range("2021-01-01", periods=100, freq="4h")
    cut = calendar_split(idx, WindowConfig(lookback=4, gap_bars=2))
    holey = idx.drop(idx[(idx >= cut.train_end - 2 * H4) & (idx < cut.val_start)])
    b = market_bounds(holey, cut, horizon=3)
    assert holey[b.train[1] - 1 + 3] < cut.val_start


@pytest.fixture(scope="module")
def pred_noise():
    cfg = PipelineConfig(windows=WindowConfig(lookback=8), model=ModelConfig(hidden_size=8),
                         train=TrainConfig(epochs=8, patience=2, batch_size=128, seed=7,
                                           min_regime_windows=20, min_val_windows=5,
                                           device="cpu"))
    frames = {"PRED": ar_market(1500, 0.5, 1), "NOISE": ar_market(1500, 0.0, 5)}
    plan = plan_panel(frames, cfg)
    return plan, fit_panel(plan.panel.frames, cfg, plan.split, "pooled"), cfg


def test_a_pooled_network_trades_the_predictable_market_and_stays_flat_on_noise(pred_noise):
    plan, fit, _ = pred_noise
    pred, noise = fit.forecasters["PRED"], fit.forecasters["NOISE"]
    assert pred.models.keys() == noise.models.keys()  # one set of networks for both
    assert any(r != "flat:no_skill" for r in pred.routes().values())
    assert all(r == "flat:no_skill" for r in noise.routes().values())
    # the same network, judged on each market's own validation windows
    name = next(r for r in pred.routes().values() if r != "flat:no_skill")
    assert pred.skill[name]["verdict"] == "skill" and noise.skill[name]["verdict"] == "no_skill"
    assert pred.skill[name]["n_val"] != fit.metas["PRED"][name]["n_train_pooled"]
    candles, signals = forecast_test_span(plan, fit.forecasters)
    assert (signals["NOISE"]["forecast"].dropna() == 0).all()
    assert (signals["PRED"]["forecast"].dropna() != 0).any()
    assert set(signals["PRED"]["model"]) >= {name}
    for sym in candles:  # no market's test bar before the common test start
        assert candles[sym].index[0] >= plan.split.test_start
        assert signals[sym].index.equals(candles[sym].index)


def test_per_market_trains_one_bundle_per_market(two_markets, tiny_cfg):
    plan = plan_panel(two_markets, tiny_cfg)
    fit = fit_panel(plan.panel.frames, tiny_cfg, plan.split, "per-market")
    a, b = fit.forecasters["AAA"], fit.forecasters["BBB"]
    shared = set(a.models) & set(b.models)
    assert shared and all(a.models[n] is not b.models[n] for n in shared)
    assert {m["panel"]["markets"][0] for m in fit.metas["BBB"].values()} == {"BBB"}


def test_panel_fit_and_forecasts_are_causal(two_markets, tiny_cfg):
    """Bars after the training end changed: scalers, regimes and networks unchanged; a forecast
    at t unchanged when the bars after t are cut."""
    plan = plan_panel(two_markets, tiny_cfg)
    fit = fit_panel(plan.panel.frames, tiny_cfg, plan.split, "pooled")
    changed = {m: f.copy() for m, f in plan.panel.frames.items()}
    later = changed["BBB"].index >= plan.split.val_start
    changed["BBB"].loc[later, ["open", "high", "low", "close"]] *= 1.5
    refit = fit_panel(changed, tiny_cfg, plan.split, "pooled")
    for sym in ("AAA", "BBB"):
        f0, f1 = fit.forecasters[sym], refit.forecasters[sym]
        assert f0.scaler == f1.scaler and f0.regime_params == f1.regime_params
        for name in f0.models:
            for p0, p1 in zip(f0.models[name].parameters(), f1.models[name].parameters()):
                assert np.array_equal(p0.detach().numpy(), p1.detach().numpy())
    fc, frame = fit.forecasters["BBB"], plan.panel.frames["BBB"]
    full = fc.with_policy("trade", fc.skill_p).forecast_frame(frame)
    for t in (plan.bounds["BBB"].test[0], plan.bounds["BBB"].test[0] + 37, len(frame) - 5):
        cut = fc.with_policy("trade", fc.skill_p).forecast_frame(frame.iloc[:t + 1])
        assert cut["forecast"].iloc[-1] == pytest.approx(full["forecast"].iloc[t], abs=1e-12)
        assert cut["regime"].iloc[-1] == full["regime"].iloc[t]


@pytest.mark.parametrize("case", ["twice", "timeframes", "too_few", "symbols_and_symbol"])
def test_bad_markets_get_one_line_and_exit_2(case, tmp_path, capsys):
    from bt_lstm.cli.backtest import main

    a = _write(make_market(n_bars=1200, seed=3).frame, tmp_path / "AAA_4h.csv")
    argv = {"twice": ["--csv", a, "--csv", a],
            "timeframes": ["--csv", a, "--csv", _write(
                make_market(n_bars=1200, seed=4, freq="1h").frame, tmp_path / "BBB_1h.csv")],
            "too_few": ["--csv", a, "--csv", _write(
                make_market(n_bars=300, seed=4, start="2021-05-20").frame,
                tmp_path / "CCC_4h.csv")],
            "symbols_and_symbol": ["--symbols", "AAA,BBB", "--symbol", "AAA"]}[case]
    code = main([*argv, *TINY_FLAGS, "--models-dir", str(tmp_path / "m"), "--reports-dir",
                 str(tmp_path / "r")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(err) == 1
    assert {"twice": "given twice", "timeframes": "different timeframes",
            "too_few": "CCC: too few bars for the common split",
            "symbols_and_symbol": "not together"}[case] in err[0]
    assert "Traceback" not in capsys.readouterr().err


def test_one_market_is_todays_run_byte_for_byte(tmp_path):
    """--symbols of one market (and --csv once) go through the main job unchanged."""
    from bt_lstm.cli.args import build_config
    from bt_lstm.cli.backtest import build_parser, main
    from bt_lstm.jobs.backtest import run_main_job
    from strategies.lstm_strategy import RegimeLSTMStrategy

    frame = make_market(n_bars=1200, seed=3).frame
    _write(frame, tmp_path / "ONE_4h.csv")
    flags = [*TINY_FLAGS, "--no-tearsheet", "--retrain", "--models-dir", str(tmp_path / "m")]
    assert main(["--symbols", "ONE", "--data-dir", str(tmp_path), *flags,
                 "--reports-dir", str(tmp_path / "r1")]) == 0
    cfg = build_config(build_parser().parse_args(flags))
    direct = run_main_job(load_ohlcv(tmp_path / "ONE_4h.csv"), "ONE", cfg, RegimeLSTMStrategy,
                          model_dir=tmp_path / "m" / "ONE_4h",
                          report_dir=tmp_path / "r2" / "backtest_ONE_4h", retrain=True,
                          timeframe="4h", tearsheet=False)
    via_cli = tmp_path / "r1" / "backtest_ONE_4h" / "latest" / "metrics.json"
    assert via_cli.read_bytes() == (direct.report_dir / "metrics.json").read_bytes()


def test_real_btc_and_gold_align_without_filling_closed_hours():
    data = real_data_dir()
    if data is None:
        pytest.skip("no ../shared/data (set BT_LSTM_REAL_DATA)")
    frames = {s: load_ohlcv(data / f"{s}_4h.csv") for s in ("BTCUSDT", "XAUUSD")}
    panel = align_markets(frames)
    gold = panel.frames["XAUUSD"]
    assert ((gold.index - pd.Timestamp(0)) % H4 == pd.Timedelta(0)).all()  # all on the grid
    rep = panel.reports["XAUUSD"]
    assert rep.off_grid_moved + rep.off_grid_dropped == int(
        ((frames["XAUUSD"].index - pd.Timestamp(0)) % H4 != pd.Timedelta(0)).sum()) > 0
    assert len(gold) == len(frames["XAUUSD"]) - rep.off_grid_dropped
    # gold's moved candles keep their own values, on the slot after their open
    src = frames["XAUUSD"].loc["2025-02-20 05:00"]
    assert gold.loc["2025-02-20 08:00"].equals(src)
    # weekends: BTC trades, gold has no row (nothing forward-filled; only a Friday 21:00
    # candle, moved to Saturday 00:00, is gold's on a Saturday)
    btc = panel.frames["BTCUSDT"].index
    saturday = btc[(btc.day_of_week == 5) & (btc.hour > 0)]
    assert len(saturday) > 1000 and not saturday.isin(gold.index).any()


def test_a_market_starting_after_the_training_span_is_refused(tiny_cfg):
    a = make_market(n_bars=1200, seed=3).frame
    late = make_market(n_bars=200, seed=4, start="2021-06-15").frame
    with pytest.raises(ValueError, match="LATE: too few bars"):
        plan_panel({"AAA": a, "LATE": late}, replace(tiny_cfg))


def test_panel_bundles_are_reused(two_markets, tiny_cfg, tmp_path):
    from bt_lstm.jobs.panel_models import obtain_panel

    plan = plan_panel(two_markets, tiny_cfg)
    first, reused = obtain_panel(plan.panel.frames, tiny_cfg, plan.split, "pooled", tmp_path)
    again, reused2 = obtain_panel(plan.panel.frames, tiny_cfg, plan.split, "pooled", tmp_path)
    assert (reused, reused2) == (False, True)
    for sym in first:
        f0 = first[sym].forecast_frame(plan.panel.frames[sym])
        f1 = again[sym].forecast_frame(plan.panel.frames[sym])
        pd.testing.assert_frame_equal(f0, f1)
        manifest = json.loads((tmp_path / sym / "manifest.json").read_text())
        assert manifest["panel"] == "pooled" and manifest["markets"] == ["AAA", "BBB"]


def test_the_portfolio_job_writes_both_sides_and_pnl_adds_up(two_markets, tiny_cfg, tmp_path):
    from bt_lstm.config import StrategyConfig
    from bt_lstm.jobs.portfolio import run_portfolio_job
    from strategies.portfolio import PortfolioStrategy

    cfg = replace(tiny_cfg, strategy=StrategyConfig(no_skill="trade", threshold=0.0))
    job = run_portfolio_job(two_markets, cfg, PortfolioStrategy, tmp_path / "m",
                            tmp_path / "r" / "portfolio_AAA+BBB_4h", timeframe="4h")
    metrics = json.loads((job.report_dir / "metrics.json").read_text())
    assert set(metrics["markets"]) == {"AAA", "BBB"}
    assert metrics["portfolio"]["benchmark"] == "equal-weight buy-and-hold basket"
    assert "statistics" in metrics["portfolio"] and metrics["portfolio"]["skill"]["AAA"]
    assert metrics["markets"]["BBB"]["data"]["n_missing"] == 10
    assert metrics["markets"]["AAA"]["models_traded"]  # --no-skill trade: every network
    res = job.backtest
    assert res.fills["symbol"].nunique() == 2
    # the book's value is the cash plus the markets' P&L from their fills
    assert res.equity.iloc[-1] == pytest.approx(res.start_cash + res.pnl.iloc[-1].sum())
    bars = pd.read_csv(job.report_dir / "bars.csv")
    assert set(bars["symbol"]) == {"AAA", "BBB"}
    assert pd.Timestamp(bars.iloc[:, 0].min()) >= pd.Timestamp(metrics["split"]["test_start"])


def test_real_gold_never_trades_where_it_is_closed():
    """BTCUSDT + XAUUSD 4h: gold's orders fill only at gold's own candles (never at a weekend
    bar of BTC's clock, never at a forward-filled price) and its position changes only there."""
    from bt_lstm.backtest.portfolio import run_portfolio_backtest
    from bt_lstm.config import StrategyConfig
    from strategies.portfolio import PortfolioStrategy

    data = real_data_dir()
    if data is None:
        pytest.skip("no ../shared/data (set BT_LSTM_REAL_DATA)")
    panel = align_markets({s: load_ohlcv(data / f"{s}_4h.csv") for s in ("BTCUSDT", "XAUUSD")})
    start, end = pd.Timestamp("2025-01-06"), pd.Timestamp("2025-04-01")  # moved candles inside
    candles = {s: f.loc[start:end] for s, f in panel.frames.items()}
    signals = {s: pd.DataFrame({"forecast": 0.003 * np.sin(np.arange(len(f)) / 3.0),
                                "regime": 1.0}, index=f.index) for s, f in candles.items()}
    res = run_portfolio_backtest(candles, signals, PortfolioStrategy, StrategyConfig(),
                                 bar=panel.bar)
    gold = res.fills[res.fills["symbol"] == "XAUUSD"]
    assert len(gold) > 10
    times = pd.DatetimeIndex(gold["datetime"])
    assert times.isin(candles["XAUUSD"].index).all()
    assert (gold["price"].to_numpy() == pytest.approx(
        candles["XAUUSD"].loc[times, "open"].to_numpy(), rel=1e-3))  # its own open, slipped
    rows = res.bars[res.bars["symbol"] == "XAUUSD"]
    assert rows.index.isin(candles["XAUUSD"].index).all()  # no gold row on a closed bar
    btc_only = candles["BTCUSDT"].index.difference(candles["XAUUSD"].index)
    assert len(btc_only) > 100 and not times.isin(btc_only).any()


def test_walk_forward_folds_are_calendar_folds_for_every_market(two_markets, tiny_cfg,
                                                               tmp_path):
    from bt_lstm.config import StrategyConfig
    from bt_lstm.jobs.portfolio_wf import run_portfolio_walk_forward
    from bt_lstm.research.walkforward import WalkForwardSpec
    from strategies.portfolio import PortfolioStrategy

    cfg = replace(tiny_cfg, strategy=StrategyConfig(no_skill="trade", threshold=0.0))
    spec = WalkForwardSpec(train_bars=500, test_bars=150)
    run = run_portfolio_walk_forward(two_markets, cfg, spec, PortfolioStrategy,
                                     tmp_path / "wf" / "run1", tmp_path)
    table = run.folds
    # one test start per fold, whatever the market; BBB (starts 60 days later) joins later
    assert (table.groupby("fold")["test_start"].nunique() == 1).all()
    joined = run.metrics["markets"]
    assert joined["BBB"]["joined_fold"] > joined["AAA"]["joined_fold"] == 0
    bars = run.backtest.bars
    for fold, row in table.drop_duplicates("fold").set_index("fold").iterrows():
        assert not ((bars.index < pd.Timestamp(row["test_start"]))
                    & (bars["symbol"] == "BBB")).any() or fold >= joined["BBB"]["joined_fold"]
    first_bbb = bars[bars["symbol"] == "BBB"].index.min()
    assert first_bbb == pd.Timestamp(table[table.symbol == "BBB"]["test_start"].min())
    assert (tmp_path / "wf" / "run1" / "stitched" / "metrics.json").is_file()
    fold0 = tmp_path / "wf" / "run1" / "folds" / "fold_000"
    assert (fold0 / "AAA" / "manifest.json").is_file() and not (fold0 / "BBB").exists()
