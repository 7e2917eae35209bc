"""The skill map's page: one heatmap per market (cells x figures, coloured by plain CSS, no
scripts), the verdict and the links; and the columns of skillmap.csv."""
from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

COLUMNS = ("market", "features", "horizon", "target", "cell_id", "gap_bars", "folds", "n_bars",
           "mse", "zero_mse", "mse_ratio", "dm_t", "dm_p", "dm_p_holm", "ic", "ic_lo", "ic_hi",
           "dir_acc", "fold_models", "with_skill", "traded_models", "skill_share", "trades",
           "days", "sharpe", "psr", "dsr", "dsr_n", "dsr_var_source", "sr_pp", "skew", "kurt",
           "keeps_skill")

# column -> (heading, colour rule, number format); rules: ("div", centre, half-range, higher
# is better) or ("p", level): green at or below the level, white above it
HEAT: dict[str, tuple[str, tuple, str]] = {
    "mse_ratio": ("MSE / zero", ("div", 1.0, 0.05, False), ".4f"),
    "dm_t": ("DM t", ("div", 0.0, 3.0, False), ".2f"),
    "dm_p_holm": ("DM p (Holm)", ("p", 0.05), ".3g"),
    "ic": ("IC", ("div", 0.0, 0.1, True), ".3f"),
    "skill_share": ("fold models with skill", ("div", 0.0, 1.0, True), ".2f"),
    "sharpe": ("Sharpe after costs", ("div", 0.0, 2.0, True), ".2f"),
    "psr": ("PSR", ("div", 0.5, 0.5, True), ".3f"),
    "dsr": ("DSR", ("div", 0.5, 0.5, True), ".3f"),
}


def _colour(value: Any, rule: tuple) -> str:
    """Background of one heatmap square: green good, red bad, white neutral, grey missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "#e6e6e6"
    if rule[0] == "p":
        level = rule[1]
        if value > level:
            return "#ffffff"
        strength = 0.35 + 0.65 * min(1.0, math.log10(level / max(value, 1e-12)) / 3)
        return _mix(strength, good=True)
    _, centre, half, higher = rule
    x = max(-1.0, min(1.0, (value - centre) / half))
    return _mix(abs(x), good=(x > 0) == higher) if x else "#ffffff"


def _mix(strength: float, good: bool) -> str:
    target = (46, 160, 67) if good else (215, 58, 73)
    r, g, b = (round(255 + (t - 255) * strength) for t in target)
    return f"#{r:02x}{g:02x}{b:02x}"


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec) if isinstance(value, (int, float)) else html.escape(str(value))


def heatmap_html(table: pd.DataFrame) -> str:
    """One market's cells (rows) x figures (columns), each square coloured by its rule."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in HEAT.values())
    body = []
    for _, r in table.iterrows():
        cell = html.escape(f"{r['features']} · h{r['horizon']} · {r['target']}")
        mark = " ✔" if r["keeps_skill"] else ""
        squares = "".join(f"<td style='background:{_colour(r[k], rule)}'>{_fmt(r[k], f)}</td>"
                          for k, (_, rule, f) in HEAT.items())
        body.append(f"<tr><th class='cell'>{cell}{mark}</th>{squares}</tr>")
    return f"<table class='heat'><tr><th>cell</th>{head}</tr>{''.join(body)}</table>"


def skillmap_html(metrics: dict[str, Any], table: pd.DataFrame) -> str:
    """The self-contained page of a skill map run."""
    esc = html.escape
    wf = metrics["walk_forward"]
    maps = "".join(f"<h2>{esc(str(m))}</h2>{heatmap_html(part)}"
                   for m, part in table.groupby("market", sort=False))
    links = " | ".join(f"<a href='{f}'>{f}</a>" for f in
                       ("skillmap.csv", "metrics.json", "config.json", "manifest.json",
                        "cells/index.html"))
    rule = metrics["rule"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(metrics['run_id'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:4px 9px}}
td{{text-align:right;min-width:5em}}th.cell{{text-align:left;white-space:nowrap}}
.verdict{{font-size:15px;padding:.6em 1em;border-left:5px solid #555;background:#f4f4f4}}
</style></head><body>
<h1>Skill map: {esc(metrics['dataset'])} {esc(str(metrics['timeframe']))}</h1>
<p class="verdict">{esc(metrics['verdict'])}</p>
<p>{metrics['n_cells']} cells, each a walk-forward ({esc(wf['mode'])}, {wf['train_bars']}
training bars, {wf['test_bars']} test bars per fold; markets {esc(metrics['panel'])}), scored
out of sample after costs (commission {metrics['costs']['commission']}, slippage
{metrics['costs']['slippage']}). DM p: one-sided Diebold–Mariano p-value of "smaller squared
error than the zero forecast", Holm-corrected over all {metrics['n_cells']} cells; DSR: deflated
Sharpe ratio with N = {rule['dsr_n_trials']}. A cell keeps skill (✔) when MSE / zero &lt; 1,
DM p (Holm) ≤ {rule['alpha']:g} and DSR &gt; {rule['dsr_level']:g}. Green is better, red
worse, grey: no value (e.g. every model kept flat).</p>
<p>{links}</p>
{maps}
</body></html>
"""
