"""BaseStrategy: a user's own strategy and the SMA baseline run through run_backtest; the docs
example runs; the broker's speed paths change no fill."""
from __future__ import annotations

import re
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from bt_lstm.backtest.engine import (
    FractionalCommission,
    TradableBarBroker,
    gc_frozen,
    make_cerebro,
    make_feed,
    run_backtest,
)
from bt_lstm.config import StrategyConfig
from bt_lstm.data.synthetic import make_market
from strategies.base import BaseStrategy
from strategies.lstm_strategy import RegimeLSTMStrategy
from strategies.sma_cross import SmaCross

DOCS = Path(__file__).resolve().parents[1] / "docs" / "strategies.md"


class AboveMean(BaseStrategy):
    """A user's strategy: long while the close is above the mean of the last ``n`` closes,
    short below it (flat where ``long_only``)."""

    params = (("n", 5), ("long_only", False))

    def __init__(self):
        super().__init__()
        self.mean = bt.ind.SMA(self.data.close, period=self.p.n)

    def target(self):
        above = self.data.close[0] > self.mean[0]
        return 1 if above else (0 if self.p.long_only else -1)


def expected_sides(frame: pd.DataFrame, n: int, long_only: bool) -> np.ndarray:
    """AboveMean's rule in pandas; 0 during the mean's warm-up."""
    above = (frame["close"] > frame["close"].rolling(n).mean()).to_numpy()
    sides = np.where(above, 1, 0 if long_only else -1)
    sides[:n - 1] = 0
    return sides


def test_a_users_strategy_runs_through_run_backtest():
    frame = make_market(n_bars=300, seed=5).frame
    cfg = StrategyConfig(commission=0.001, slippage=0.0, position_fraction=0.5)
    res = run_backtest(frame, AboveMean, cfg, n=5)
    sides = expected_sides(frame, 5, False)
    assert (res.bars.index == frame.index).all() and list(res.bars["bar"]) == list(range(300))
    np.testing.assert_array_equal(res.bars["signal"].to_numpy(), sides)
    assert res.bars["forecast"].isna().all() and (res.bars["regime"] == -1).all()
    # an order at every change of side (warm-up bars are flat), filled at the next open
    changes = np.flatnonzero(np.diff(np.r_[0, sides]) != 0)
    changes = changes[changes < len(frame) - 1]  # the last bar's order never fills
    assert list(res.fills["bar"]) == list(changes + 1)
    # (Backtrader's fill price is its value over its size: the open, to the last bit or so)
    np.testing.assert_allclose(res.fills["price"], frame["open"].to_numpy()[changes + 1],
                               rtol=1e-15)
    # sized by order_size: half the equity at the decision's close, rounded down to 1e-6
    first = changes[0]
    value = res.bars["value"].iloc[first]
    want = sides[first] * np.floor(0.5 * value / frame["close"].iloc[first] / 1e-6) * 1e-6
    assert res.fills["size"].iloc[0] == pytest.approx(want, abs=1e-9)
    assert len(res.trades) == len(changes) - 1  # every fill after the first closes a trade
    assert res.final_value == pytest.approx(res.bars["value"].iloc[-1], rel=1e-12)


def test_config_fields_reach_only_the_params_a_strategy_declares():
    frame = make_market(n_bars=200, seed=5).frame
    # AboveMean declares long_only: the config's value reaches it; threshold it has not
    res = run_backtest(frame, AboveMean, StrategyConfig(long_only=True, threshold=0.5))
    assert (res.bars["signal"] >= 0).all() and (res.bars["signal"] == 1).any()
    # an explicit keyword wins over the config's field
    res = run_backtest(frame, AboveMean, StrategyConfig(long_only=True), long_only=False)
    assert (res.bars["signal"] == -1).any()


def test_unknown_params_and_foreign_classes_are_refused_clearly():
    frame = make_market(n_bars=50, seed=5).frame
    with pytest.raises(ValueError, match=r"AboveMean has no parameter 'long_onyl'; did you "
                                         r"mean 'long_only'\?"):
        run_backtest(frame, AboveMean, StrategyConfig(), long_onyl=True)

    class Plain(bt.Strategy):
        pass

    with pytest.raises(TypeError, match="BaseStrategy"):
        run_backtest(frame, Plain, StrategyConfig())


def test_a_side_outside_minus_one_to_one_is_an_error_naming_the_bar():
    class Leveraged(BaseStrategy):
        def target(self):
            return 2

    with pytest.raises(ValueError, match=r"Leveraged.target\(\) returned side 2 at bar 0"):
        run_backtest(make_market(n_bars=20, seed=5).frame, Leveraged, StrategyConfig())


def test_one_order_at_a_time_past_a_placeholder_bar():
    class Flip(BaseStrategy):  # a new side every bar
        def target(self):
            return 1 if len(self) % 2 else -1  # bar 0 long, bar 1 short, ...

    frame = make_market(n_bars=12, seed=5).frame.copy()
    c = frame["close"].iloc[4]
    frame.iloc[5, :5] = [c, c, c, c, 0.0]  # bar 5: a placeholder candle (nothing traded)
    frame = frame[["open", "high", "low", "close", "volume"]]
    res = run_backtest(frame, Flip, StrategyConfig())
    # bar 4's order (long) waits past bar 5 and fills at bar 6's open; bar 5's decision
    # (short) sends nothing, and bar 6 wants long again: held already, so bar 7 fills nothing
    assert list(res.fills["bar"]) == [1, 2, 3, 4, 6, 8, 9, 10, 11]
    assert res.info["deferred_fills"] == 1 and list(res.bars["signal"].iloc[4:8]) == [1, -1, 1, -1]


def frozen_sma_cross():
    """SmaCross as it was before it moved onto BaseStrategy: the reference of its fills."""

    class OldSmaCross(bt.Strategy):
        params = (("fast", 10), ("slow", 30), ("position_fraction", 0.95))

        def __init__(self):
            fast = bt.ind.SMA(self.data.close, period=self.p.fast)
            slow = bt.ind.SMA(self.data.close, period=self.p.slow)
            self.cross = bt.ind.CrossOver(fast, slow)
            self.n_orders = 0
            self.fills = []

        def next(self):
            if self.cross[0] > 0 and not self.position:
                size = self.p.position_fraction * self.broker.getvalue() / self.data.close[0]
                self.buy(size=size)
                self.n_orders += 1
            elif self.cross[0] < 0 and self.position:
                self.close()
                self.n_orders += 1

        def notify_order(self, order):
            if order.status == order.Completed:
                ex = order.executed
                self.fills.append((len(self) - 1, ex.size, ex.price, ex.comm))

    return OldSmaCross


def bench_baseline(frame: pd.DataFrame, cls: type, cfg: StrategyConfig):
    """The SMA baseline as bt_lstm.jobs.bench runs it: make_cerebro, no params."""
    feed = frame[["open", "high", "low", "close", "volume"]].assign(forecast=np.nan,
                                                                    regime=-1.0)
    cerebro = make_cerebro(feed, cfg)
    cerebro.addstrategy(cls)
    with gc_frozen():
        return cerebro.run()[0], cerebro.broker.getvalue()


@pytest.fixture(scope="module")
def sma_case():
    frame = make_market(n_bars=1500, seed=9).frame
    cfg = StrategyConfig(commission=0.001, slippage=0.0005)
    old, old_value = bench_baseline(frame, frozen_sma_cross(), cfg)
    assert old.n_orders > 20
    return frame, cfg, old, old_value


def test_the_sma_baseline_keeps_its_fills_on_the_bench_path(sma_case):
    frame, cfg, old, old_value = sma_case
    new, new_value = bench_baseline(frame, SmaCross, cfg)
    assert new.n_orders == old.n_orders and new_value == old_value
    got = [(b, s, p, c) for _, b, s, p, c in new.fills]
    assert got == old.fills  # bar, size, price, commission: exactly


def test_the_sma_baseline_runs_through_run_backtest_with_the_same_fills(sma_case):
    frame, cfg, old, old_value = sma_case
    res = run_backtest(frame, SmaCross, cfg, size_step=None)  # its own exact sizes
    got = list(res.fills[["bar", "size", "price", "commission"]].itertuples(index=False,
                                                                          name=None))
    assert got == old.fills and res.final_value == old_value
    # the crossover's warm-up (the slow average's 30 bars): recorded flat, with no crossover
    assert list(res.bars["bar"]) == list(range(len(frame)))
    crossover = res.bars["forecast"]
    assert crossover.iloc[:30].isna().all() and crossover.iloc[30:].notna().all()
    assert (res.bars["signal"].iloc[:30] == 0).all() and (res.bars["position"].iloc[:31] == 0).all()
    # the config's lot step: the same bars and prices; each size one step below at most, plus
    # the drift of equity that the earlier roundings leave (a few parts per billion)
    stepped = run_backtest(frame, SmaCross, cfg)
    assert list(stepped.fills["bar"]) == [f[0] for f in old.fills]
    np.testing.assert_allclose(stepped.fills["price"], [f[2] for f in old.fills], rtol=1e-15)
    np.testing.assert_allclose(stepped.fills["size"], [f[1] for f in old.fills], rtol=1e-8,
                               atol=cfg.size_step)
    assert not np.array_equal(stepped.fills["size"], [f[1] for f in old.fills])


def test_the_sma_baseline_accepts_what_the_jobs_pass(sma_case):
    frame, cfg, _, _ = sma_case
    signals = pd.DataFrame({"forecast": 0.01, "regime": 1}, index=frame.index)
    # bt_lstm.jobs.backtest passes forecaster and inference to whichever strategy it runs
    res = run_backtest(frame, SmaCross, cfg, signals=signals, forecaster=object(),
                       inference="batch", size_step=None)
    plain = run_backtest(frame, SmaCross, cfg, size_step=None)
    pd.testing.assert_frame_equal(res.fills, plain.fills)


def test_a_reversal_refused_for_margin_keeps_its_closing_fill():
    idx = pd.date_range("2022-01-01", periods=12, freq="4h")
    close = 100.0 + np.arange(12.0)
    open_ = close - 0.5
    open_[6:] += 60.0  # bar 6 opens 60 % higher: the short's cover eats the cash for the long
    close[6:] += 60.0
    frame = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) + 1,
                          "low": np.minimum(open_, close) - 1, "close": close,
                          "volume": 10.0}, index=idx)
    forecast = np.where(np.arange(12) < 5, -0.01, 0.01)  # short, then long from bar 5's close
    res = run_backtest(frame, RegimeLSTMStrategy,
                       StrategyConfig(position_fraction=1.0, slippage=0.0, commission=0.0),
                       signals=pd.DataFrame({"forecast": forecast, "regime": 1}, index=idx))
    # the reversal (cover 100, then go long) is refused for Margin after its cover filled
    assert res.rejected["status"].iloc[0] == "Margin" and res.rejected["size"].iloc[0] > 100
    assert list(res.fills["bar"]) == [1, 6] and list(res.fills["size"]) == [-100.0, 100.0]
    assert res.bars["position"].iloc[6] == 0 and len(res.trades) == 1


class Churn(BaseStrategy):
    """Long, short and flat in turn: many orders, reversals included."""

    def target(self):
        return (1, -1, 0, -1, 1)[len(self) % 5]

    def next(self) -> None:
        super().next()
        # the broker's own book each bar: value, levered value, unrealized P&L, leverage
        b = self.broker
        self.book = getattr(self, "book", [])
        self.book.append((b.getvalue(), b.get_value(lever=True), b._unrealized, b._leverage))


def run_churn(frame, broker: bt.brokers.BackBroker, interest: float = 0.0):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker = broker
    cerebro.adddata(make_feed(frame.assign(forecast=np.nan, regime=-1.0)))
    broker.setcash(10_000.0)
    broker.addcommissioninfo(FractionalCommission(commission=0.001, interest=interest))
    cerebro.addstrategy(Churn)
    strat = cerebro.run()[0]
    return strat.fills_frame(), strat.records_frame(), broker.getvalue(), strat.book


@pytest.mark.parametrize("interest", [0.0, 0.2])
def test_the_brokers_speed_paths_change_no_fill(interest):
    frame = make_market(n_bars=400, seed=2).frame[["open", "high", "low", "close", "volume"]]
    ours = run_churn(frame, TradableBarBroker(), interest)
    plain = run_churn(frame, bt.brokers.BackBroker(), interest)
    assert len(ours[0]) > 200
    pd.testing.assert_frame_equal(ours[0], plain[0])
    pd.testing.assert_frame_equal(ours[1], plain[1])
    assert ours[2] == plain[2]
    assert ours[3] == plain[3]  # bit for bit, every bar (long, short and flat books)
    if interest:  # the interest path runs (BackBroker's own next): shorts pay for their days
        assert ours[2] != run_churn(frame, TradableBarBroker(), 0.0)[2]


def test_the_docs_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) == 2
    scope: dict = {"__name__": __name__}  # Backtrader's metaclass looks the module up
    exec(compile("\n".join(blocks), str(DOCS), "exec"), scope)  # noqa: S102 (our own page)
    res, candles = scope["result"], scope["candles"]
    assert len(res.bars) == len(candles) == 600
    roc = candles["close"] / candles["close"].shift(10) - 1
    sides = np.where(roc > 0.03, 1, np.where(roc < -0.03, -1, 0))
    np.testing.assert_array_equal(res.bars["signal"].to_numpy(), sides)
    np.testing.assert_allclose(res.bars["forecast"].iloc[10:], roc.iloc[10:], rtol=1e-9)
    assert len(res.fills) > 5 and (res.fills["bar"] > 10).all()
