"""A local stand-in for Binance on 127.0.0.1: the public archive layout (monthly and daily zips
with ``.CHECKSUM`` files) and the REST endpoints ccxt reads for candles (``/api/v3/ping``,
``/api/v3/time``, ``/api/v3/exchangeInfo``, ``/api/v3/klines``), served from candles in memory.

For tests and benchmarks (offline, real HTTP, real zip files), and for a mirror of your own:
faults (a missing month, a bad checksum, a truncated zip, 429/451 answers, slow answers) can be
switched on per file or per request.
"""
from __future__ import annotations

import bisect
import calendar
import hashlib
import io
import json
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from bt_lstm.data.download.store import Row, timeframe_ms

US_FROM_MS = calendar.timegm((2025, 1, 1, 0, 0, 0)) * 1000  # spot files switched to µs here


@dataclass
class MirrorFaults:
    """Faults to serve. Keys of the sets are file names such as ``X-4h-2024-03.zip``."""

    missing: set = field(default_factory=set)        # 404
    bad_checksum: set = field(default_factory=set)   # .CHECKSUM with another digest
    truncated: set = field(default_factory=set)      # zip cut in half (checksum of the cut)
    with_header: set = field(default_factory=set)    # CSV with a header row (futures style)
    api_replies: list = field(default_factory=list)  # [(status, headers)] served before klines
    archive_replies: list = field(default_factory=list)  # the same, before archive files
    delay_s: float = 0.0                             # sleep before each answer
    stall_files: set = field(default_factory=set)    # never answered (a run to kill)
    stall_klines_from: int | None = None             # klines requests from this index stall


def _kline(row: Row, bar_ms: int, us: bool) -> list:
    t, o, h, lo, c, v = row[:6]
    scale = 1000 if us else 1
    # trade count and taker-buy share vary from bar to bar (the `flow` features need spread)
    k = t // bar_ms
    trades, taker = 100 + k % 37, v * (0.3 + 0.4 * (k % 11) / 10)
    return [t * scale, o, h, lo, c, v, (t + bar_ms) * scale - 1, o * v, trades, taker,
            o * taker, 0]


def _csv(rows: list[Row], bar_ms: int, header: bool) -> bytes:
    lines = (["open_time,open,high,low,close,volume,close_time,quote_volume,count,"
              "taker_buy_volume,taker_buy_quote_volume,ignore"] if header else [])
    for r in rows:
        lines.append(",".join(str(x) for x in _kline(r, bar_ms, r[0] >= US_FROM_MS)))
    return ("\n".join(lines) + "\n").encode()


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops parallel connects: 1 s SYN retries
    daemon_threads = True


class KlineMirror:
    """Serve ``candles[symbol][timeframe]`` (rows sorted by open time) until ``close()``.

    ``port`` 0 takes a free port (``url`` names it); a fixed one suits a config file that
    points a client (freqtrade's ccxt) at the mirror.
    """

    def __init__(self, candles: dict, faults: MirrorFaults | None = None,
                 now_ms: int | None = None, port: int = 0) -> None:
        self.candles = candles
        self.faults = faults or MirrorFaults()
        self.now_ms = now_ms
        self.requests: list[str] = []
        self._zips: dict = {}
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", port), self._handler())  # port 0: any free one
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> KlineMirror:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- archive -------------------------------------------------------------------------
    def zip_bytes(self, name: str, rows: list[Row], bar_ms: int) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            info = zipfile.ZipInfo(name[:-4] + ".csv", date_time=(2020, 1, 1, 0, 0, 0))
            zf.writestr(info, _csv(rows, bar_ms, name in self.faults.with_header))
        data = buf.getvalue()
        return data[: len(data) // 2] if name in self.faults.truncated else data

    def archive_file(self, path: str) -> bytes | None:
        parts = path.strip("/").split("/")  # data/spot/{monthly|daily}/klines/SYM/TF/NAME
        if len(parts) != 7 or parts[:2] != ["data", "spot"] or parts[3] != "klines":
            return None
        period, sym, tf, name = parts[2], parts[4], parts[5], parts[6]
        checksum = name.endswith(".CHECKSUM")
        zname = name[: -len(".CHECKSUM")] if checksum else name
        rows = self.candles.get(sym, {}).get(tf)
        if rows is None or zname in self.faults.missing or not zname.endswith(".zip"):
            return None
        bar = timeframe_ms(tf)
        stamp = zname[len(f"{sym}-{tf}-"):-4]
        try:
            fields = [int(x) for x in stamp.split("-")]
            lo = calendar.timegm((fields[0], fields[1], fields[2] if period == "daily" else 1,
                                  0, 0, 0)) * 1000
        except (ValueError, IndexError):
            return None
        if period == "daily":
            hi = lo + 86_400_000
        else:
            y, m = fields[0], fields[1]
            hi = calendar.timegm((y + (m == 12), m % 12 + 1, 1, 0, 0, 0)) * 1000
        key = (sym, tf, zname)
        if key not in self._zips:
            i, j = bisect.bisect_left(rows, (lo,)), bisect.bisect_left(rows, (hi,))
            self._zips[key] = self.zip_bytes(zname, rows[i:j], bar) if j > i else None
        data = self._zips[key]
        if data is None:
            return None
        if not checksum:
            return data
        digest = hashlib.sha256(data).hexdigest()
        if zname in self.faults.bad_checksum:
            digest = hashlib.sha256(data + b"x").hexdigest()
        return f"{digest}  {zname}\n".encode()

    # -- REST API ------------------------------------------------------------------------
    def exchange_info(self) -> dict:
        symbols = []
        for sym in self.candles:
            base, quote = (sym[:-4], sym[-4:]) if sym.endswith("USDT") else (sym[:-3], sym[-3:])
            symbols.append({
                "symbol": sym, "status": "TRADING", "baseAsset": base, "quoteAsset": quote,
                "baseAssetPrecision": 8, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"], "icebergAllowed": True,
                "ocoAllowed": True, "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False, "filters": [], "permissions": ["SPOT"],
                "permissionSets": [["SPOT"]]})
        return {"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [],
                "exchangeFilters": [], "symbols": symbols}

    def klines(self, query: dict) -> tuple[int, object]:
        sym = query.get("symbol", [""])[0]
        tf = query.get("interval", [""])[0]
        if sym not in self.candles:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        rows = self.candles[sym].get(tf)
        if rows is None:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        start = int(query.get("startTime", ["0"])[0])
        end = int(query.get("endTime", [str(2**62)])[0])
        limit = min(int(query.get("limit", ["500"])[0]), 1000)
        now = self.now_ms if self.now_ms is not None else int(time.time() * 1000)
        bar = timeframe_ms(tf)
        out = [_kline(r, bar, False) for r in rows if start <= r[0] <= end and r[0] <= now]
        return 200, [[k[0], *(repr(float(x)) for x in k[1:6]), *k[6:]] for k in out[:limit]]

    def _handler(self):
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out as separate writes: without this, Nagle's algorithm and
            # the client's delayed ACK add ~40 ms to every answer
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str, headers=()) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                with mirror._lock:
                    mirror.requests.append(self.path)
                    n_klines = sum(r.startswith("/api/v3/klines") for r in mirror.requests)
                faults = mirror.faults
                if faults.delay_s:
                    time.sleep(faults.delay_s)
                if (url.path.rsplit("/", 1)[-1] in faults.stall_files or (
                        url.path == "/api/v3/klines" and faults.stall_klines_from is not None
                        and n_klines > faults.stall_klines_from)):
                    time.sleep(600)  # until the client is killed
                    return None
                if url.path.startswith("/api/"):
                    return self._api(url)
                with mirror._lock:
                    fault = faults.archive_replies.pop(0) if faults.archive_replies else None
                if fault is not None:
                    return self._send(fault[0], b"refused", "text/plain", list(fault[1].items()))
                data = mirror.archive_file(url.path)
                if data is None:
                    return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>",
                                      "application/xml")
                self._send(200, data, "application/zip")

            def _api(self, url) -> None:
                with mirror._lock:
                    fault = mirror.faults.api_replies.pop(0) if (
                        mirror.faults.api_replies and url.path == "/api/v3/klines") else None
                if fault is not None:
                    status, headers = fault
                    body = json.dumps({"code": -1003, "msg": f"HTTP {status}"}).encode()
                    return self._send(status, body, "application/json", list(headers.items()))
                if url.path == "/api/v3/ping":
                    status, obj = 200, {}
                elif url.path == "/api/v3/time":
                    status, obj = 200, {"serverTime": int(time.time() * 1000)}
                elif url.path == "/api/v3/exchangeInfo":
                    status, obj = 200, mirror.exchange_info()
                elif url.path == "/api/v3/klines":
                    status, obj = mirror.klines(parse_qs(url.query))
                else:
                    status, obj = 404, {"code": -1, "msg": "not served by this mirror"}
                self._send(status, json.dumps(obj).encode(), "application/json")

        return Handler
