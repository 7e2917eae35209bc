"""Strategy execution: fill timing, costs, sizing problems, batch vs per-bar inference."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bt_lstm.backtest.engine import run_backtest
from bt_lstm.config import StrategyConfig
from strategies.lstm_strategy import RegimeLSTMStrategy


def candles(n=12, gap_at=None):
    idx = pd.date_range("2022-01-01", periods=n, freq="4h")
    close = 100.0 + np.arange(n, dtype=float)
    open_ = close - 0.5
    if gap_at is not None:
        open_[gap_at:] += 50.0
        close[gap_at:] += 50.0
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) + 1,
                         "low": np.minimum(open_, close) - 1, "close": close,
                         "volume": 10.0}, index=idx)


def scripted(frame, forecasts):
    return pd.DataFrame({"forecast": forecasts, "regime": 1}, index=frame.index)


def run(frame, forecasts, **cfg):
    return run_backtest(frame, RegimeLSTMStrategy, StrategyConfig(**cfg),
                        signals=scripted(frame, forecasts), forecaster=object())


def test_signal_at_close_of_t_fills_at_open_of_t_plus_1_with_commission():
    frame = candles()
    f = np.zeros(len(frame))
    f[3] = 0.01  # long from the close of bar 3
    f[4:] = 0.01
    res = run(frame, f, slippage=0.0, commission=0.001, position_fraction=0.5, cash=10_000)
    fill = res.fills.iloc[0]
    assert fill["datetime"] == frame.index[4] and fill["bar"] == 4
    assert fill["price"] == frame["open"].iloc[4]
    expected_size = np.floor(0.5 * 10_000 / frame["close"].iloc[3] / 1e-6) * 1e-6
    assert fill["size"] == pytest.approx(expected_size)
    assert fill["commission"] == pytest.approx(expected_size * frame["open"].iloc[4] * 0.001)
    # bars before the fill hold nothing; the fill bar's close holds the position
    assert (res.bars["position"].iloc[:4] == 0).all()
    assert res.bars["position"].iloc[4] == pytest.approx(expected_size)


def test_slippage_moves_the_fill_against_the_trader():
    frame = candles()
    f = np.full(len(frame), -0.01)
    res = run(frame, f, slippage=0.001, commission=0.0)
    assert res.fills.iloc[0]["size"] < 0
    assert res.fills.iloc[0]["price"] == pytest.approx(frame["open"].iloc[1] * 0.999)


def test_warmup_bars_trade_nothing_and_long_only_never_shorts():
    frame = candles()
    f = np.full(len(frame), -0.01)
    f[:4] = np.nan
    res = run(frame, f, long_only=True)
    assert len(res.fills) == 0 and (res.bars["position"] == 0).all()
    res = run(frame, f)
    assert res.fills.iloc[0]["bar"] == 5  # first forecast at bar 4 -> fill at bar 5


def test_rejected_orders_are_counted_not_silent():
    frame = candles(gap_at=4)
    f = np.zeros(len(frame))
    f[3] = 0.01  # buy with all equity at close 3; the open of bar 4 gaps up 50 %
    res = run(frame, f, position_fraction=1.0, slippage=0.0, commission=0.0)
    assert len(res.rejected) == 1 and res.rejected.iloc[0]["status"] == "Margin"
    assert len(res.fills) == 0


def test_sizes_rounding_to_zero_are_counted():
    frame = candles()
    res = run(frame, np.full(len(frame), 0.01), size_step=1000.0)
    assert res.rounded_to_zero == len(frame) and len(res.fills) == 0


def test_reversal_is_one_order_and_closes_the_trade():
    frame = candles()
    f = np.full(len(frame), 0.01)
    f[6:] = -0.01
    res = run(frame, f, slippage=0.0, commission=0.0)
    assert len(res.fills) == 2 and res.fills.iloc[1]["bar"] == 7
    assert res.bars["position"].iloc[-1] < 0
    assert len(res.trades) == 1


@pytest.fixture(scope="module")
def both_paths(market, fitted):
    result, bounds = fitted
    # no_skill="trade": the tiny models show no skill, and both paths must run the networks
    fc = result.forecaster.with_policy("trade", result.forecaster.skill_p)
    test = market.frame.iloc[bounds.test[0]:]
    signals = fc.forecast_frame(market.frame).iloc[bounds.test[0]:]
    cfg = StrategyConfig(threshold=0.0005)
    batch = run_backtest(test, RegimeLSTMStrategy, cfg, signals=signals, forecaster=fc)
    per_bar = run_backtest(test, RegimeLSTMStrategy, cfg, forecaster=fc, inference="per_bar",
                           history=market.frame.iloc[:bounds.test[0]])
    return batch, per_bar, signals


def test_batch_and_per_bar_inference_agree(both_paths):
    batch, per_bar, signals = both_paths
    np.testing.assert_array_equal(batch.bars["regime"], per_bar.bars["regime"])
    # Same model, same windows; batched matrix products may round the last float32 bit
    # differently, so forecasts agree to float32 precision and every decision is identical.
    np.testing.assert_allclose(per_bar.bars["forecast"], batch.bars["forecast"], rtol=1e-5,
                               atol=1e-9)
    np.testing.assert_array_equal(batch.bars["signal"], per_bar.bars["signal"])
    pd.testing.assert_frame_equal(batch.fills, per_bar.fills)
    assert batch.final_value == per_bar.final_value
    assert len(batch.fills) > 0


def test_recorded_equity_and_dates_match_the_broker(both_paths, market, fitted):
    batch, _, _ = both_paths
    _, bounds = fitted
    assert batch.bars["value"].iloc[-1] == pytest.approx(batch.final_value, rel=1e-12)
    expected = market.frame.index[bounds.test[0]:]
    assert len(batch.bars) == len(expected) and (batch.bars.index == expected).all()


def test_strategy_acts_on_the_batch_forecasts(both_paths):
    batch, _, signals = both_paths
    np.testing.assert_array_equal(batch.bars["forecast"].to_numpy(),
                                  signals["forecast"].to_numpy())
    expected = np.where(signals["forecast"] > 0.0005, 1,
                        np.where(signals["forecast"] < -0.0005, -1, 0))
    np.testing.assert_array_equal(batch.bars["signal"].to_numpy(), expected)


def test_strategy_loads_models_from_a_bundle_folder(fitted, market, tmp_path):
    result, bounds = fitted
    result.forecaster.save(tmp_path / "b", result.model_meta)
    test = market.frame.iloc[bounds.test[0]:]
    signals = result.forecaster.forecast_frame(market.frame).iloc[bounds.test[0]:]
    res = run_backtest(test, RegimeLSTMStrategy, StrategyConfig(), signals=signals,
                       model_dir=str(tmp_path / "b"))
    assert len(res.bars) == len(test)


def test_runonce_and_preload_off_give_the_same_result(both_paths, market, fitted):
    batch, _, signals = both_paths
    result, bounds = fitted
    test = market.frame.iloc[bounds.test[0]:]
    slow = run_backtest(test, RegimeLSTMStrategy, StrategyConfig(threshold=0.0005),
                        signals=signals, forecaster=result.forecaster.with_policy(
                            "trade", result.forecaster.skill_p), runonce=False,
                        preload=False)
    pd.testing.assert_frame_equal(slow.fills, batch.fills)
    assert slow.final_value == batch.final_value


@pytest.mark.realdata
def test_batch_and_per_bar_agree_on_real_btcusdt(tiny_cfg):
    from conftest import real_data_dir

    from bt_lstm.data.candles import load_ohlcv
    from bt_lstm.research.pipeline import fit_pipeline

    data = real_data_dir()
    if data is None:
        pytest.skip("../shared/data/BTCUSDT_4h.csv not present")
    frame = load_ohlcv(data / "BTCUSDT_4h.csv")
    result, bounds = fit_pipeline(frame, tiny_cfg)
    fc = result.forecaster.with_policy("trade", result.forecaster.skill_p)  # as both_paths
    start = len(frame) - 300  # per-bar inference costs O(history) a bar: the last 300 bars
    test = frame.iloc[start:]
    cfg = StrategyConfig(threshold=0.0002)
    signals = fc.forecast_frame(frame).iloc[start:]
    batch = run_backtest(test, RegimeLSTMStrategy, cfg, signals=signals, forecaster=fc)
    per_bar = run_backtest(test, RegimeLSTMStrategy, cfg, forecaster=fc, inference="per_bar",
                           history=frame.iloc[:start])
    np.testing.assert_allclose(per_bar.bars["forecast"], batch.bars["forecast"], rtol=1e-5,
                               atol=1e-9)
    np.testing.assert_array_equal(batch.bars["signal"], per_bar.bars["signal"])
    pd.testing.assert_frame_equal(batch.fills, per_bar.fills)
    assert len(batch.fills) > 0
