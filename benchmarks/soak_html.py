"""The soak's page: latency over time with the chaos events marked, stream lengths, RSS per
role (plotly; plotly.min.js written beside the page, so it opens offline)."""
from __future__ import annotations

import html
import json
from pathlib import Path

from bt_lstm.data.files import atomic_write_text

COLOURS = {"kill": "#d62728", "redis": "#9467bd", "drop": "#ff7f0e"}


def _latency_figure(out: dict):
    import plotly.graph_objects as go

    t0 = out["samples"]["time"][0] if out["samples"]["time"] else 0.0
    ser = out["latency"]["series"]
    fig = go.Figure(go.Scattergl(x=[c - t0 for c in ser["close"]], y=ser["worst_ms"],
                                 mode="markers", marker={"size": 4},
                                 name="slowest market of each candle close"))
    for ev in out["events"]:
        x = ev["time"] - t0
        fig.add_vline(x=x, line={"color": COLOURS[ev["kind"]], "dash": "dot"})
        fig.add_annotation(x=x, y=1, yref="paper", text=ev["target"], showarrow=False,
                           textangle=-90, font={"size": 9, "color": COLOURS[ev["kind"]]})
    fig.add_hline(y=out["targets"]["p99_ms"], line={"color": "grey"})
    fig.update_layout(title="candle close -> committed decision (ms), slowest market per close;"
                            " dotted: kills (red), Redis restart (purple), feed drops (orange)",
                      xaxis_title="seconds", yaxis_title="ms", yaxis_type="log", height=420)
    return fig


def _streams_figure(out: dict):
    import plotly.graph_objects as go

    s = out["samples"]
    t0 = s["time"][0] if s["time"] else 0.0
    x = [t - t0 for t in s["time"]]
    fig = go.Figure()
    for key, name in (("candles_max", "candles: longest stream"),
                      ("candles_min", "candles: shortest stream"),
                      ("forecasts_max", "forecasts: longest stream")):
        fig.add_trace(go.Scatter(x=x, y=s[key], mode="lines", name=name))
    if out["streams"]["bound"]:
        fig.add_hline(y=out["streams"]["bound"], line={"color": "grey", "dash": "dash"})
    fig.update_layout(title=f"stream lengths (entries); dashed: the bound of --retention "
                            f"{out['streams']['retention']}", xaxis_title="seconds", height=360)
    return fig


def _rss_figure(out: dict, roles: dict):
    import plotly.graph_objects as go

    s = out["samples"]
    t0 = s["time"][0] if s["time"] else 0.0
    fig = go.Figure()
    for name, lives in sorted(roles.items()):
        for k, life in enumerate(lives):
            if life["rss"]:
                fig.add_trace(go.Scatter(x=[t - t0 for t, _ in life["rss"]],
                                         y=[m for _, m in life["rss"]], mode="lines",
                                         name=f"{name} #{k}", legendgroup=name))
    for key, name in (("redis_mb", "redis-server"), ("feed_mb", "soak + feed")):
        fig.add_trace(go.Scatter(x=[t - t0 for t in s["time"]], y=s[key], mode="lines",
                                 name=name))
    fig.update_layout(title="RSS per process (MB); a kill starts a new line", height=420,
                      xaxis_title="seconds")
    return fig


def write_html(out: dict, folder: Path) -> Path:
    """``folder/index.html`` (and ``plotly.min.js``) of the verdict ``out``."""
    from plotly.offline import get_plotlyjs

    js = folder / "plotly.min.js"
    if not js.exists():
        atomic_write_text(js, get_plotlyjs())
    figs = [_latency_figure(out), _streams_figure(out), _rss_figure(out, out.get("rss_series", {}))]
    verdict = {k: out[k] for k in ("ok", "drained", "counts", "byte_for_byte", "targets")}
    lat = {k: out["latency"][k] for k in ("outside_recovery", "inside_recovery", "recovery_s")}
    body = "".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figs)
    events = "".join(f"<tr><td>{e['at_s']}</td><td>{e['kind']}</td><td>{e['target']}</td>"
                     f"<td>{e.get('recovery_s')}</td></tr>" for e in out["events"])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>bus soak</title>"
            f"<script src='plotly.min.js'></script></head><body style='font-family:sans-serif'>"
            f"<h1>Live bus chaos soak: {'PASS' if out['ok'] else 'FAIL'}</h1>"
            f"<pre>{html.escape(json.dumps(verdict, indent=1))}</pre>"
            f"<pre>{html.escape(json.dumps(lat, indent=1))}</pre>{body}"
            f"<h2>events</h2><table><tr><th>s</th><th>kind</th><th>target</th>"
            f"<th>recovery s</th></tr>{events}</table></body></html>")
    path = folder / "index.html"
    atomic_write_text(path, page)
    return path
