"""The status page of a live run: ``GET /`` (HTML) and ``GET /status.json``, from the engine's
state, refreshed by the page itself every second as candles close."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bt-lstm live (paper)</title>
<style>body{font-family:sans-serif;margin:2em}td{padding:2px 10px}#curve{border:1px solid #ccc}
</style></head><body>
<h1>bt-lstm live paper trading: <span id="market"></span></h1>
<p>Paper trading only: no order reaches an exchange.</p>
<table>
<tr><td>latest candle</td><td id="candle">-</td></tr>
<tr><td>regime</td><td id="regime">-</td></tr>
<tr><td>forecast</td><td id="forecast">-</td></tr>
<tr><td>position</td><td id="position">-</td></tr>
<tr><td>equity</td><td id="equity">-</td></tr>
<tr><td>decided candles</td><td id="decided">-</td></tr>
<tr><td>feed</td><td id="feed">-</td></tr>
</table>
<canvas id="curve" width="600" height="200"></canvas>
<table id="markets"></table>
<table id="bus"></table>
<script>
"use strict";
const LABELS = {"-1": "unknown", "0": "bearish", "1": "sideways", "2": "bullish"};
function draw(points) {
  const cv = document.getElementById("curve"), g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  if (points.length < 2) return;
  const v = points.map(p => p[1]);
  const lo = Math.min(...v), hi = Math.max(...v), span = hi - lo || 1;
  g.beginPath();
  v.forEach((y, i) => {
    const px = i * (cv.width - 1) / (v.length - 1);
    const py = cv.height - 1 - (y - lo) / span * (cv.height - 2);
    if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
  });
  g.stroke();
}
function show(s) {
  const last = s.last_candle || {};
  document.getElementById("market").textContent = s.symbol + " " + s.timeframe;
  document.getElementById("candle").textContent = last.datetime || "-";
  document.getElementById("regime").textContent =
    last.regime === undefined ? "-" : last.regime + " (" + LABELS[String(last.regime)] + ")";
  document.getElementById("forecast").textContent =
    last.forecast === undefined || last.forecast === null ? "-" : last.forecast.toExponential(4);
  document.getElementById("position").textContent = String(s.position);
  document.getElementById("equity").textContent =
    last.value === undefined ? "-" : last.value.toFixed(2);
  document.getElementById("decided").textContent = String(s.decided);
  const f = s.feed;
  document.getElementById("feed").textContent = (f.connected ? "connected" : "disconnected") +
    ", reconnects " + f.reconnects + ", gaps " + f.gaps.length + ", ignored " + f.ignored +
    ", malformed " + f.malformed;
  draw(s.equity);
  rows("markets", ["market", "decided", "position"],
       (s.markets || []).map(m => [m.market, m.decided, m.position]));
  const bus = [];  // the decide role's page: length, pending and lag per stream and group
  Object.entries((s.bus || {}).streams || {}).forEach(([key, st]) =>
    Object.entries(st.groups).forEach(([g, v]) =>
      bus.push([key, st.length, g, v.consumers, v.pending, v.lag === null ? "?" : v.lag])));
  rows("bus", ["stream", "length", "group", "consumers", "pending", "lag"], bus);
}
function rows(id, head, data) {
  const t = document.getElementById(id);
  t.replaceChildren();
  if (!data.length) return;
  [head, ...data].forEach((r, i) => {
    const tr = t.insertRow();
    r.forEach(c => {
      const cell = document.createElement(i ? "td" : "th");
      cell.textContent = String(c);
      tr.appendChild(cell);
    });
  });
}
const INITIAL = __STATUS__;
show(INITIAL);
async function refresh() {
  try { const r = await fetch("/status.json"); if (r.ok) show(await r.json()); }
  catch (e) { document.getElementById("feed").textContent = "status page lost the run"; }
}
setInterval(refresh, 1000);
</script></body></html>
"""


class StatusServer:
    """A small threaded HTTP server; ``status()`` is read on every request."""

    def __init__(self, status: Callable[[], dict[str, Any]], port: int,
                 host: str = "127.0.0.1") -> None:
        get = status

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/status.json":
                    body, ctype = json.dumps(get(), default=str).encode(), "application/json"
                elif self.path in ("/", "/index.html"):
                    body = PAGE.replace("__STATUS__", json.dumps(get(), default=str)).encode()
                    ctype = "text/html; charset=utf-8"
                elif self.path == "/favicon.ico":
                    body, ctype = b"", "image/x-icon"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
