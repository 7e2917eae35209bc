from __future__ import annotations

import gc

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from bt_lstm.backtest.engine import (
    SignalData,
    gc_frozen,
    make_cerebro,
    make_feed,
    nums_to_index,
    run_backtest,
)
from bt_lstm.config import StrategyConfig
from strategies.lstm_strategy import RegimeLSTMStrategy


class Recorder(bt.Strategy):
    def __init__(self):
        self.seen = []

    def next(self):
        d = self.data
        self.seen.append((d.datetime.datetime(0), d.open[0], d.high[0], d.low[0], d.close[0],
                          d.volume[0], d.forecast[0], d.regime[0]))
        if len(self) % 7 == 0:
            self.buy(size=0.37) if len(self) % 14 else self.sell(size=0.37)


class PandasSignalData(bt.feeds.PandasData):
    lines = ("forecast", "regime")
    params = (("forecast", -1), ("regime", -1), ("openinterest", None))


def run(feed):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed)
    cerebro.addstrategy(Recorder)
    strat = cerebro.run()[0]
    return strat.seen, cerebro.broker.getvalue()


def test_list_feed_equals_pandas_feed(market):
    frame = market.frame.iloc[:300].copy()
    frame["forecast"] = np.sin(np.arange(300))
    frame["regime"] = np.arange(300) % 3
    fast_rows, fast_value = run(make_feed(frame))
    slow_rows, slow_value = run(make_feed(frame, feed_cls=PandasSignalData))
    assert fast_rows == slow_rows and len(fast_rows) == 300
    assert fast_value == slow_value
    assert fast_rows[0][0] == frame.index[0].to_pydatetime()
    assert isinstance(make_feed(frame), SignalData)


def test_nums_to_index_equals_num2date():
    stamps = pd.date_range("2017-08-17 04:00", periods=500, freq="37min")
    nums = np.array([bt.date2num(ts.to_pydatetime()) for ts in stamps])
    expected = pd.DatetimeIndex([bt.num2date(x) for x in nums]).round("s")
    assert (nums_to_index(nums) == expected).all()
    assert (nums_to_index(nums) == stamps).all()


def test_performance_equals_a_plain_numpy_reference():
    from bt_lstm.backtest.metrics import performance

    r = pd.Series([0.10, -0.10, 0.10], index=pd.date_range("2024-01-01", periods=3))
    m = performance(r)
    assert m["max_drawdown"] == pytest.approx(-0.10)  # 1.1 -> 0.99 is -10 % of the peak
    assert m["total_return"] == pytest.approx(1.1 * 0.9 * 1.1 - 1)
    x = r.to_numpy()
    assert m["sharpe"] == pytest.approx(x.mean() / x.std(ddof=1) * np.sqrt(365))
    assert m["sortino"] == pytest.approx(x.mean() / np.sqrt((0.1 ** 2) / 3) * np.sqrt(365))
    assert m["cagr"] == pytest.approx((1.089) ** (365 / 3) - 1)
    assert m["volatility"] == pytest.approx(x.std(ddof=1) * np.sqrt(365))


class _Cycle:
    def __init__(self):
        self.me = self


def test_gc_frozen_skips_old_objects_collects_new_ones_and_restores_the_collector():
    assert gc.get_freeze_count() == 0
    old = _Cycle()
    with gc_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0 and not any(o is old for o in gc.get_objects())
        with gc_frozen():  # nested: the inner exit must not unfreeze the outer block
            pass
        assert gc.get_freeze_count() == frozen
        new = _Cycle()
        ref = __import__("weakref").ref(new)
        del new
        gc.collect()
        assert ref() is None  # garbage made inside the block is still collected
    assert gc.get_freeze_count() == 0
    assert any(o is old for o in gc.get_objects())  # handed back to the collector

    gc.freeze()  # someone else's freeze: left exactly as it was
    try:
        before = gc.get_freeze_count()
        with gc_frozen():
            pass
        assert gc.get_freeze_count() == before
    finally:
        gc.unfreeze()


def test_frozen_collector_changes_no_result(market):
    frame = market.frame.iloc[:600]
    signals = pd.DataFrame({"forecast": 0.004 * np.sin(np.arange(600) / 3.0),
                            "regime": np.arange(600) % 3}, index=frame.index)
    cfg = StrategyConfig(threshold=0.001)
    ours = run_backtest(frame, RegimeLSTMStrategy, cfg, signals=signals, forecaster=object())
    assert len(ours.fills) > 50 and gc.get_freeze_count() == 0

    feed = frame.assign(forecast=signals["forecast"], regime=signals["regime"].astype(float))
    cerebro = make_cerebro(feed, cfg)
    cerebro.addstrategy(RegimeLSTMStrategy, threshold=cfg.threshold, long_only=cfg.long_only,
                        position_fraction=cfg.position_fraction, size_step=cfg.size_step,
                        forecaster=object())
    gc.collect()
    plain = cerebro.run()[0]  # the collector running as usual
    pd.testing.assert_frame_equal(ours.fills, plain.fills_frame())
    pd.testing.assert_frame_equal(ours.bars, plain.records_frame())
    assert ours.final_value == cerebro.broker.getvalue()
