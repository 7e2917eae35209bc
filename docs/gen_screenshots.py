"""Screenshots of a real report for the README and the getting-started page.

    python docs/gen_screenshots.py          # runs the main job on the bundled snapshot first
    python docs/gen_screenshots.py --no-run # reuse reports/backtest_BTCUSDT_4h/latest

Runs ``python runners/backtest.py --symbol BTCUSDT`` in the repository (the bundled BTCUSDT 4h
snapshot when ``data/BTCUSDT_4h.csv`` is absent; the models are reused once trained), then
opens its ``tearsheet.html`` and ``reports/index.html`` in headless Chromium (DevTools protocol)
and saves parts of them as PNG in ``docs/img/``: the top of the tearsheet, its skill guard
section, its luck section, and the list of runs.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "img"
WIDTH = 1100

# output file -> (page under reports/, first heading shown or None for the top, heading where
# the picture ends or None for the page's end, the most pixels of height kept)
SHOTS = {
    "tearsheet.png": ("backtest_BTCUSDT_4h/latest/tearsheet.html", None, "Drawdown", 1000),
    "tearsheet-skill.png": ("backtest_BTCUSDT_4h/latest/tearsheet.html", "Skill guard",
                            "Validation loss", 900),
    "tearsheet-luck.png": ("backtest_BTCUSDT_4h/latest/tearsheet.html",
                           "How much could be luck", None, 700),
    "runs-index.png": ("index.html", None, None, 320),
}

RECT = """(() => {
  const find = t => t && [...document.querySelectorAll('h1,h2')]
      .find(h => h.textContent.trim().startsWith(t));
  const top = %s ? find(%s).getBoundingClientRect().top + scrollY - 8 : 0;
  const end = %s ? find(%s).getBoundingClientRect().top + scrollY - 8
                 : document.documentElement.scrollHeight;
  return JSON.stringify([top, end]);
})()"""


class Chromium:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, profile: Path) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--hide-scrollbars", "--disable-background-networking", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", f"--window-size={WIDTH},900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, deadline = profile / "DevToolsActivePort", time.time() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("chromium did not start")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            (target,) = [t for t in json.loads(r.read()) if t["type"] == "page"]
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self.n = 0
        self.call("Page.enable", {})

    def call(self, method: str, params: dict, until: str | None = None) -> dict:
        """Send one DevTools command; wait for its reply (and the event ``until``)."""
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        reply, event = None, until is None
        while reply is None or not event:
            msg = json.loads(self.ws.recv(timeout=60))
            reply = msg if msg.get("id") == self.n else reply
            event = event or msg.get("method") == until
        return reply

    def shot(self, page: Path, start: str | None, end: str | None, most: int) -> bytes:
        """PNG of ``page`` from the heading ``start`` to the heading ``end``."""
        self.call("Page.navigate", {"url": page.as_uri()}, until="Page.loadEventFired")
        js = RECT % (json.dumps(bool(start)), json.dumps(start), json.dumps(bool(end)),
                     json.dumps(end))
        msg = self.call("Runtime.evaluate", {"expression": js, "returnByValue": True})
        top, bottom = json.loads(msg["result"]["result"]["value"])
        clip = {"x": 0, "y": top, "width": WIDTH, "height": min(bottom - top, most), "scale": 1}
        msg = self.call("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                   "captureBeyondViewport": True})
        return base64.b64decode(msg["result"]["data"])

    def close(self) -> None:
        """Close the connection and end the browser."""
        self._stack.close()
        self.proc.terminate()
        self.proc.wait(30)


def main(argv: list[str]) -> int:
    """Run the main job (unless ``--no-run``), then take every screenshot."""
    if "--no-run" not in argv:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, "runners/backtest.py", "--symbol", "BTCUSDT",
                        "--quiet"], cwd=REPO, env=env, check=True)
    IMG.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        browser = Chromium(Path(tmp))
        try:
            for name, (page, start, end, most) in SHOTS.items():
                data = browser.shot(REPO / "reports" / page, start, end, most)
                (IMG / name).write_bytes(data)
                print(f"{name}: {len(data) // 1024} KB")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
