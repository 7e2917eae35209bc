"""Live paper trading: replayed candles through runners/live.py decide exactly as the backtest.

The central test replays the test span of a main-job run (tiny models, --no-skill trade so they
trade) and compares regime, forecast, signal, position, equity and every fill with the
backtest's bars.csv and fills.csv; again with every replay fault on, after a kill and restart,
and through the model server.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, REPO, TINY_FLAGS, need_chromium

from bt_lstm.data.candles import load_ohlcv
from bt_lstm.live.klines import KlineError, candles_of, parse_ws_message
from bt_lstm.live.replay import FAULTS, ReplayConfig, ReplayServer
from bt_lstm.models.forecast import load_forecaster
from bt_lstm.research.audit import FORECAST_ATOL, RTOL
from runners import backtest as backtest_runner
from runners import live as live_runner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, market):
    """A main-job run on the synthetic market: its bars.csv, fills.csv, bundle and candles."""
    return make_run(tmp_path_factory.mktemp("mainjob"), market)


def make_run(root: Path, market, *flags: str) -> dict:
    csv = root / "candles.csv"
    frame = market.frame.copy()
    frame.index = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(csv, index_label="timestamp")
    rc = backtest_runner.main(["--csv", str(csv), *TINY_FLAGS, "--models-dir",
                               str(root / "models"), "--reports-dir", str(root / "reports"),
                               "--no-skill", "trade", "--no-tearsheet", *flags])
    assert rc == 0
    report = next((root / "reports").glob("backtest_*/latest"))  # the run folder
    bundle = next(p.parent for p in (root / "models").rglob("manifest.json"))
    bars = pd.read_csv(report / "bars.csv", index_col=0, parse_dates=True)
    fills = pd.read_csv(report / "fills.csv", parse_dates=["datetime"])
    candles = load_ohlcv(csv)
    assert len(fills) > 5, "the parity test needs trades"
    return {"root": root, "csv": csv, "bundle": bundle, "bars": bars, "fills": fills,
            "candles": candles, "start": int(candles.index.get_loc(bars.index[0]))}


class Replay:
    """The replay server in a thread of its own (its own event loop)."""

    def __init__(self, run: dict, faults: tuple = (), speed: float = 60.0, others=None,
                 **kw) -> None:
        self.server = ReplayServer(candles_of(run["candles"]), ReplayConfig(
            "BTCUSDT", "4h", 4 * 3_600_000, run["start"], speed=speed, faults=faults,
            fault_every=kw.pop("fault_every", 20), **kw), others=others)
        ready: dict = {}
        started = threading.Event()

        def go() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            self.stop = asyncio.Event()
            fut = loop.create_future()
            ready["fut"] = fut
            started.set()
            try:
                loop.run_until_complete(self.server.serve_forever("127.0.0.1", 0, fut, self.stop))
            finally:
                loop.close()

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()
        started.wait(10)
        for _ in range(200):
            if self.server.port:
                break
            time.sleep(0.02)
        self.port = self.server.port

    def urls(self) -> list[str]:
        return ["--ws-url", f"ws://127.0.0.1:{self.port}",
                "--rest-url", f"http://127.0.0.1:{self.port}"]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def live_args(run: dict, state: Path, replay: Replay, source: list[str] | None = None) -> list:
    return ["--symbol", "BTCUSDT", "--timeframe", "4h",
            *(source or ["--models", str(run["bundle"])]), *replay.urls(),
            "--state", str(state), "--stop-after", str(len(run["bars"])), "--no-skill", "trade",
            "--backoff", "0.05", "--quiet"]


def assert_parity(run: dict, state: Path) -> None:
    bars, fills = run["bars"], run["fills"]
    live = pd.read_csv(state / "decisions.csv", index_col=0, parse_dates=True)
    assert list(live.columns) == list(bars.columns)
    assert live.index.is_unique
    assert list(live.index) == list(bars.index), "a candle skipped, repeated or extra"
    assert (live["bar"].to_numpy() == bars["bar"].to_numpy()).all()
    assert (live["regime"].to_numpy() == bars["regime"].to_numpy()).all()
    assert (live["signal"].to_numpy() == bars["signal"].to_numpy()).all()
    assert (live["model"].fillna("").to_numpy() == bars["model"].fillna("").to_numpy()).all()
    scale = load_forecaster(run["bundle"]).scaler.target_scale
    f_live, f_bt = live["forecast"].to_numpy(), bars["forecast"].to_numpy()
    assert (np.isnan(f_live) == np.isnan(f_bt)).all()
    ok = ~np.isnan(f_bt)
    np.testing.assert_allclose(f_live[ok], f_bt[ok], rtol=RTOL, atol=FORECAST_ATOL * scale)
    np.testing.assert_allclose(live["position"], bars["position"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(live["value"], bars["value"], rtol=1e-9)
    lf = pd.read_csv(state / "fills.csv", parse_dates=["datetime"])
    assert list(lf.columns) == list(fills.columns)
    assert list(lf["datetime"]) == list(fills["datetime"])
    assert (lf["bar"].to_numpy() == fills["bar"].to_numpy()).all()
    for col in ("size", "price", "commission"):
        np.testing.assert_allclose(lf[col], fills[col], rtol=1e-9, err_msg=col)
    status = json.loads((state / "status.json").read_text())
    assert status["decided"] == len(bars) and status["paper_trading_only"]


def test_live_replay_matches_the_backtest(main_run, tmp_path):
    replay = Replay(main_run)
    try:
        assert live_runner.main(live_args(main_run, tmp_path / "state", replay)) == 0
    finally:
        replay.close()
    assert_parity(main_run, tmp_path / "state")


def test_live_replay_matches_the_backtest_with_calendar_and_daily_features(market, tmp_path):
    """A non-default feature set: the live engine rebuilds calendar and completed-1d-candle
    features from its bounded history (its warm-up counted in days) as the backtest did."""
    (tmp_path / "run").mkdir()
    run = make_run(tmp_path / "run", market, "--features", "price,calendar,htf:1d",
                   "--threshold", "0.003")  # its tiny models forecast about 0.003 throughout
    fc = load_forecaster(run["bundle"])
    assert fc.feature_cfg.groups == ("price", "calendar", "htf:1d") and fc.bar_ms == 14_400_000
    assert len(fc.columns) == 18 and fc.columns[-1] == "htf:1d:volume_z"
    replay = Replay(run)
    try:
        assert live_runner.main([*live_args(run, tmp_path / "state", replay),
                                 "--threshold", "0.003"]) == 0
    finally:
        replay.close()
    assert_parity(run, tmp_path / "state")


def test_live_refuses_a_cross_market_bundle_in_one_line(main_run, tmp_path, capsys):
    from bt_lstm.live.klines import bundle_warmup

    fc = load_forecaster(main_run["bundle"])
    fc.feature_cfg = fc.feature_cfg.__class__(groups=("price", "cross:ETHUSDT"))
    with pytest.raises(ValueError, match="cross:ETHUSDT needs another market's candles"):
        bundle_warmup(fc)


def test_every_fault_on_gives_the_same_decisions(main_run, tmp_path):
    replay = Replay(main_run, faults=FAULTS, fault_every=20)
    try:
        assert live_runner.main(live_args(main_run, tmp_path / "state", replay)) == 0
        faults = dict(replay.server.stats.faults)
    finally:
        replay.close()
    assert set(faults) == set(FAULTS), faults
    assert_parity(main_run, tmp_path / "state")


def test_kill_and_restart_neither_repeats_nor_skips(main_run, tmp_path):
    replay = Replay(main_run, speed=15.0)
    state = tmp_path / "state"
    cmd = [sys.executable, str(REPO / "runners" / "live.py"), *live_args(main_run, state, replay)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            d = state / "decisions.csv"
            if d.exists() and len(d.read_text().splitlines()) > 40:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.5)  # candles close meanwhile: the restart backfills them
        assert subprocess.run(cmd, cwd=REPO, env=env, timeout=300).returncode == 0
    finally:
        replay.close()
    assert_parity(main_run, state)


def test_malformed_messages_are_skipped_not_fatal():
    for bad in ("not json", "[]", '{"e": "kline"}', '{"e": "kline", "k": {"t": "x"}}',
                '{"e": "kline", "k": {"t": 1, "x": true, "o": "1", "h": "nan", "l": "1", '
                '"c": "1", "v": "1"}}', '{"e": "trade"}'):
        with pytest.raises(KlineError):
            parse_ws_message(bad)
    assert parse_ws_message('{"e": "serverShutdown"}').kind == "shutdown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parity_through_the_model_server(main_run, tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, str(REPO / "runners" / "serve.py"), "--models",
                               str(main_run["bundle"]), "--port", str(port), "--no-skill",
                               "trade", "--quiet"], cwd=REPO, env=env)
    replay = None
    try:
        import urllib.request
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        replay = Replay(main_run)
        args = live_args(main_run, tmp_path / "state", replay,
                         ["--model-server", f"http://127.0.0.1:{port}"])
        assert live_runner.main(args) == 0
    finally:
        if replay:
            replay.close()
        server.terminate()
        server.wait(10)
    assert_parity(main_run, tmp_path / "state")


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_model_server_validates_reloads_and_refuses_tampering(main_run, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from bt_lstm.live.server import TOKEN_ENV, create_app

    app = create_app(str(main_run["bundle"]), "trade")
    candles = candles_of(main_run["candles"].iloc[:300])
    body = {"candles": [dict(zip("tohlcv", c)) for c in candles]}
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").json()["status"] == "ready"
        meta = client.get("/v1/model").json()
        assert meta["lookback"] == 8 and meta["warmup"]["first_ready"] > 8
        assert "bundle" in client.get("/").text
        ok = client.post("/v1/forecast", json=body)
        assert ok.status_code == 200 and ok.json()["bundle_id"] == meta["bundle_id"]
        few = client.post("/v1/forecast", json={"candles": body["candles"][:5]})
        assert few.status_code == 422 and "candles" in few.text
        nan = json.loads(json.dumps(body))
        nan["candles"][7]["c"] = float("nan")
        r = client.post("/v1/forecast", content=json.dumps(nan),
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and '"c"' in r.text
        unsorted = json.loads(json.dumps(body))
        unsorted["candles"][3], unsorted["candles"][4] = unsorted["candles"][4], \
            unsorted["candles"][3]
        r = client.post("/v1/forecast", json=unsorted)
        assert r.status_code == 422 and "4.t" in r.text
        assert client.post("/v1/forecast", json={"x": 1}).status_code == 422
        wrong = json.loads(json.dumps(body))
        wrong["candles"][2]["t"] = "soon"
        r = client.post("/v1/forecast", json=wrong)
        assert r.status_code == 422 and '"t"' in r.text and "2" in r.text
        r = client.post("/v1/forecast", content=b"{not json",
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 422
        bounds = json.loads(json.dumps(body))
        bounds["candles"][9]["h"] = bounds["candles"][9]["l"] / 2
        r = client.post("/v1/forecast", json=bounds)
        assert r.status_code == 422 and '"9"' in r.text
        monkeypatch.setenv(TOKEN_ENV, "s3cret")
        bad = tmp_path / "tampered"
        shutil.copytree(main_run["bundle"], bad)
        pt = next(bad.glob("*.pt"))
        data = bytearray(pt.read_bytes())
        data[len(data) // 2] ^= 0xFF
        pt.write_bytes(bytes(data))
        assert client.post("/v1/reload", json={"models": str(bad)}).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        r = client.post("/v1/reload", json={"models": str(bad)}, headers=auth)
        assert r.status_code == 409 and "refused" in r.text
        assert client.post("/v1/forecast", json=body).json() == ok.json()
        r = client.post("/v1/reload", json={"models": str(main_run["bundle"])}, headers=auth)
        assert r.status_code == 200
    with TestClient(create_app(str(main_run["bundle"]), "trade", workers=2)) as client:
        assert client.post("/v1/forecast", json=body).json() == ok.json()
        r = client.post("/v1/reload", json={"models": str(main_run["bundle"])}, headers=auth)
        assert r.status_code == 409 and "workers" in r.text
    res = subprocess.run([sys.executable, str(REPO / "runners" / "live.py"), "--symbol",
                          "BTCUSDT", "--timeframe", "4h", "--models", str(bad), "--state",
                          str(tmp_path / "s"), "--stop-after", "1"], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 2 and "error:" in res.stderr


def test_server_forecasts_from_the_warm_up_tail_as_from_all_candles(main_run, monkeypatch):
    """The server hands the pipeline only the last ``warmup.history`` candles of a body; the
    forecast equals that from every candle posted (the warm-up figure's promise)."""
    from bt_lstm.live.klines import frame_of
    from bt_lstm.live.server import forecast_body, load_bundle

    ld = load_bundle(str(main_run["bundle"]), "trade", None)
    fc = ld.forecaster
    candles = candles_of(main_run["candles"])
    history = ld.warmup.history
    assert len(candles) > history + 200, "the test needs bodies longer than the warm-up"
    seen = []
    real = type(fc).forecast_last
    monkeypatch.setattr(type(fc), "forecast_last",
                        lambda self, frame: seen.append(len(frame)) or real(self, frame))
    scale = fc.scaler.target_scale
    for end in range(history + 50, len(candles) + 1, 37):
        body = json.dumps({"candles": [dict(zip("tohlcv", c)) for c in candles[:end]]})
        out = forecast_body(ld, body.encode())
        assert seen[-1] == history  # only the tail reached the pipeline
        regime, full = real(fc, frame_of(candles[:end]))
        assert out["regime"] == regime and out["datetime"] == candles[end - 1][0]
        assert (out["forecast"] is None) == np.isnan(full)
        if out["forecast"] is not None:
            np.testing.assert_allclose(out["forecast"], full, rtol=RTOL,
                                       atol=FORECAST_ATOL * scale)


def test_rest_errors_retry_then_stop_with_a_clear_line(main_run, tmp_path, capsys):
    replay = Replay(main_run, rest_errors=2)
    try:
        args = live_args(main_run, tmp_path / "ok", replay)
        args[args.index("--stop-after") + 1] = "3"
        assert live_runner.main(args) == 0  # two 500s, then the retries succeed
    finally:
        replay.close()
    replay = Replay(main_run, rest_errors=10**6)
    try:
        args = live_args(main_run, tmp_path / "down", replay) + ["--rest-tries", "3"]
        assert live_runner.main(args) == 1
    finally:
        replay.close()
    assert "REST" in capsys.readouterr().err




def _wait_for(pred, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_status_page_renders_in_headless_chromium(main_run, tmp_path):
    """live.py --status-port: the page, opened in headless Chromium while the run goes on,
    shows the current position, regime and equity, with nothing logged to the console."""
    need_chromium()
    import urllib.request

    port = free_port()
    state = tmp_path / "state"
    replay = Replay(main_run, speed=4.0)
    cmd = [sys.executable, str(REPO / "runners" / "live.py"), *live_args(main_run, state, replay),
           "--status-port", str(port)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    try:
        def decided() -> int:
            d = state / "decisions.csv"
            return len(d.read_text().splitlines()) - 1 if d.exists() else 0

        _wait_for(lambda: decided() >= 5 or proc.poll() is not None)
        assert proc.poll() is None, "live.py stopped before the page was opened"
        browser = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chr'}",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom",
             f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=120)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as r:
            after = json.loads(r.read())
    finally:
        proc.terminate()
        proc.wait(30)
        replay.close()
    assert browser.returncode == 0, browser.stderr[-2000:]
    console = [ln for ln in browser.stderr.splitlines()
               if ":CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console  # the page logs nothing: any console line is an error
    from html.parser import HTMLParser

    cells: dict[str, str] = {}

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.id: str | None = None

        def handle_starttag(self, tag, attrs) -> None:
            self.id = dict(attrs).get("id")

        def handle_data(self, data) -> None:
            if self.id:
                cells[self.id] = cells.get(self.id, "") + data

        def handle_endtag(self, tag) -> None:
            self.id = None

    Cells().feed(browser.stdout)
    assert cells.get("market") == "BTCUSDT 4h", cells
    decisions = pd.read_csv(state / "decisions.csv", index_col=0, parse_dates=True)
    # the page shows a decided candle of this run (the run goes on while the page is read)
    shown = pd.Timestamp(cells["candle"])
    assert shown in decisions.index, cells
    row = decisions.loc[shown]
    assert cells["regime"].split(" ")[0] == str(int(row["regime"])), cells
    assert cells["regime"].split(" ")[1].strip("()") in ("unknown", "bearish", "sideways",
                                                          "bullish")
    assert cells["equity"] == f"{row['value']:.2f}", (cells, row)
    # position: the account's position then; after the fill at that candle's open it is the
    # decision's position, or (an order filled at the next open not yet shown) the next one
    positions = {float(x) for x in decisions["position"]} | {0.0}
    assert float(cells["position"]) in positions, cells
    assert int(cells["decided"]) >= 5 and after["decided"] >= int(cells["decided"])
    assert cells["feed"].startswith("connected"), cells


def test_a_candle_older_than_the_last_decided_is_ignored(tmp_path):
    """Standalone: the engine decides candles in open-time order; an older (or repeated) candle
    is counted as ignored, decides nothing and changes no state."""
    from bt_lstm.config import StrategyConfig
    from bt_lstm.live.engine import LiveEngine
    from bt_lstm.live.klines import Warmup

    calls: list[int] = []

    def forecasts(candles):
        calls.append(len(candles))
        return 1, 0.01, "m"

    bar = 4 * 3_600_000
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % bar
    engine = LiveEngine(forecasts, StrategyConfig(), "BTCUSDT", "4h", tmp_path / "state",
                        Warmup(first_ready=1, history=50), bar)
    engine.set_first(t0)
    candle = [t0 + i * bar for i in range(4)]
    for i, t in enumerate(candle[:3]):
        assert engine.on_closed((t, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 10.0))
    before = (dict(engine.acct), (tmp_path / "state" / "decisions.csv").read_text(),
              len(calls))
    assert not engine.on_closed((candle[1], 1.0, 2.0, 0.5, 1.5, 1.0))  # older
    assert not engine.on_closed((candle[2], 1.0, 2.0, 0.5, 1.5, 1.0))  # the last one again
    assert engine.feed_health["ignored"] == 2
    after = (dict(engine.acct), (tmp_path / "state" / "decisions.csv").read_text(), len(calls))
    assert after == before
    assert engine.on_closed((candle[3], 103.0, 104.0, 102.0, 103.5, 10.0))  # goes on
    assert engine.acct["bars"] == 4 and len(calls) == 4
    engine.close()
