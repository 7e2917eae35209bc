"""Feature groups (signals/groups.py) and targets: each causal, htf from completed candles only,
cross aligned as-of over another market's gaps, the vol-scaled target looking no further than
t + K."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bt_lstm.config import FeatureConfig
from bt_lstm.data.synthetic import make_market
from bt_lstm.signals.features import compute_features
from bt_lstm.signals.groups import (
    FeatureInputError,
    attach_cross,
    compute_groups,
    cross_column,
    resample_candles,
)
from bt_lstm.signals.windows import make_target

CUTS = (150, 333, 500, 761, 1000, 1150)


def with_flow(frame: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """Synthetic Binance flow columns: trades and the taker-buy volume."""
    rng = np.random.default_rng(seed)
    return frame.assign(trades=np.round(frame["volume"] * rng.uniform(5, 20, len(frame))),
                        taker_buy_base=frame["volume"] * rng.uniform(0.3, 0.7, len(frame)))


def gappy_other(n: int = 1200) -> pd.DataFrame:
    """Another market: starts 40 bars later, misses 10 bars, and one bar opens 1 h off-grid."""
    other = make_market(n_bars=n, seed=5).frame
    other = other.drop(other.index[np.r_[0:40, 300:310]])
    idx = other.index.to_series()
    idx.iloc[500] = idx.iloc[500] + pd.Timedelta("1h")
    return other.set_axis(pd.DatetimeIndex(idx.to_numpy(), name=other.index.name))


@pytest.fixture(scope="module")
def rich(market):
    return attach_cross(with_flow(market.frame), "ETHUSDT", gappy_other())


def assert_same_until(cut: pd.DataFrame, full: pd.DataFrame, t: int) -> None:
    a, b = full.iloc[:t + 1].to_numpy(), cut.iloc[:t + 1].to_numpy()
    assert list(cut.columns) == list(full.columns)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(a[~np.isnan(a)], b[~np.isnan(b)])


def scramble_after(frame: pd.DataFrame, t: int) -> pd.DataFrame:
    out = frame.copy()
    rng = np.random.default_rng(t)
    out.iloc[t + 1:, :] = out.iloc[t + 1:, :].to_numpy() * rng.uniform(
        0.5, 1.5, out.iloc[t + 1:, :].shape)
    return out


@pytest.mark.parametrize("group", ["price", "calendar", "flow", "htf:1d", "htf:12h",
                                   "cross:ETHUSDT"])
def test_each_group_is_causal_by_truncation_and_by_changing_later_bars(rich, group):
    cfg = FeatureConfig(groups=(group,))
    full = compute_groups(rich, cfg)
    assert full.notna().any().all(), "every column has values"
    for t in CUTS:
        assert_same_until(compute_groups(rich.iloc[:t + 1], cfg), full, t)
        assert_same_until(compute_groups(scramble_after(rich, t), cfg), full, t)


def test_groups_concatenate_in_order_and_price_alone_is_todays_features(rich):
    cfg = FeatureConfig(groups=("calendar", "price", "htf:1d"), names=("rsi", "log_ret"))
    out = compute_groups(rich, cfg)
    assert list(out.columns) == ["hour_sin", "hour_cos", "dow_sin", "dow_cos", "rsi",
                                 "log_ret", "htf:1d:rsi", "htf:1d:log_ret"]
    plain = FeatureConfig()
    pd.testing.assert_frame_equal(compute_groups(rich, plain), compute_features(rich, plain))


def test_htf_uses_only_completed_higher_candles(market):
    """Row t (closing at t + 4h) carries the last 1d candle that closed by then: the day's
    candle from its 20:00 bar on, never the day still open."""
    frame = market.frame
    cfg = FeatureConfig(groups=("htf:1d",), names=("log_ret", "rsi"))
    got = compute_groups(frame, cfg)
    days = resample_candles(frame, pd.Timedelta("1D"))
    day_feats = compute_features(days, cfg)
    bar = pd.Timedelta("4h")
    for t in range(30, len(frame), 7):
        closed = days.index[days.index + pd.Timedelta("1D") <= frame.index[t] + bar]
        want = day_feats.loc[closed[-1]].to_numpy() if len(closed) else [np.nan, np.nan]
        np.testing.assert_array_equal(got.iloc[t].to_numpy(), want)
    # the day's own return appears at its last bar (20:00), not before
    day = frame.index[frame.index.normalize() == frame.index[200].normalize()]
    log_ret = got.loc[day, "htf:1d:log_ret"]
    assert log_ret.iloc[-1] == pytest.approx(day_feats.loc[day[0].normalize(), "log_ret"])
    assert (log_ret.iloc[:-1] != log_ret.iloc[-1]).all()


def test_htf_must_be_a_longer_multiple_of_the_bar(market):
    with pytest.raises(FeatureInputError, match="htf:3h.*whole multiple of the data's 4h"):
        compute_groups(market.frame, FeatureConfig(groups=("htf:3h",)))
    with pytest.raises(FeatureInputError, match="htf:4h"):
        compute_groups(market.frame, FeatureConfig(groups=("htf:4h",)))


def test_cross_aligns_on_time_over_the_other_markets_gaps(market):
    other = gappy_other()
    frame = attach_cross(market.frame, "ethusdt", other)
    closes = frame[cross_column("ETHUSDT", "close")]
    bar = pd.Timedelta("4h")
    for t in range(len(frame)):
        usable = other.index[other.index + bar <= frame.index[t] + bar]  # closed by row t's close
        want = other.loc[usable[-1], "close"] if len(usable) else np.nan
        assert closes.iloc[t] == want or (np.isnan(want) and np.isnan(closes.iloc[t]))
    assert closes.iloc[:40].isna().all() and closes.iloc[40:].notna().all()
    # the off-grid bar (opening an hour late) is not used by the row that closes before it does
    off = other.index[500]
    row = np.searchsorted(frame.index + bar, off + bar) - 1
    assert frame.index[row] + bar < off + bar and closes.iloc[row] != other.loc[off, "close"]
    feats = compute_groups(frame, FeatureConfig(groups=("price", "cross:ETHUSDT")))
    assert "cross:ETHUSDT:rsi" in feats.columns and feats.iloc[:40, 7:].isna().all().all()


def test_cross_refuses_longer_bars_and_a_frame_without_the_market(market):
    daily = resample_candles(make_market(n_bars=1200, seed=5).frame, pd.Timedelta("1D"))
    with pytest.raises(FeatureInputError, match="longer than the data's"):
        attach_cross(market.frame, "ETHUSDT", daily)
    with pytest.raises(FeatureInputError, match="cross:BTCUSDT needs BTCUSDT's candles"):
        compute_groups(market.frame, FeatureConfig(groups=("cross:BTCUSDT",)))


def test_flow_without_its_columns_is_one_line_naming_the_download(market):
    with pytest.raises(FeatureInputError) as info:
        compute_groups(market.frame, FeatureConfig(groups=("price", "flow")))
    msg = str(info.value)
    assert "\n" not in msg and "--columns all" in msg and "trades" in msg


def test_inputs_are_not_mutated(rich):
    before = rich.copy()
    compute_groups(rich, FeatureConfig(groups=("price", "calendar", "flow", "htf:1d",
                                                "cross:ETHUSDT")))
    pd.testing.assert_frame_equal(rich, before)


@pytest.mark.parametrize("horizon", [1, 3])
def test_vol_scaled_target_uses_no_bar_after_t_plus_k(market, horizon):
    close = market.frame["close"]
    full = make_target(close, horizon, kind="vol-scaled", vol_bars=20)
    for t in (100, 400, 900):
        changed = close.copy()
        changed.iloc[t + horizon + 1:] *= 1.7
        changed.iloc[:t - 25] *= 0.6  # nor before its volatility window
        again = make_target(changed, horizon, kind="vol-scaled", vol_bars=20)
        assert again.iloc[t] == pytest.approx(full.iloc[t], rel=1e-12)
    ret = np.log(close.shift(-horizon) / close)
    sigma = np.log(close / close.shift(1)).rolling(20).std()
    np.testing.assert_allclose(full.iloc[30:-horizon],
                               (ret / (sigma * np.sqrt(horizon))).iloc[30:-horizon])
    assert full.iloc[:19].isna().all() and full.iloc[-horizon:].isna().all()
