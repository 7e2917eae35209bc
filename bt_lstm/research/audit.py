"""Look-ahead audit of the whole learning pipeline, after freqtrade's lookahead-analysis.

At cut points spread over the data, every per-bar output (raw features, regime, scaled window,
forecast, trading signal) is recomputed on data truncated at the cut and compared with the
full-data value at the same bars. A causal pipeline gives the same numbers; anything that
peeks ahead (a negative shift, a centred window, full-sequence regime decoding) differs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.models.forecast import Forecaster
from bt_lstm.signals.windows import apply_scaler

# Tolerances of the comparison. Values computed in float64 must agree to RTOL; forecasts come
# from float32 inference, whose last bits move with the size of the batch a window is in, so
# they may differ by FORECAST_ATOL x the target's training scale (about 1e-7 in log return on
# BTCUSDT 4h). Any look-ahead moves values by orders of magnitude more.
RTOL = 1e-6
FORECAST_ATOL = 1e-5
WARMUP_HISTORIES = (200, 500, 1000, 2000)
WARMUP_FORECAST_TOL = 0.1  # |forecast drift| <= this x the strategy threshold


def audit_columns(frame: pd.DataFrame, forecaster: Forecaster, threshold: float,
                  long_only: bool = False) -> pd.DataFrame:
    """Every per-bar output of the pipeline on ``frame``, one column each.

    Computed through the same module functions the forecaster uses, so whatever the pipeline
    computes is what is audited.
    """
    raw = forecaster.raw_features(frame)  # (T, F): every feature group, plugins included
    scaled = apply_scaler(raw.to_numpy(), forecaster.scaler)  # (T, F)
    fc = forecaster.forecast_frame(frame)
    f = fc["forecast"].to_numpy()
    signal = np.where(f > threshold, 1, np.where((f < -threshold) & (not long_only), -1, 0))
    out = {f"feature:{c}": raw[c].to_numpy() for c in raw.columns}
    out.update({f"scaled:{c}": scaled[:, i] for i, c in enumerate(raw.columns)})
    out["regime"] = fc["regime"].to_numpy().astype(float)
    out["forecast"] = f
    out["signal"] = np.where(np.isnan(f), np.nan, signal)
    return pd.DataFrame(out, index=frame.index)


def _differs(a: np.ndarray, b: np.ndarray, atol: np.ndarray) -> np.ndarray:
    both_nan = np.isnan(a) & np.isnan(b)
    close = np.abs(a - b) <= atol + RTOL * np.abs(b)
    return ~(both_nan | close)


@dataclass
class AuditReport:
    """What differed, per cut and column; the warm-up drift at the last bar."""

    cuts: list[int]
    forecast_atol: float = 0.0
    differences: list[dict[str, Any]] = field(default_factory=list)
    warmup: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when no output at any cut changed with the bars after it."""
        return not self.differences

    def columns_differing(self) -> dict[str, int]:
        """Each differing column and at how many (cut, bar) points it differed."""
        out: dict[str, int] = {}
        for d in self.differences:
            out[d["column"]] = out.get(d["column"], 0) + 1
        return out


def choose_cuts(n_bars: int, first: int, n_cuts: int) -> list[int]:
    """``n_cuts`` bars spread evenly from ``first`` to the second-to-last bar."""
    last = n_bars - 2
    if last <= first:
        raise ValueError(f"too few bars to audit: {n_bars} (the first complete window ends at "
                         f"bar {first})")
    return sorted(set(np.linspace(first, last, n_cuts).round().astype(int).tolist()))


def run_audit(frame: pd.DataFrame, forecaster: Forecaster, threshold: float,
              long_only: bool = False, n_cuts: int = 20) -> AuditReport:
    """Compare truncated-data outputs with full-data outputs at ``n_cuts`` cut points.

    At each cut t the bars t-L+1..t (the model window ending at t) are compared in every
    column; each differing (cut, bar, column) is reported with both values.
    """
    # The networks' own forecasts are audited (policy "trade"): the skill guard's routing is
    # fixed per bundle, so it cannot leak, but a flat regime's zeros would hide a leak upstream.
    forecaster = forecaster.with_policy("trade", forecaster.skill_p)
    full = audit_columns(frame, forecaster, threshold, long_only)
    ready = np.flatnonzero(full["forecast"].notna().to_numpy())
    if not len(ready):
        raise ValueError("no bar has a forecast: too little data for the model's window")
    cuts = choose_cuts(len(frame), int(ready[0]), n_cuts)
    report = AuditReport(cuts, forecast_atol=FORECAST_ATOL * forecaster.scaler.target_scale)
    atol = np.where(full.columns == "forecast", report.forecast_atol, 1e-12)  # (C,)
    lookback = forecaster.lookback
    for t in cuts:
        cut = audit_columns(frame.iloc[:t + 1], forecaster, threshold, long_only)
        lo = max(0, t - lookback + 1)
        a = full.iloc[lo:t + 1]
        b = cut.iloc[lo:t + 1]
        mask = _differs(a.to_numpy(dtype=float), b.to_numpy(dtype=float), atol)  # (L, C)
        for i, j in zip(*np.nonzero(mask)):
            report.differences.append({
                "cut": str(frame.index[t]), "bar": str(a.index[i]), "column": a.columns[j],
                "full": float(a.iat[i, j]), "truncated": float(b.iat[i, j])})
    report.warmup = warmup_drift(frame, forecaster, threshold, long_only, full)
    return report


def warmup_drift(frame: pd.DataFrame, forecaster: Forecaster, threshold: float,
                 long_only: bool, full: pd.DataFrame) -> list[dict[str, Any]]:
    """Outputs at the last bar computed from only the last N bars, against all of history.

    Not look-ahead: recursive features (EMAs, Wilder averages) depend on where they start, so
    this measures how much history a live system needs before its forecasts settle.
    """
    last = full.iloc[-1]
    rows = []
    for n in WARMUP_HISTORIES:
        if n >= len(frame):
            continue
        short = audit_columns(frame.iloc[-n:], forecaster, threshold, long_only).iloc[-1]
        feats = [c for c in full.columns if c.startswith("feature:")]
        rel = max(abs(short[c] - last[c]) / max(abs(last[c]), 1e-12) for c in feats)
        drift = abs(short["forecast"] - last["forecast"])
        tol = WARMUP_FORECAST_TOL * threshold
        rows.append({"history_bars": n, "max_feature_rel_drift": float(rel),
                     "forecast_drift": float(drift), "forecast_tolerance": tol,
                     "same_signal": bool(short["signal"] == last["signal"]
                                         or (np.isnan(short["signal"])
                                             and np.isnan(last["signal"]))),
                     "within_tolerance": bool(drift <= tol)})
    return rows


def format_audit(report: AuditReport) -> str:
    """A terminal summary: verdict, differing columns, first differences, warm-up drift."""
    verdict = ("CLEAN: no output changed when later bars were removed" if report.clean
               else "LOOK-AHEAD FOUND")
    lines = [f"look-ahead audit: {len(report.cuts)} cut points, {verdict}",
             f"(tolerance: relative {RTOL:g}; forecasts, from float32 inference, also "
             f"absolute {report.forecast_atol:.1e})"]
    if not report.clean:
        lines.append(f"{'column':<28}{'differing values':>18}")
        for col, n in sorted(report.columns_differing().items()):
            lines.append(f"  {col:<26}{n:>18}")
        lines.append("first differences (cut, bar, column, full-data value, truncated value):")
        for d in report.differences[:10]:
            lines.append(f"  {d['cut']}  {d['bar']}  {d['column']}: {d['full']:.6g} vs "
                         f"{d['truncated']:.6g}")
    if report.warmup:
        lines += ["", "warm-up: last bar computed from only the last N bars vs all history",
                  f"{'N bars':>8}{'feature drift (rel)':>22}{'forecast drift':>16}"
                  f"{'tolerance':>11}{'same signal':>13}"]
        for w in report.warmup:
            lines.append(f"{w['history_bars']:>8}{w['max_feature_rel_drift']:>22.2e}"
                         f"{w['forecast_drift']:>16.2e}{w['forecast_tolerance']:>11.1e}"
                         f"{'yes' if w['same_signal'] else 'NO':>13}")
    return "\n".join(lines)
