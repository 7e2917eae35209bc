"""The skill map's grid and its scoring: which cells (feature set x horizon x target x market)
show out-of-sample skill, and which keep it once every cell tried is accounted for.

Pure: grid text in, cells out; one cell's out-of-sample forecasts and daily returns in, one
row of figures out; all rows in, the corrected verdict out. The walk-forward of each cell is
the job's (``bt_lstm.jobs.skillmap``).
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from bt_lstm.config import ConfigError, PipelineConfig, replace, split_feature_spec
from bt_lstm.research.scoring import diebold_mariano, forecast_scores
from bt_lstm.research.stats import (
    bootstrap_interval,
    deflated_sharpe,
    holm_adjust,
    probabilistic_sharpe,
    return_moments,
)

# A cell keeps its skill when its forecasts beat the zero forecast with a one-sided
# Diebold–Mariano p-value at most ALPHA after Holm's correction over every cell tried, and its
# after-cost trading keeps a deflated Sharpe ratio above DSR_LEVEL with N = every cell tried.
ALPHA = 0.05
DSR_LEVEL = 0.95
IC_REPS = 500  # bootstrap draws of the information coefficient's interval


@dataclass(frozen=True)
class Cell:
    """One cell of the map: a feature set, a horizon in bars, a target and a market."""

    features: tuple[str, ...]
    horizon: int
    target: str
    market: str

    @property
    def feature_label(self) -> str:
        """The feature set as typed: ``price,calendar``."""
        return ",".join(self.features)

    @property
    def label(self) -> str:
        """The cell in words, without the market: ``price,calendar h3 logret``."""
        return f"{self.feature_label} h{self.horizon} {self.target}"

    @property
    def cell_id(self) -> str:
        """A folder name for the cell, the same in every run of the same grid."""
        text = f"{'+'.join(self.features)}_h{self.horizon}_{self.target}_{self.market}"
        slug = re.sub(r"[^A-Za-z0-9+._-]", "-", text)
        if slug != text or len(slug) > 80:  # plugin paths: keep them apart by a hash
            digest = hashlib.sha256(text.encode()).hexdigest()[:8]
            slug = f"{slug[:70]}-{digest}"
        return slug


def parse_feature_sets(text: str) -> tuple[tuple[str, ...], ...]:
    """``"price;price,calendar"`` -> ``(("price",), ("price", "calendar"))``.

    Raises
    ------
    ValueError
        An empty set, an entry ``--features`` would refuse (an unknown group, a repeat), or a
        set given twice.

    Examples
    --------
    >>> parse_feature_sets("price; price,calendar")
    (('price',), ('price', 'calendar'))
    """
    sets = []
    for part in str(text).split(";"):
        groups = tuple(g.strip() for g in part.split(",") if g.strip())
        if not groups:
            raise ValueError(f"--grid-features {text!r}: an empty feature set; separate sets "
                             f"with ';' and groups with ',', e.g. \"price;price,calendar\"")
        try:
            split_feature_spec(",".join(groups))
        except ValueError as exc:
            raise ValueError(f"--grid-features {text!r}: {exc}") from None
        if groups in sets:
            raise ValueError(f"--grid-features {text!r}: the set {','.join(groups)} is given "
                             f"twice")
        sets.append(groups)
    return tuple(sets)


def parse_horizons(text: str) -> tuple[int, ...]:
    """``"1,3,6"`` -> ``(1, 3, 6)``: whole numbers of bars >= 1, without repeats.

    Examples
    --------
    >>> parse_horizons("1, 3,6")
    (1, 3, 6)
    """
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    if not values or not all(v.isdigit() and int(v) >= 1 for v in values):
        raise ValueError(f"--horizons {text!r}: expected comma-separated whole numbers of bars "
                         f">= 1, e.g. --horizons 1,3,6")
    out = tuple(int(v) for v in values)
    if len(set(out)) != len(out):
        raise ValueError(f"--horizons {text!r}: a horizon is given twice")
    return out


def parse_targets(text: str) -> tuple[str, ...]:
    """``"logret,vol-scaled"`` -> ``("logret", "vol-scaled")``, checked by the config."""
    values = tuple(v.strip() for v in str(text).split(",") if v.strip())
    if not values or len(set(values)) != len(values):
        raise ValueError(f"--targets {text!r}: expected comma-separated targets without "
                         f"repeats, e.g. --targets logret,vol-scaled")
    return values


def make_grid(feature_sets: tuple[tuple[str, ...], ...], horizons: tuple[int, ...],
              targets: tuple[str, ...], markets: list[str]) -> list[Cell]:
    """Every cell, market by market, then feature set, horizon, target (the order of the map)."""
    if len(set(markets)) != len(markets):
        raise ValueError(f"the same market is given twice: {', '.join(markets)}")
    return [Cell(f, h, t, m) for m in markets for f in feature_sets for h in horizons
            for t in targets]


def cell_config(cfg: PipelineConfig, cell: Cell, n_trials: int) -> tuple[PipelineConfig, bool]:
    """The run's config with the cell's features, horizon and target, the purge gap raised to
    at least the horizon, and N (the deflated Sharpe's trials) = ``n_trials``.

    Returns
    -------
    The cell's config, and whether the gap had to be raised.

    Raises
    ------
    ValueError
        A feature group or target the config refuses, named as the grid flag.
    """
    gap = max(cfg.windows.gap_bars, cell.horizon)
    names, groups = split_feature_spec(cell.feature_label)  # price names pick its columns
    try:
        features = replace(cfg.features, groups=groups, **({"names": names} if names else {}))
    except ConfigError as exc:
        raise ValueError(f"--grid-features {cell.feature_label}: {exc.value!r} is not a "
                         f"feature group: expected {exc.allowed}") from None
    try:
        windows = replace(cfg.windows, horizon=cell.horizon, gap_bars=gap, target=cell.target)
    except ConfigError as exc:
        flag = "--targets" if exc.name == "target" else "--horizons"
        raise ValueError(f"{flag}: {exc.value!r} is invalid: expected {exc.allowed}") from None
    provenance = replace(cfg.provenance, n_trials=n_trials, origin="declared", study=None)
    out = replace(cfg, features=features, windows=windows, provenance=provenance)
    return out, gap != cfg.windows.gap_bars


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def forecast_figures(forecast: np.ndarray, realised: np.ndarray, horizon: int,
                     seed: int) -> dict[str, Any]:
    """Out-of-sample forecast figures of one cell, beside the zero forecast.

    ``mse_ratio``: MSE / zero-forecast MSE (below 1 beats zero); ``dm_t``, ``dm_p``: the
    Diebold–Mariano statistic and its one-sided p-value of "smaller loss than zero" (long-run
    variance over ``horizon`` - 1 lags, the targets overlap); ``ic``: Spearman rank
    correlation of forecast and realised, with a stationary block-bootstrap 95 % interval
    (``ic_lo``, ``ic_hi``; NaN when the forecast never varies, e.g. every model kept flat).
    """
    f = np.asarray(forecast, dtype=float)
    r = np.asarray(realised, dtype=float)
    ok = np.isfinite(f) & np.isfinite(r)
    f, r = f[ok], r[ok]
    sc = forecast_scores(f, r)
    dm = diebold_mariano(f - r, r, alternative="less", horizon=horizon)
    ic = _spearman(f, r) if len(f) > 2 else float("nan")
    lo, hi = ((float("nan"), float("nan")) if not np.isfinite(ic)
              else bootstrap_interval(_spearman, f, r, seed=seed, reps=IC_REPS))
    zero = sc["zero_mse"]
    return {"n_bars": sc["n"], "mse": sc["mse"], "zero_mse": zero,
            "mse_ratio": sc["mse"] / zero if zero and np.isfinite(zero) else float("nan"),
            "dm_t": dm["dm"], "dm_p": dm["p_value"], "ic": ic, "ic_lo": lo, "ic_hi": hi,
            "dir_acc": sc["dir_acc"]}


def trading_figures(daily_returns: np.ndarray, periods: int) -> dict[str, Any]:
    """After-cost daily returns of the stitched backtest: annualised Sharpe, PSR against 0 and
    the per-period moments the deflated Sharpe needs later (``sr_pp``, ``skew``, ``kurt``)."""
    m = return_moments(np.asarray(daily_returns, dtype=float))
    psr = probabilistic_sharpe(m["sharpe"], m["n"], m["skewness"], m["kurtosis"])
    return {"days": m["n"], "sharpe": m["sharpe"] * math.sqrt(periods), "psr": psr,
            "sr_pp": m["sharpe"], "skew": m["skewness"], "kurt": m["kurtosis"]}


def trials_variance(rows: list[dict[str, Any]]) -> tuple[float | None, str]:
    """Variance of the per-period Sharpes of the cells that traded (at least two), else None:
    the deflated Sharpe then takes the sampling variance of a zero Sharpe."""
    sr = np.array([r["sr_pp"] for r in rows], dtype=float)
    sr = sr[np.isfinite(sr)]
    if len(sr) >= 2:
        return float(np.var(sr, ddof=1)), f"the {len(sr)} trading cells' Sharpes"
    return None, "null: sampling variance 1/(n-1)"


def correct_rows(rows: list[dict[str, Any]], alpha: float = ALPHA,
                 dsr_level: float = DSR_LEVEL) -> list[dict[str, Any]]:
    """Each row with ``dm_p_holm`` (Holm over every row), ``dsr`` with N = every row,
    ``dsr_n`` and ``keeps_skill`` (MSE below zero's, ``dm_p_holm`` <= ``alpha`` and ``dsr`` >
    ``dsr_level``). Rows are not changed; new dicts are returned in the same order."""
    n = len(rows)
    holm = holm_adjust(np.array([r["dm_p"] for r in rows], dtype=float))
    var, source = trials_variance(rows)
    out = []
    for row, p_holm in zip(rows, holm):
        days = int(row["days"])
        v = var if var is not None else (1.0 / (days - 1) if days > 1 else 0.0)
        dsr, _ = deflated_sharpe(row["sr_pp"], days, row["skew"], row["kurt"], n, v)
        keeps = bool(row["mse_ratio"] < 1.0 and p_holm <= alpha and dsr > dsr_level)
        out.append({**row, "dm_p_holm": float(p_holm), "dsr": dsr, "dsr_n": n,
                    "dsr_var_source": source, "keeps_skill": keeps})
    return out


def verdict(rows: list[dict[str, Any]], alpha: float = ALPHA,
            dsr_level: float = DSR_LEVEL) -> str:
    """One paragraph naming the cells that keep skill after the correction, or saying that
    none did; ``rows`` from :func:`correct_rows`."""
    rule = (f"forecast MSE below the zero forecast's with a one-sided Diebold–Mariano p ≤ "
            f"{alpha:g} after Holm's correction over all {len(rows)} cells, and a deflated "
            f"Sharpe ratio (N = {len(rows)}) above {dsr_level:g} after costs")
    keep = [r for r in rows if r["keeps_skill"]]
    if not keep:
        near = [r for r in rows if r["dm_p_holm"] <= alpha and r["mse_ratio"] < 1.0]
        tail = (f" {len(near)} cell(s) beat the zero forecast after the correction but did not "
                f"trade well enough: {_names(near)}." if near else "")
        return f"No cell keeps skill after the correction ({rule}).{tail}"
    return (f"{len(keep)} of {len(rows)} cells keep skill after the correction ({rule}): "
            f"{_names(keep)}.")


def _names(rows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{r['features']} h{r['horizon']} {r['target']} on {r['market']}"
                     for r in rows)
