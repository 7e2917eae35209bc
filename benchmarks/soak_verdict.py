"""The soak's verdict: every closed candle decided exactly once, the decisions and fills equal a
single-process replay's byte for byte, latency apart for the recovery windows, recovery time
per chaos event, RSS per role, stream lengths against the retention."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np

from bt_lstm.config import StrategyConfig
from bt_lstm.live.engine import LiveEngine, LocalForecasts
from bt_lstm.live.klines import Warmup, timeframe_ms
from bt_lstm.live.state import LiveState

STREAM_NODE = 100  # redis' stream-node-max-entries: MAXLEN ~ keeps at most this many extra


def decided_rows(pg_url: str) -> dict[str, list[tuple[int, int]]]:
    """Per symbol: (open_ms, bar) of every committed decision, in open-time order."""
    import psycopg

    out: dict[str, list[tuple[int, int]]] = {}
    with psycopg.connect(pg_url, connect_timeout=10) as conn:
        for symbol, t, bar in conn.execute(
                "SELECT symbol, open_ms, bar FROM decisions ORDER BY symbol, open_ms"):
            out.setdefault(symbol, []).append((int(t), int(bar)))
    return out


def count_check(expected: list[int], decided: dict[str, list[tuple[int, int]]],
                symbols: list[str]) -> dict:
    """Lost (closed, no decision), doubled (a bar number twice, or out of sequence) and extra
    (a decision for a candle never closed) per market, summed."""
    want = set(expected)
    bad: dict[str, dict] = {}
    for s in symbols:
        rows = decided.get(s, [])
        got = [t for t, _ in rows]
        lost = sorted(want - set(got))
        extra = sorted(set(got) - want)
        doubled = len(got) - len(set(got)) + sum(b != k for k, (_, b) in enumerate(rows))
        if lost or extra or doubled:
            bad[s] = {"lost": lost[:5], "n_lost": len(lost), "extra": extra[:5],
                      "n_extra": len(extra), "doubled": doubled}
    return {"markets": len(symbols), "closed_per_market": len(expected),
            "decisions": sum(len(decided.get(s, [])) for s in symbols),
            "lost": sum(b["n_lost"] for b in bad.values()),
            "extra": sum(b["n_extra"] for b in bad.values()),
            "doubled": sum(b["doubled"] for b in bad.values()), "bad_markets": bad}


def single_process(markets: dict[str, list], first: int, end: int, fc, history: int,
                   folder: Path, strategy: StrategyConfig, timeframe: str) -> None:
    """The in-process engine (``LiveEngine`` on a SQLite state folder per market) over the same
    candles: candles ``first - history .. first`` as history, then ``first .. end`` decided,
    each forecast by the same Forecaster on its last ``history`` candles (the forecasts of one
    candle index across markets computed in one ``forecast_last_many`` call: the bus engine's
    batching, equal to one call per window, see tests/test_soak.py)."""
    symbols = sorted(markets)
    table: dict[str, dict[int, tuple]] = {s: {} for s in symbols}
    lf = LocalForecasts(fc)
    for j in range(first, end):
        got = lf.many([markets[s][j - history + 1:j + 1] for s in symbols])
        for s, f in zip(symbols, got):
            table[s][markets[s][j][0]] = f
    bar = timeframe_ms(timeframe)
    for s in symbols:
        # the warm-up stored in one transaction (as history candles taken one by one would
        # be, without a commit each: the engine reads it back as its history)
        state = LiveState(folder / s, s, timeframe)
        state.add_history(markets[s][first - history:first])
        state.close()
        eng = LiveEngine(lambda h, t=table[s]: t[h[-1][0]], strategy, s, timeframe, folder / s,
                         Warmup(first_ready=0, history=history), bar, status_each_commit=False)
        eng.set_first(markets[s][first][0])
        for c in markets[s][first:end]:
            eng.on_closed(c)
        eng.close()


def byte_check(pg_url: str, markets: dict[str, list], first: int, end: int, fc, history: int,
               strategy: StrategyConfig, timeframe: str, scratch: Path | None = None) -> dict:
    """decisions.csv and fills.csv of every market exported from the PostgreSQL state, against
    the single-process replay's, byte for byte."""
    from bt_lstm.live.run import export_pg_state

    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        root = Path(tmp)
        export_pg_state(pg_url, root / "bus", strategy)
        single_process(markets, first, end, fc, history, root / "single", strategy, timeframe)
        differ, fills = {}, 0
        for s in sorted(markets):
            for name in ("decisions.csv", "fills.csv"):
                a = root / "bus" / f"{s}_{timeframe}" / name
                b = root / "single" / s / name
                got = a.read_bytes() if a.exists() else b""
                want = b.read_bytes()
                if got != want:
                    differ.setdefault(s, []).append(name + _first_diff(got, want))
            fills += max(len((root / "single" / s / "fills.csv").read_text().splitlines()) - 1,
                         0)
    return {"compared": len(markets), "different": len(differ), "fills_compared": fills,
            "differences": dict(list(differ.items())[:10])}


def _first_diff(a: bytes, b: bytes) -> str:
    la, lb = a.decode().splitlines(), b.decode().splitlines()
    for k, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return f" line {k + 1}: bus {x!r} vs single {y!r}"
    return f": {len(la)} lines vs {len(lb)}"


def read_latencies(files: list[Path]) -> list[list]:
    """Every decide incarnation's latency lines ``[symbol, tf, open_ms, xadd, commit]`` (a
    line cut by a kill is skipped)."""
    rows = []
    for f in files:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _stats(ms: np.ndarray) -> dict:
    if not len(ms):
        return {"n": 0}
    return {"n": int(len(ms)), "median_ms": round(float(np.median(ms)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}


def latency_check(rows: list[list], close_times: dict[int, float], events: list[dict],
                  target_ms: float, end_time: float, start_time: float | None = None) -> dict:
    """Latency candle close -> committed decision, outside and inside the recovery windows;
    the recovery time of every chaos event (kills, the Redis restart, feed drops).

    After an event at time K the pipeline has recovered at the first candle close after K
    whose candles were all decided within the recovery threshold: ``target_ms``, or twice the
    run's median of the slowest market per close where that is higher (the steady state of a
    busy machine); recovery time = that close's last commit - K. Candles closed from 1 s
    before K until then are the event's recovery window.
    """
    per_tick: dict[int, list[float]] = {}
    for _, _, t, _, done in rows:
        if t in close_times:
            per_tick.setdefault(t, []).append(done)
    ticks = sorted(per_tick, key=lambda t: close_times[t])
    closes = np.array([close_times[t] for t in ticks])
    worst = np.array([(max(per_tick[t]) - close_times[t]) * 1000 for t in ticks])
    last = np.array([max(per_tick[t]) for t in ticks])
    steady = float(np.median(worst)) if len(worst) else 0.0
    threshold = max(target_ms, 2 * steady)
    windows = []
    start_s = None
    if start_time is not None:
        first = np.nonzero(worst <= threshold)[0]
        if len(first):
            start_s = round(float(last[first[0]] - start_time), 3)
            windows.append((start_time - 1.0, float(closes[first[0]])))
    events = sorted(events, key=lambda e: e["time"])
    for k, ev in enumerate(events):
        kt = ev["time"]
        nxt = events[k + 1]["time"] if k + 1 < len(events) else end_time
        after = np.nonzero((closes >= kt) & (worst <= threshold))[0]
        if len(after) and closes[after[0]] < nxt:
            i = after[0]
            ev["recovery_s"] = round(float(last[i] - kt), 3)
            ev["recovered"] = True
            windows.append((kt - 1.0, float(closes[i])))
        else:
            ev["recovery_s"] = round(float(nxt - kt), 3)
            ev["recovered"] = False
            windows.append((kt - 1.0, nxt))
    inside = np.zeros(len(rows), dtype=bool)
    lat = np.full(len(rows), np.nan)
    for n, (_, _, t, _, done) in enumerate(rows):
        if t in close_times:
            lat[n] = (done - close_times[t]) * 1000
            c = close_times[t]
            inside[n] = any(a <= c < b for a, b in windows)
    ok = ~np.isnan(lat)
    bus = np.array([(done - xadd) * 1000 for *_, xadd, done in rows])
    rec = [e["recovery_s"] for e in events]
    return {"outside_recovery": _stats(lat[ok & ~inside]),
            "inside_recovery": _stats(lat[ok & inside]),
            "all": _stats(lat[ok]), "xadd_to_commit_all": _stats(bus),
            "start_s": start_s, "steady_worst_median_ms": round(steady, 1),
            "recovery_threshold_ms": round(threshold, 1),
            "recovery_s": {"max": max(rec) if rec else None,
                           "median": float(np.median(rec)) if rec else None,
                           "not_recovered": sum(not e["recovered"] for e in events)},
            "series": {"close": [round(float(c), 3) for c in closes],
                       "worst_ms": [round(float(w), 1) for w in worst]}}


def rss_check(roles: dict, min_life_s: float = 60.0, settle_s: float = 30.0) -> dict:
    """RSS at start (``settle_s`` after it started: imports, bundles and caches filled) and
    at end of every incarnation of every role; growth of those measured over ``min_life_s``
    or more."""
    out = {}
    for name, lives in roles.items():
        rows = []
        for life in lives:
            rss = life["rss"]
            if not rss:
                continue
            settled = [r for r in rss if r[0] >= life["start"] + settle_s] or rss[-1:]
            start, end = settled[0], rss[-1]
            span = end[0] - start[0]
            growth = (end[1] / start[1] - 1) * 100 if span >= min_life_s else None
            rows.append({"pid": life["pid"], "lived_s": round(span + settle_s, 1),
                         "start_mb": start[1], "end_mb": end[1],
                         "growth_pct": None if growth is None else round(growth, 2)})
        grown = [r["growth_pct"] for r in rows if r["growth_pct"] is not None]
        out[name] = {"incarnations": rows, "max_growth_pct": max(grown) if grown else None}
    return out


def stream_check(lengths: dict[str, int], retention: str) -> dict:
    """Every stream's length at the end against ``--retention`` (MAXLEN ~ n keeps at most n
    plus one node of entries)."""
    from bt_lstm.live.bus import parse_retention

    kind, n = parse_retention(retention)
    longest = max(lengths.values()) if lengths else 0
    bound = n + STREAM_NODE if kind == "maxlen" else math.inf
    over = {k: v for k, v in lengths.items() if v > bound}
    return {"retention": retention, "bound": bound if bound != math.inf else None,
            "streams": len(lengths), "longest": longest,
            "over_bound": dict(list(over.items())[:10]), "n_over_bound": len(over)}
