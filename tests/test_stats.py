"""PSR, DSR and bootstrap intervals: the published example, an independent scipy computation,
the shape of DSR in N, and the coverage of the bootstrap interval of a Sharpe."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from bt_lstm.research.stats import (
    bootstrap_intervals,
    deflated_sharpe,
    expected_max_sharpe,
    luck_statistics,
    probabilistic_sharpe,
    return_moments,
)


def test_dsr_reproduces_the_published_example():
    """Bailey & López de Prado (2014), the numerical example: an annualised Sharpe of 2.5 over
    5 years of daily returns (250 a year, T = 1250), N = 100 trials whose annualised Sharpes
    have variance 1/2, skewness -3, raw kurtosis 10. The paper reports a per-period expected
    maximum SR0 of 0.1132 and DSR of 0.9004; the same figures follow from its formulas."""
    sr = 2.5 / math.sqrt(250)
    dsr, sr0 = deflated_sharpe(sr, 1250, -3.0, 10.0, 100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert dsr == pytest.approx(0.9004, abs=5e-4)
    # PSR against 0 of the same track record: the edge is all but certain before deflation
    assert probabilistic_sharpe(sr, 1250, -3.0, 10.0) > 0.999


def test_psr_and_dsr_match_an_independent_scipy_computation():
    rng = np.random.default_rng(11)
    r = rng.standard_t(df=4, size=900) * 0.02 + 0.0015  # fat tails
    m = return_moments(r)
    sr = r.mean() / r.std(ddof=1)
    skew = sps.skew(r)  # bias=True: plain sample moments
    kurt = sps.kurtosis(r, fisher=False)  # raw: 3 for a normal distribution
    assert (m["sharpe"], m["skewness"], m["kurtosis"]) == pytest.approx((sr, skew, kurt))
    for bench in (0.0, 0.02):
        z = (sr - bench) * math.sqrt(len(r) - 1) / math.sqrt(1 - skew * sr
                                                            + (kurt - 1) / 4 * sr ** 2)
        assert probabilistic_sharpe(sr, len(r), skew, kurt, bench) == pytest.approx(
            sps.norm.cdf(z))
    n_trials, var = 25, 0.0009
    e = 0.5772156649015329
    sr0 = math.sqrt(var) * ((1 - e) * sps.norm.ppf(1 - 1 / n_trials)
                            + e * sps.norm.ppf(1 - 1 / (n_trials * math.e)))
    dsr, star = deflated_sharpe(sr, len(r), skew, kurt, n_trials, var)
    assert star == pytest.approx(sr0)
    assert dsr == pytest.approx(probabilistic_sharpe(sr, len(r), skew, kurt, sr0))


def test_dsr_falls_as_n_grows_and_is_psr_at_one_trial_or_zero_variance():
    sr, n, skew, kurt = 0.08, 1000, -0.5, 6.0
    values = [deflated_sharpe(sr, n, skew, kurt, k, 0.001)[0] for k in (1, 2, 5, 20, 100, 1000)]
    assert all(a > b for a, b in zip(values, values[1:]))
    for bench in (0.0, 0.03):
        psr = probabilistic_sharpe(sr, n, skew, kurt, bench)
        assert deflated_sharpe(sr, n, skew, kurt, 1, 0.0, bench)[0] == psr
        assert deflated_sharpe(sr, n, skew, kurt, 1, 0.01, bench)[0] == psr
        assert deflated_sharpe(sr, n, skew, kurt, 50, 0.0, bench)[0] == psr
    assert expected_max_sharpe(100, 0.0) == 0.0
    with pytest.raises(ValueError, match="n_trials"):
        expected_max_sharpe(0, 0.1)


def test_bootstrap_interval_of_a_sharpe_covers_the_true_value_about_95_percent():
    rng = np.random.default_rng(1)
    mu, sd, periods = 0.002, 0.03, 365
    true = mu / sd * math.sqrt(periods)
    n_series = 80
    hits = 0
    for i in range(n_series):
        s = rng.normal(mu, sd, 300)
        b = rng.normal(0.0, sd, 300)
        lo, hi = bootstrap_intervals(s, b, periods, seed=i, reps=200)["strategy"]["sharpe"]
        hits += lo <= true <= hi
    assert 0.85 <= hits / n_series <= 1.0


def test_bootstrap_is_seeded_and_orders_its_intervals():
    rng = np.random.default_rng(5)
    s, b = rng.normal(0.001, 0.02, 400), rng.normal(0.0, 0.03, 400)
    first = bootstrap_intervals(s, b, 365, seed=3, reps=100)
    assert first == bootstrap_intervals(s, b, 365, seed=3, reps=100)
    assert first != bootstrap_intervals(s, b, 365, seed=4, reps=100)
    assert first["block_length"] >= 1
    for side in ("strategy", "buy_and_hold"):
        for lo, hi in first[side].values():
            assert lo <= hi
    lo, hi = first["sharpe_difference"]
    assert lo <= hi


def test_luck_statistics_read_their_trials_and_survive_flat_returns():
    rng = np.random.default_rng(2)
    s, b = rng.normal(0.002, 0.02, 500), rng.normal(0.0, 0.03, 500)
    one = luck_statistics(s, b, 365, 1, None, seed=7, reps=50)
    many = luck_statistics(s, b, 365, 60, 1.0, seed=7, reps=50)
    assert one["dsr"]["value"] == one["psr"]["vs_zero"]
    assert many["dsr"]["value"] < one["dsr"]["value"]
    assert many["dsr"]["n_trials"] == 60 and many["dsr"]["trials_sharpe_var"] == 1.0
    assert "60 trials" in many["reading"] and "noise alone" in many["reading"]
    flat = luck_statistics(np.zeros(200), b[:200], 365, 1, None, seed=7, reps=20)
    assert math.isnan(flat["dsr"]["value"]) and "do not vary" in flat["reading"]
