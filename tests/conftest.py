"""Shared fixtures: a seeded synthetic market, tiny configs, one fitted pipeline per session."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from bt_lstm.config import ModelConfig, PipelineConfig, TrainConfig, WindowConfig
from bt_lstm.data.synthetic import make_market
from bt_lstm.research.pipeline import fit_pipeline

# Small models are faster on one thread, and the suite runs on 2 cores.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--lookback", "8", "--hidden-size", "4", "--epochs", "2", "--patience", "2",
              "--min-regime-windows", "20", "--quiet"]


def real_data_dir() -> Path | None:
    """../shared/data beside the checkout, or $BT_LSTM_REAL_DATA; None where absent."""
    env = os.environ.get("BT_LSTM_REAL_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "BTCUSDT_4h.csv").is_file():
            return cand
    return None


@pytest.fixture(scope="session")
def tiny_cfg() -> PipelineConfig:
    return PipelineConfig(
        windows=WindowConfig(lookback=8),
        model=ModelConfig(hidden_size=4),
        train=TrainConfig(epochs=2, patience=2, batch_size=128, min_regime_windows=20,
                          min_val_windows=5, device="cpu"))


@pytest.fixture(scope="session")
def market():
    return make_market(n_bars=1200, seed=3)


@pytest.fixture(scope="session")
def fitted(market, tiny_cfg):
    result, bounds = fit_pipeline(market.frame, tiny_cfg)
    return result, bounds


@pytest.fixture()
def market_csv(market, tmp_path) -> Path:
    path = tmp_path / "candles.csv"
    frame = market.frame.copy()
    frame.index = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(path, index_label="timestamp")
    return path


REDIS_URL = os.environ.get("BT_LSTM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("BT_LSTM_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


def service_missing(why: str) -> None:
    """Skip with ``why``; with BT_LSTM_REQUIRE_SERVICES=1 (as .ci/run sets) fail instead."""
    if os.environ.get("BT_LSTM_REQUIRE_SERVICES") == "1":
        pytest.fail(why + " (BT_LSTM_REQUIRE_SERVICES=1: services are required here)")
    pytest.skip(why)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def need_chromium() -> str:
    """Debian's headless Chromium, or skip (fail with BT_LSTM_REQUIRE_SERVICES=1)."""
    if CHROMIUM is None:
        service_missing("chromium not installed (Debian: apt-get install chromium; .ci/run "
                        "installs it)")
    return CHROMIUM


def chromium_evaluate(page: Path, profile: Path, expression: str):
    """Open ``page`` in headless Chromium (DevTools protocol), wait for its load event and
    return the JSON value that the JavaScript ``expression`` (awaited) evaluates to."""
    from websockets.sync.client import connect

    proc = subprocess.Popen(
        [need_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert time.time() < deadline and proc.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            (target,) = [t for t in json.loads(r.read()) if t["type"] == "page"]
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            def call(n: int, method: str, params: dict, until: str | None = None) -> dict:
                ws.send(json.dumps({"id": n, "method": method, "params": params}))
                reply, event = None, until is None
                while reply is None or not event:
                    msg = json.loads(ws.recv(timeout=60))
                    reply = msg if msg.get("id") == n else reply
                    event = event or msg.get("method") == until
                return reply

            call(1, "Page.enable", {})
            call(2, "Page.navigate", {"url": page.as_uri()}, until="Page.loadEventFired")
            msg = call(3, "Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                               "returnByValue": True})
        return json.loads(msg["result"]["result"]["value"])
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
