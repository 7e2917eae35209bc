"""How much of a result could be luck: probabilistic and deflated Sharpe ratios (Bailey & López
de Prado 2012, 2014) and stationary block-bootstrap intervals of Sharpe, return and drawdown.

Pure numpy / scipy / arch (the only home of ``arch``); formulas in docs/concepts/luck.md.
Every Sharpe that goes into PSR or DSR is **per period** (daily here), never annualised, and
kurtosis is **raw** (3 for a normal distribution).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy.stats import norm

EULER_GAMMA = 0.5772156649015329  # Euler–Mascheroni constant
BOOTSTRAP_REPS = 1000
LEVEL = 0.95


def return_moments(returns: np.ndarray) -> dict[str, float]:
    """Per-period Sharpe (``ddof=1``, as the reported Sharpe), skewness and raw kurtosis.

    Skewness and kurtosis are the plain sample moments (``scipy.stats.skew`` / ``kurtosis``
    with ``bias=True, fisher=False``); NaN where the returns do not vary.

    Examples
    --------
    >>> m = return_moments(np.array([0.01, -0.02, 0.03, 0.0]))
    >>> round(m["sharpe"], 4), m["n"]
    (0.2402, 4)
    """
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    n = len(r)
    nan = float("nan")
    if n < 3 or float(np.std(r)) == 0.0:
        return {"n": n, "sharpe": nan, "skewness": nan, "kurtosis": nan}
    dev = r - r.mean()
    m2 = float(np.mean(dev ** 2))
    return {"n": n, "sharpe": float(r.mean() / r.std(ddof=1)),
            "skewness": float(np.mean(dev ** 3) / m2 ** 1.5),
            "kurtosis": float(np.mean(dev ** 4) / m2 ** 2)}


def probabilistic_sharpe(sharpe: float, n: int, skewness: float, kurtosis: float,
                         benchmark: float = 0.0) -> float:
    """PSR: the probability that the true per-period Sharpe exceeds ``benchmark``.

    ``PSR = Φ((SR - SR*) √(n - 1) / √(1 - γ3 SR + (γ4 - 1)/4 SR²))`` with per-period ``SR``,
    skewness ``γ3`` and raw kurtosis ``γ4`` (Bailey & López de Prado 2012). NaN when any input
    is NaN or the variance term is not positive.

    Examples
    --------
    >>> round(probabilistic_sharpe(0.1, 250, 0.0, 3.0), 4)
    0.9422
    """
    values = (sharpe, skewness, kurtosis, benchmark)
    if n < 2 or not all(np.isfinite(v) for v in values):
        return float("nan")
    var = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe ** 2
    if var <= 0:
        return float("nan")
    return float(norm.cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(var)))


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """Expected maximum of ``n_trials`` Sharpes drawn around 0 with ``variance`` (per period).

    ``E[max] ≈ √V ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)))``, γ the Euler–Mascheroni
    constant (Bailey & López de Prado 2014). One trial has no selection: its expected
    maximum is its mean, 0 (the formula itself is an approximation for N > 1).
    """
    if not isinstance(n_trials, (int, np.integer)) or n_trials < 1:
        raise ValueError(f"n_trials={n_trials!r} is invalid: expected an integer >= 1")
    if not np.isfinite(variance) or variance < 0:
        raise ValueError(f"variance={variance!r} is invalid: expected a number >= 0")
    if n_trials == 1 or variance == 0:
        return 0.0
    z = ((1.0 - EULER_GAMMA) * norm.ppf(1.0 - 1.0 / n_trials)
         + EULER_GAMMA * norm.ppf(1.0 - 1.0 / (n_trials * math.e)))
    return float(math.sqrt(variance) * z)


def deflated_sharpe(sharpe: float, n: int, skewness: float, kurtosis: float, n_trials: int,
                    trials_variance: float, benchmark: float = 0.0) -> tuple[float, float]:
    """DSR and its benchmark: ``PSR(SR*)`` with ``SR* = benchmark + E[max of N trials]``.

    All Sharpes and ``trials_variance`` (the variance of the trials' Sharpes) are per period.
    With ``n_trials == 1`` or zero variance the DSR is ``PSR(benchmark)``.
    """
    sr_star = benchmark + expected_max_sharpe(n_trials, trials_variance)
    return probabilistic_sharpe(sharpe, n, skewness, kurtosis, sr_star), sr_star


def _annual_sharpe(r: np.ndarray, periods: int) -> float:
    std = r.std(ddof=1)
    return float(r.mean() / std * math.sqrt(periods)) if std > 0 else float("nan")


def _max_drawdown(r: np.ndarray) -> float:
    equity = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    return float(np.min(equity / np.maximum.accumulate(equity) - 1.0))


def _figures(strategy: np.ndarray, benchmark: np.ndarray, periods: int) -> np.ndarray:
    s, b = _annual_sharpe(strategy, periods), _annual_sharpe(benchmark, periods)
    return np.array([s, float(np.prod(1.0 + strategy) - 1.0), _max_drawdown(strategy),
                     b, float(np.prod(1.0 + benchmark) - 1.0), _max_drawdown(benchmark), s - b])


def block_length(*series: np.ndarray) -> float:
    """Mean block length of the stationary bootstrap: the largest of ``arch``'s optimal
    estimates (Politis & White 2004, Patton et al. 2009) over the series, at least 1."""
    from arch.bootstrap import optimal_block_length

    lengths = [1.0]
    for x in series:
        x = np.asarray(x, dtype=float)
        if len(x) >= 10 and np.std(x) > 0:
            est = float(optimal_block_length(x)["stationary"].iloc[0])
            if np.isfinite(est):
                lengths.append(est)
    return max(lengths)


def bootstrap_intervals(strategy: np.ndarray, benchmark: np.ndarray, periods: int, seed: int,
                        reps: int = BOOTSTRAP_REPS, level: float = LEVEL) -> dict[str, Any]:
    """Percentile intervals of annualised Sharpe, total return and max drawdown of both series
    and of the difference of their Sharpes, from one stationary block bootstrap that resamples
    the same days of both (so their dependence is kept). Seeded: same inputs, same intervals.
    """
    from arch.bootstrap import StationaryBootstrap

    s = np.asarray(strategy, dtype=float)
    b = np.asarray(benchmark, dtype=float)
    if len(s) != len(b):
        raise ValueError(f"strategy ({len(s)}) and benchmark ({len(b)}) returns differ in length")
    block = block_length(s, b)
    boot = StationaryBootstrap(block, s, b, seed=np.random.default_rng(seed))
    draws = boot.apply(lambda x, y: _figures(x, y, periods), reps)  # (reps, 7)
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():  # a flat series has no Sharpe in any draw: NaN, not noise
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(draws, [tail, 100 - tail], axis=0)

    def pair(i: int) -> list[float]:
        return [float(lo[i]), float(hi[i])]

    keys = ("sharpe", "total_return", "max_drawdown")
    return {"method": "stationary block bootstrap (arch)", "block_length": block, "reps": reps,
            "seed": seed, "level": level,
            "strategy": {k: pair(i) for i, k in enumerate(keys)},
            "buy_and_hold": {k: pair(i + 3) for i, k in enumerate(keys)},
            "sharpe_difference": pair(6)}


def luck_statistics(strategy: np.ndarray, benchmark: np.ndarray, periods: int, n_trials: int,
                    trials_sharpe_var: float | None, seed: int, reps: int = BOOTSTRAP_REPS
                    ) -> dict[str, Any]:
    """Everything a report says about luck, from daily returns of the strategy and of
    buy-and-hold over the same days.

    Parameters
    ----------
    periods
        Periods per year: converts per-period Sharpes to the annualised ones shown to users.
    n_trials
        Configurations tried before this one (1 for a plain run).
    trials_sharpe_var
        Variance of the trials' **annualised** Sharpes; None: the sampling variance of a
        Sharpe estimate of zero over these days, ``1 / (n - 1)`` per period (what the trials'
        Sharpes would scatter by if none had any skill).
    """
    s = np.asarray(strategy, dtype=float)
    b = np.asarray(benchmark, dtype=float)
    ms, mb = return_moments(s), return_moments(b)
    n = ms["n"]
    root = math.sqrt(periods)
    if trials_sharpe_var is None:
        var, var_source = (1.0 / (n - 1) if n > 1 else 0.0), "null: sampling variance 1/(n-1)"
    else:
        var, var_source = trials_sharpe_var / periods, "given"
    psr0 = probabilistic_sharpe(ms["sharpe"], n, ms["skewness"], ms["kurtosis"])
    psr_bh = probabilistic_sharpe(ms["sharpe"], n, ms["skewness"], ms["kurtosis"], mb["sharpe"])
    dsr, sr_star = deflated_sharpe(ms["sharpe"], n, ms["skewness"], ms["kurtosis"], n_trials,
                                   var)
    out = {
        "periods": "daily", "n": n, "sharpe": ms["sharpe"] * root,
        "sharpe_per_period": ms["sharpe"], "skewness": ms["skewness"],
        "kurtosis_raw": ms["kurtosis"],
        "psr": {"vs_zero": psr0, "vs_buy_and_hold": psr_bh,
                "buy_and_hold_sharpe": mb["sharpe"] * root},
        "dsr": {"value": dsr, "n_trials": int(n_trials),
                "trials_sharpe_var": (var * periods if trials_sharpe_var is None
                                      else trials_sharpe_var),
                "trials_sharpe_var_source": var_source,
                "expected_max_sharpe": sr_star * root},
        "bootstrap": bootstrap_intervals(s, b, periods, seed, reps),
    }
    out["reading"] = plain_reading(out)
    return out


def plain_reading(stats: dict[str, Any]) -> str:
    """One sentence in plain words: how often noise alone would give a Sharpe this high."""
    dsr, n_trials = stats["dsr"]["value"], stats["dsr"]["n_trials"]
    lo, hi = stats["bootstrap"]["strategy"]["sharpe"]
    psr_bh = stats["psr"]["vs_buy_and_hold"]
    if not np.isfinite(dsr):
        return ("The strategy's daily returns do not vary enough to judge how much of the "
                "result is luck.")
    trials = f"{n_trials} trial" + ("" if n_trials == 1 else "s")
    where = "includes 0" if lo <= 0 <= hi else ("lies above 0" if lo > 0 else "lies below 0")
    beat = (f"a {100 * psr_bh:.0f} % chance that its true Sharpe beats buy-and-hold's"
            if np.isfinite(psr_bh) else "no comparison with buy-and-hold")
    return (f"A Sharpe this high would be expected from noise alone in {100 * (1 - dsr):.0f} % "
            f"of cases given {trials}; its 95 % interval {where}, with {beat}.")


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, family-wise error rate).

    ``p_(i)`` sorted ascending becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``; a NaN
    p-value (a test that could not be run) counts as 1, so it never passes and is never
    left out of ``m``.

    Examples
    --------
    >>> holm_adjust(np.array([0.01, 0.04, 0.03])).round(4).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    p = np.where(np.isfinite(p), p, 1.0)
    m = len(p)
    if not m:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(stepped)
    return out


def bootstrap_interval(statistic: Any, *series: np.ndarray, seed: int,
                       reps: int = BOOTSTRAP_REPS, level: float = LEVEL) -> list[float]:
    """Percentile interval of ``statistic(*series)`` from a stationary block bootstrap that
    resamples the same rows of every series (their pairing and dependence are kept), block
    length as :func:`block_length`. Seeded: same inputs, same interval; NaN draws are left
    out (``[nan, nan]`` when every draw is NaN)."""
    from arch.bootstrap import StationaryBootstrap

    arrays = [np.asarray(x, dtype=float) for x in series]
    if len({len(x) for x in arrays}) != 1:
        raise ValueError("bootstrap_interval: the series differ in length")
    if len(arrays[0]) < 3:
        return [float("nan"), float("nan")]
    boot = StationaryBootstrap(block_length(*arrays), *arrays,
                               seed=np.random.default_rng(seed))
    draws = boot.apply(lambda *xs: np.array([statistic(*xs)]), reps)[:, 0]
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return [float("nan"), float("nan")]
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return [float(lo), float(hi)]
