"""No look-ahead: every value at bar t is the same when the bars after t are dropped or changed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bt_lstm.config import FeatureConfig, RegimeConfig
from bt_lstm.signals.features import compute_features, compute_features_many, warmup_bars
from bt_lstm.signals.regimes import apply_regimes, apply_regimes_many, fit_regimes

CUTS = [150, 400, 777, 1100]


def scramble_after(frame: pd.DataFrame, t: int, seed: int = 0) -> pd.DataFrame:
    """Replace every bar after t with different (still valid) candles."""
    out = frame.copy()
    rng = np.random.default_rng(seed)
    n = len(out) - t - 1
    factor = np.exp(rng.normal(0, 0.05, n))
    for col in ("open", "high", "low", "close"):
        out.iloc[t + 1:, out.columns.get_loc(col)] *= factor
    out.iloc[t + 1:, out.columns.get_loc("volume")] *= 3.0
    return out


def assert_same_until(a: pd.DataFrame | pd.Series, b: pd.DataFrame | pd.Series, t: int) -> None:
    pd.testing.assert_frame_equal(pd.DataFrame(a).iloc[:t + 1], pd.DataFrame(b).iloc[:t + 1],
                                  check_exact=True)


@pytest.mark.parametrize("t", CUTS)
def test_features_are_causal(market, t):
    cfg = FeatureConfig()
    full = compute_features(market.frame, cfg)
    assert_same_until(compute_features(market.frame.iloc[:t + 1], cfg), full, t)
    assert_same_until(compute_features(scramble_after(market.frame, t), cfg), full, t)


def test_warmup_is_exact(market):
    cfg = FeatureConfig()
    feats = compute_features(market.frame, cfg)
    first_complete = int(np.flatnonzero(feats.notna().all(axis=1).to_numpy())[0])
    assert first_complete == warmup_bars(cfg)


def test_compute_features_does_not_mutate_input(market):
    before = market.frame.copy()
    compute_features(market.frame, FeatureConfig())
    pd.testing.assert_frame_equal(before, market.frame)


@pytest.mark.parametrize("method", ["rule", "gmm"])
@pytest.mark.parametrize("t", CUTS)
def test_regime_labels_are_causal(market, method, t):
    params = fit_regimes(market.frame.iloc[:600], RegimeConfig(method=method), seed=1)
    full = apply_regimes(market.frame, params)
    assert_same_until(apply_regimes(market.frame.iloc[:t + 1], params), full, t)
    assert_same_until(apply_regimes(scramble_after(market.frame, t), params), full, t)


@pytest.mark.parametrize("method", ["rule", "gmm"])
def test_regime_fit_sees_training_bars_only(market, method):
    """Changing bars after the training span leaves the fitted classifier unchanged."""
    cfg = RegimeConfig(method=method)
    a = fit_regimes(market.frame.iloc[:600], cfg, seed=1)
    b = fit_regimes(scramble_after(market.frame, 599).iloc[:600], cfg, seed=1)
    assert a == b


def test_gmm_states_are_ordered_by_trend(market):
    params = fit_regimes(market.frame.iloc[:900], RegimeConfig(method="gmm"), seed=1)
    means = np.asarray(params.means)[:, 0]
    order = np.argsort(means)
    assert [params.state_labels[k] for k in order] == [0, 1, 2]


@pytest.mark.parametrize("t", CUTS[1:])
def test_forecasts_are_causal(market, fitted, t):
    forecaster = fitted[0].forecaster
    full = forecaster.forecast_frame(market.frame)
    assert_same_until(forecaster.forecast_frame(market.frame.iloc[:t + 1]), full, t)
    assert_same_until(forecaster.forecast_frame(scramble_after(market.frame, t)), full, t)
    assert np.isfinite(full["forecast"].iloc[t])


def test_leaky_feature_would_be_caught(market):
    """The check above is not vacuous: a feature using the next bar fails it."""
    t = 400
    leaky = lambda f: f["close"].shift(-1) / f["close"]  # noqa: E731
    full = leaky(market.frame)
    cut = leaky(scramble_after(market.frame, t))
    assert full.iloc[t] != cut.iloc[t]


def burst_frames(market) -> list[pd.DataFrame]:
    """Markets of equal and of other lengths, with zero volumes, a flat stretch and a jump."""
    frames = [market.frame.iloc[k * 37:k * 37 + 700].copy() for k in range(5)]
    frames[1].iloc[100:120, frames[1].columns.get_loc("volume")] = 0.0
    frames[2].iloc[200:300] = frames[2].iloc[199].to_numpy()  # a market that did not move
    frames[3].iloc[400:, :4] *= 1.5
    return frames + [market.frame.iloc[:500], market.frame.iloc[:3]]  # other lengths


def test_features_of_markets_side_by_side_equal_each_market_alone(market):
    """The bus engine computes a burst's markets in one pass (``compute_features_many``): bit
    for bit the values of ``compute_features`` on each market."""
    frames, cfg = burst_frames(market), FeatureConfig()
    many = compute_features_many(frames, cfg)
    for frame, values in zip(frames, many):
        np.testing.assert_array_equal(values, compute_features(frame, cfg).to_numpy())


@pytest.mark.parametrize("method", ["rule", "gmm"])
def test_regimes_of_markets_side_by_side_equal_each_market_alone(market, method):
    params = fit_regimes(market.frame.iloc[:600], RegimeConfig(method=method), seed=1)
    frames = burst_frames(market)
    many = apply_regimes_many(frames, params)
    for frame, labels in zip(frames, many):
        np.testing.assert_array_equal(labels, apply_regimes(frame, params).to_numpy())
    assert len(np.unique(np.concatenate(many))) == 4  # -1 (too short) and all three regimes


def test_forecasts_of_a_burst_equal_one_at_a_time(market, fitted):
    """``forecast_last_many`` (one network call per model for a burst of markets) gives each
    market's ``forecast_last``: the same regimes and, from float32 inference in other batch
    shapes, forecasts equal within 1e-6 of their size."""
    forecaster = fitted[0].forecaster.with_policy("trade", 0.05)
    frames = [market.frame.iloc[k * 50:k * 50 + 600] for k in range(8)] + [market.frame.iloc[:5]]
    many = forecaster.forecast_last_many(frames)
    one = [forecaster.forecast_last(f) for f in frames]
    assert [r for r, _ in many] == [r for r, _ in one]
    assert len({r for r, _ in one}) > 1, "the burst should span several regimes (models)"
    got, want = np.array([f for _, f in many]), np.array([f for _, f in one])
    assert np.isnan(got[-1]) and np.isnan(want[-1])  # too short: no forecast
    np.testing.assert_allclose(got[:-1], want[:-1], rtol=1e-6, atol=1e-9)
    assert np.isfinite(got[:-1]).all()
