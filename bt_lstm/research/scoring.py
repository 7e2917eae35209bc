"""Forecast scoring: errors, direction, rank correlation and Diebold–Mariano against a benchmark.

Formulas in docs/guides/evaluate.md; what judges a forecast (not a trading result) lives here."""
from __future__ import annotations

from typing import Any

import numpy as np


def forecast_scores(forecast: np.ndarray, realised: np.ndarray) -> dict[str, float]:
    """MSE, MAE and directional accuracy of a forecast, beside the zero forecast's MSE and MAE.

    Rows where either value is NaN are left out; ``n`` counts the rest. Directional accuracy is
    the share of rows where sign(forecast) == sign(realised).
    """
    f = np.asarray(forecast, dtype=float)
    r = np.asarray(realised, dtype=float)
    ok = np.isfinite(f) & np.isfinite(r)
    f, r = f[ok], r[ok]
    if not len(f):
        nan = float("nan")
        return {"n": 0, "mse": nan, "mae": nan, "dir_acc": nan, "zero_mse": nan, "zero_mae": nan}
    return {"n": int(len(f)), "mse": float(np.mean((f - r) ** 2)),
            "mae": float(np.mean(np.abs(f - r))),
            "dir_acc": float(np.mean(np.sign(f) == np.sign(r))),
            "zero_mse": float(np.mean(r ** 2)), "zero_mae": float(np.mean(np.abs(r)))}


def regression_scores(forecast: np.ndarray, realised: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE, R², directional accuracy and Spearman IC of a forecast, with ``n``.

    R² is ``1 - SSE / SST`` with SST around the mean of the realised values scored (so a
    constant forecast at that mean scores 0). NaN rows in either input are left out.
    """
    from scipy.stats import spearmanr

    f = np.asarray(forecast, dtype=float)
    r = np.asarray(realised, dtype=float)
    ok = np.isfinite(f) & np.isfinite(r)
    f, r = f[ok], r[ok]
    nan = float("nan")
    if len(f) < 2:
        return {"n": int(len(f)), "mse": nan, "rmse": nan, "mae": nan, "r2": nan,
                "dir_acc": nan, "ic": nan}
    sse = float(np.sum((f - r) ** 2))
    sst = float(np.sum((r - r.mean()) ** 2))
    ic = float(spearmanr(f, r).statistic) if np.ptp(f) > 0 and np.ptp(r) > 0 else nan
    return {"n": int(len(f)), "mse": sse / len(f), "rmse": float(np.sqrt(sse / len(f))),
            "mae": float(np.mean(np.abs(f - r))), "r2": 1.0 - sse / sst if sst > 0 else nan,
            "dir_acc": float(np.mean(np.sign(f) == np.sign(r))), "ic": ic}


def diebold_mariano(errors_a: np.ndarray, errors_b: np.ndarray,
                    alternative: str = "two-sided", horizon: int = 1) -> dict[str, float]:
    """Diebold–Mariano test of equal squared-error loss.

    ``d_t = e_a,t² - e_b,t²``; ``DM = mean(d) / sqrt(var(d) / n)``. For one-step forecasts
    (``horizon`` 1) the variance is the lag-0 one (``ddof=0``); for ``horizon`` K > 1 the
    targets overlap, so the long-run variance adds the first K - 1 autocovariances with
    Bartlett (Newey–West) weights, which keep it positive. p-value from the standard normal,
    two-sided or, with ``alternative='less'``, one-sided for "``a`` has the smaller loss". A
    negative statistic means ``a`` has the smaller loss. NaN when the losses are identical.
    """
    if alternative not in ("two-sided", "less"):
        raise ValueError(f"alternative={alternative!r}: use 'two-sided' or 'less'")
    from scipy.stats import norm

    a = np.asarray(errors_a, dtype=float)
    b = np.asarray(errors_b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] ** 2 - b[ok] ** 2
    var = _long_run_variance(d, horizon - 1) if len(d) else 0.0
    if len(d) < 2 or var <= 0:
        return {"dm": float("nan"), "p_value": float("nan"), "n": int(len(d))}
    stat = float(d.mean() / np.sqrt(var / len(d)))
    p = norm.cdf(stat) if alternative == "less" else 2 * norm.sf(abs(stat))
    return {"dm": stat, "p_value": float(p), "n": int(len(d))}


def _long_run_variance(d: np.ndarray, lags: int) -> float:
    """Lag-0 variance of ``d`` plus ``lags`` autocovariances with Bartlett weights."""
    dev = d - d.mean()
    var = float(np.mean(dev ** 2))
    for k in range(1, min(lags, len(d) - 1) + 1):
        var += 2.0 * (1.0 - k / (lags + 1)) * float(np.sum(dev[k:] * dev[:-k]) / len(d))
    return var


def skill_record(pred: np.ndarray, y_val: np.ndarray, train_mean: float, best_epoch: int,
                 scale: float = 1.0, skill_p: float | None = None,
                 horizon: int = 1) -> dict[str, Any]:
    """A model's skill on its validation windows, beside the zero and training-mean forecasts.

    ``pred`` and ``y_val`` (N,) are forecasts and targets of the validation windows and
    ``train_mean`` the mean training target, all in units that ``scale`` turns into log
    returns. ``dm_p``: one-sided Diebold–Mariano p-value of "the model's squared error is
    smaller than zero's", its variance the long-run one over ``horizon`` - 1 lags (targets
    of K bars overlap, so consecutive losses are correlated: a lag-0 variance would
    overstate the evidence). The verdict is ``models.skill.skill_verdict`` at ``skill_p``.
    """
    from bt_lstm.config import DEFAULT_SKILL_P
    from bt_lstm.models.skill import skill_verdict

    p = np.asarray(pred, dtype=float) * scale
    y = np.asarray(y_val, dtype=float) * scale
    mse = float(np.mean((p - y) ** 2)) if len(y) else float("nan")
    zero = float(np.mean(y ** 2)) if len(y) else float("nan")
    mean = float(np.mean((y - train_mean * scale) ** 2)) if len(y) else float("nan")
    dm = diebold_mariano(p - y, y, alternative="less", horizon=horizon)
    skill_p = DEFAULT_SKILL_P if skill_p is None else skill_p
    record = {"val_mse": mse, "zero_mse": zero, "mean_mse": mean,
              "ratio": mse / zero if zero > 0 else float("nan"), "dm_p": dm["p_value"],
              "best_epoch": int(best_epoch), "n_val": int(len(y)), "skill_p": skill_p}
    record["verdict"] = skill_verdict(record, skill_p)
    return record
