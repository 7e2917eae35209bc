"""The portfolio backtest: one Backtrader run, a feed per market, one broker (issue 25)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bt_lstm.backtest.allocation import allocation_weights, trailing_volatility
from bt_lstm.backtest.engine import run_backtest
from bt_lstm.backtest.portfolio import run_portfolio_backtest
from bt_lstm.config import StrategyConfig
from strategies.lstm_strategy import RegimeLSTMStrategy
from strategies.portfolio import PortfolioStrategy

CFG = StrategyConfig(slippage=0.0, commission=0.001, threshold=0.001)


def walk(n: int, seed: int, start: str = "2022-01-03", vol: float = 0.01) -> pd.DataFrame:
    """4h candles whose open is NOT the previous close (a fill at a stale bar would show)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n, freq="4h")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = close * np.exp(rng.normal(0, vol / 2, n))
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.002,
                         "low": np.minimum(open_, close) * 0.998, "close": close,
                         "volume": 10.0}, index=index)


def flips(frame: pd.DataFrame, seed: int, every: int = 3) -> pd.DataFrame:
    """Hand-made signals: a side held ``every`` bars, then a random new one."""
    rng = np.random.default_rng(seed)
    sides = np.repeat(rng.choice([-1.0, 0.0, 1.0], len(frame) // every + 1), every)
    return pd.DataFrame({"forecast": 0.01 * sides[:len(frame)], "regime": 1,
                         "model": "m"}, index=frame.index)


@pytest.fixture(scope="module")
def universe() -> dict[str, pd.DataFrame]:
    """A: every bar; LATE: starts 60 bars later; GAP: 12 bars missing; WKND: closed on
    Saturdays and Sundays (as gold)."""
    a = walk(300, 1)
    late = walk(240, 2, start=str(a.index[60]))
    gap = walk(300, 3, vol=0.02)
    gap = gap.drop(gap.index[100:112])
    wknd = walk(300, 4, vol=0.005)
    wknd = wknd[wknd.index.day_of_week < 5]
    return {"A": a, "LATE": late, "GAP": gap, "WKND": wknd}


@pytest.fixture(scope="module")
def signals(universe):
    return {s: flips(f, k) for k, (s, f) in enumerate(universe.items())}


@pytest.fixture(scope="module", params=["equal", "inverse-vol"])
def run(request, universe, signals):
    return run_portfolio_backtest(universe, signals, PortfolioStrategy, CFG,
                                  allocation=request.param, vol_bars=20)


def test_each_fill_is_at_the_next_open_of_its_own_market(run, universe):
    assert set(run.fills["symbol"]) == set(universe)
    for row in run.fills.itertuples():
        frame = universe[row.symbol]
        i = frame.index.get_loc(row.datetime)  # a bar this market had
        assert row.bar == i and row.price == pytest.approx(frame["open"].iloc[i], rel=1e-14)
        bars = run.bars[run.bars["symbol"] == row.symbol]
        decision = bars.iloc[i - 1]  # the market's previous bar decided it
        assert bars.index[i - 1] == frame.index[i - 1]
        assert np.sign(row.size) == np.sign(decision["signal"] - np.sign(decision["position"]))


def test_no_row_and_no_fill_where_a_market_has_no_bar(run, universe):
    for symbol, frame in universe.items():
        own = run.bars[run.bars["symbol"] == symbol]
        assert own.index.equals(frame.index)
        assert own["bar"].tolist() == list(range(len(frame)))
    weekend = run.fills[run.fills["symbol"] == "WKND"]["datetime"].dt.day_of_week
    assert (weekend < 5).all()
    late = run.fills[run.fills["symbol"] == "LATE"]["datetime"]
    assert late.min() > universe["LATE"].index[0]


def test_a_friday_decision_fills_at_monday_open():
    a = walk(60, 5)
    wknd = a[a.index.day_of_week < 5]
    friday = wknd.index[wknd.index.day_of_week == 4][-1]
    forecasts = pd.Series(0.0, index=wknd.index)
    forecasts[friday:] = 0.01
    sig = pd.DataFrame({"forecast": forecasts, "regime": 1})
    res = run_portfolio_backtest({"A": a, "W": wknd}, {"W": sig}, PortfolioStrategy, CFG)
    fill = res.fills.iloc[0]
    monday = wknd.index[wknd.index > friday][0]
    assert fill["symbol"] == "W" and fill["datetime"] == monday
    assert monday.day_of_week == 0
    assert fill["price"] == pytest.approx(wknd.loc[monday, "open"], rel=1e-14)


def test_portfolio_pnl_is_the_sum_of_the_markets_pnl_from_fills(run):
    assert run.fills["commission"].sum() > 0
    total = run.pnl.sum(axis=1) + run.start_cash
    np.testing.assert_allclose(total.to_numpy(), run.equity.to_numpy(), rtol=1e-12)
    assert run.equity.iloc[-1] == pytest.approx(run.final_value, rel=1e-12)
    late_start = run.bars.index[run.bars["symbol"] == "LATE"][0]
    assert (run.pnl["LATE"][run.pnl.index < late_start] == 0).all()


def _book_at(run, universe, when):
    """Positions and last closes of every market as of the close ``when``."""
    upto = run.fills[run.fills["datetime"] <= when]
    pos = upto.groupby("symbol")["size"].sum()
    closes = {s: f["close"][f.index <= when] for s, f in universe.items()}
    return ({s: float(pos.get(s, 0.0)) for s in universe},
            {s: float(c.iloc[-1]) if len(c) else np.nan for s, c in closes.items()})


def test_an_entry_never_takes_the_book_over_the_fraction(run, universe):
    entries = 0
    for row in run.fills.itertuples():
        frame = universe[row.symbol]
        decided = frame.index[frame.index.get_loc(row.datetime) - 1]
        pos, closes = _book_at(run, universe, decided)
        after = pos[row.symbol] + row.size
        if abs(after) <= abs(pos[row.symbol]) or after == 0:
            continue  # a closing fill
        entries += 1
        others = sum(abs(p * closes[s]) for s, p in pos.items() if s != row.symbol and p)
        value = run.equity[decided]
        assert others + abs(after) * closes[row.symbol] <= \
            CFG.position_fraction * value * (1 + 1e-9)
    assert entries > 20


def test_equal_weights_count_every_market_of_the_run(run):
    if (run.bars["weight"] == run.bars["weight"].iloc[0]).all():
        assert run.bars["weight"].iloc[0] == pytest.approx(CFG.position_fraction / 4)
    else:  # inverse-vol: at each close the weights sum to at most the fraction
        per_step = run.bars.groupby(level=0)["weight"].sum()
        assert (per_step <= CFG.position_fraction + 1e-12).all()


def test_inverse_vol_weights_are_causal(universe, signals):
    cut = universe["A"].index[150]
    changed = {s: f.copy() for s, f in universe.items()}
    for f in changed.values():
        after = f.index > cut
        scale = np.linspace(0.5, 3.0, after.sum())[:, None]
        f.loc[after, ["open", "high", "low", "close"]] *= scale
    base = run_portfolio_backtest(universe, signals, PortfolioStrategy, CFG,
                                  allocation="inverse-vol", vol_bars=20)
    moved = run_portfolio_backtest(changed, signals, PortfolioStrategy, CFG,
                                   allocation="inverse-vol", vol_bars=20)
    before = base.bars.index <= cut
    pd.testing.assert_frame_equal(base.bars[before], moved.bars[before])
    assert not base.bars["weight"][~before].equals(moved.bars["weight"][~before])


def test_allocation_weights():
    np.testing.assert_allclose(allocation_weights("equal", 0.9, np.array([1.0, np.nan, 2.0])),
                               [0.3, 0.3, 0.3])
    w = allocation_weights("inverse-vol", 0.9, np.array([0.01, 0.02, np.nan]))
    np.testing.assert_allclose(w, [0.4, 0.2, 0.0])
    np.testing.assert_allclose(allocation_weights("inverse-vol", 0.9, np.full(3, 0.01)),
                               [0.3, 0.3, 0.3])
    assert allocation_weights("inverse-vol", 0.9, np.full(2, np.nan)).sum() == 0
    close = walk(50, 9)["close"]
    vol = trailing_volatility(close, 10)
    assert vol.iloc[:10].isna().all() and np.isfinite(vol.iloc[10:]).all()
    cut = trailing_volatility(close.iloc[:30], 10)
    pd.testing.assert_series_equal(vol.iloc[:30], cut)


def test_one_market_portfolio_is_the_regime_strategys_backtest():
    frame = walk(400, 11)
    sig = flips(frame, 12)
    cfg = StrategyConfig()  # default costs: commission and slippage
    single = run_backtest(frame, RegimeLSTMStrategy, cfg, signals=sig, forecaster=object())
    folio = run_portfolio_backtest({"X": frame}, {"X": sig}, PortfolioStrategy, cfg)
    pd.testing.assert_frame_equal(single.fills, folio.fills.drop(columns="symbol"))
    pd.testing.assert_frame_equal(single.trades, folio.trades.drop(columns="symbol"))
    cols = ["bar", "regime", "forecast", "signal", "position", "value", "model"]
    pd.testing.assert_frame_equal(single.bars[cols], folio.bars[cols], check_names=False)
    assert single.final_value == folio.final_value
    assert folio.equity.equals(single.bars["value"].rename("value").rename_axis("datetime"))


def test_runonce_and_preload_off_give_the_same_result(universe, signals):
    on = run_portfolio_backtest(universe, signals, PortfolioStrategy, CFG)
    off = run_portfolio_backtest(universe, signals, PortfolioStrategy, CFG, runonce=False,
                                 preload=False)
    pd.testing.assert_frame_equal(on.bars, off.bars)
    pd.testing.assert_frame_equal(on.fills, off.fills)
    assert on.final_value == off.final_value


class Momentum:
    """A stand-in forecaster: the last log return, from the candles it is given only."""

    def forecast_last(self, candles: pd.DataFrame) -> tuple[int, float]:
        close = candles["close"].to_numpy()
        return 1, float(np.log(close[-1] / close[-2])) if len(close) > 1 else float("nan")

    def forecast_frame(self, candles: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"forecast": np.log(candles["close"]).diff(), "regime": 1},
                            index=candles.index)


def test_per_bar_and_batch_agree(universe):
    history = {s: f.iloc[:20] for s, f in universe.items()}
    traded = {s: f.iloc[20:] for s, f in universe.items()}
    fc = {s: Momentum() for s in universe}
    batch_sig = {s: fc[s].forecast_frame(universe[s]).iloc[20:] for s in universe}
    batch = run_portfolio_backtest(traded, batch_sig, PortfolioStrategy, CFG)
    per_bar = run_portfolio_backtest(traded, {}, PortfolioStrategy, CFG, inference="per_bar",
                                     forecasters=fc, histories=history)
    cols = ["symbol", "bar", "regime", "forecast", "signal", "position", "value", "weight"]
    pd.testing.assert_frame_equal(batch.bars[cols], per_bar.bars[cols])
    pd.testing.assert_frame_equal(batch.fills, per_bar.fills)
    assert len(batch.fills) > 20


def test_deferred_placeholder_fills_and_refusals_are_counted_per_market():
    a, b = walk(40, 13), walk(40, 14)
    b.iloc[10, :4] = b["close"].iloc[9]  # an exchange placeholder candle
    b.iloc[10, 4] = 0.0
    b = b.drop(b.index[11:13])  # then closed for two of A's bars: the order waits, once counted
    f = pd.Series(0.0, index=b.index)
    f.iloc[9:] = 0.01  # decided at the close of 9, due at the placeholder's open
    res = run_portfolio_backtest({"A": a, "B": b},
                                 {"B": pd.DataFrame({"forecast": f, "regime": 1})},
                                 PortfolioStrategy, CFG)
    assert res.counts["B"]["deferred_fills"] == 1 and res.counts["A"]["deferred_fills"] == 0
    assert res.fills.iloc[0]["datetime"] == b.index[11] == a.index[13]


def test_bad_input_is_one_clear_error(universe, signals):
    with pytest.raises(ValueError, match="--allocation 'cap': use one of equal, inverse-vol"):
        run_portfolio_backtest(universe, signals, PortfolioStrategy, CFG, allocation="cap")
    with pytest.raises(ValueError, match="no candles"):
        run_portfolio_backtest({"A": universe["A"]}, {"B": signals["A"]}, PortfolioStrategy, CFG)
    with pytest.raises(ValueError, match="at least one market"):
        run_portfolio_backtest({}, {}, PortfolioStrategy, CFG)


def test_a_reversal_short_of_its_size_by_a_float_hair_is_recorded_once():
    # Seed 4 at fraction 0.3: a reversal's closing and opening parts sum a float hair short of
    # the order's size; the broker fills the hair at the next bar (Partial, then Completed).
    frame = walk(200, 4)
    cfg = StrategyConfig(position_fraction=0.3)
    res = run_backtest(frame, RegimeLSTMStrategy, cfg, signals=flips(frame, 104),
                       forecaster=object())
    assert (res.fills["size"].abs() < 1e-9).sum() == 1  # the hair: a row of its own
    flows = (res.fills["size"] * res.fills["price"] + res.fills["commission"]).sum()
    value = cfg.cash - flows + res.fills["size"].sum() * frame["close"].iloc[-1]
    assert value == pytest.approx(res.final_value, rel=1e-12)


def test_per_bar_and_batch_agree_with_the_fitted_networks(market, fitted):
    from bt_lstm.data.synthetic import make_market

    result, bounds = fitted
    fc = result.forecaster.with_policy("trade", result.forecaster.skill_p)
    start = bounds.test[0]
    frames = {"M": market.frame, "LATER": make_market(n_bars=1100, seed=8,
                                                      start="2021-01-17").frame}
    traded = {s: f.iloc[start - (len(market.frame) - len(f)):] for s, f in frames.items()}
    history = {s: frames[s].loc[:traded[s].index[0]].iloc[:-1] for s in frames}
    signals = {s: fc.forecast_frame(frames[s]).loc[traded[s].index] for s in frames}
    cfg = StrategyConfig(threshold=0.0005)
    batch = run_portfolio_backtest(traded, signals, PortfolioStrategy, cfg)
    per_bar = run_portfolio_backtest(traded, {}, PortfolioStrategy, cfg, inference="per_bar",
                                     forecasters={s: fc for s in frames}, histories=history)
    np.testing.assert_array_equal(batch.bars["regime"], per_bar.bars["regime"])
    # batched matrix products may round the last float32 bit differently (test_strategy.py)
    np.testing.assert_allclose(per_bar.bars["forecast"], batch.bars["forecast"], rtol=1e-5,
                               atol=1e-9)
    np.testing.assert_array_equal(batch.bars["signal"], per_bar.bars["signal"])
    pd.testing.assert_frame_equal(batch.fills, per_bar.fills)
    assert set(batch.fills["symbol"]) == {"M", "LATER"}


@pytest.mark.realdata
def test_real_btc_and_gold_gold_trades_only_at_its_own_candles():
    from bt_lstm.data.candles import load_ohlcv
    from tests.conftest import real_data_dir

    base = real_data_dir()
    if base is None or not (base / "XAUUSD_4h.csv").is_file():
        pytest.skip("../shared/data/XAUUSD_4h.csv not present")
    start, end = "2024-06-01", "2025-06-30"
    frames = {s: load_ohlcv(base / f"{s}_4h.csv").loc[start:end] for s in ("BTCUSDT", "XAUUSD")}
    signals = {s: flips(f, k, every=5) for k, (s, f) in enumerate(frames.items())}
    res = run_portfolio_backtest(frames, signals, PortfolioStrategy, CFG)
    gold = frames["XAUUSD"]
    assert (gold.index.day_of_week == 5).sum() == 0 and (gold.index.hour % 4 != 0).any()
    fills = res.fills[res.fills["symbol"] == "XAUUSD"]
    assert len(fills) > 50 and fills["datetime"].isin(gold.index).all()
    np.testing.assert_allclose(fills["price"], gold.loc[fills["datetime"], "open"], rtol=1e-12)
    rows = res.bars[res.bars["symbol"] == "XAUUSD"]
    assert rows.index.equals(gold.index)  # no row, no decision where gold is closed
    total = res.pnl.sum(axis=1) + res.start_cash
    np.testing.assert_allclose(total.to_numpy(), res.equity.to_numpy(), rtol=1e-12)
