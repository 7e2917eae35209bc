"""One download: read what is stored, fetch only what is missing after the last stored candle
(that candle again, as it may have been unfinished), merge, write atomically, summarise."""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bt_lstm.data.download.archive import DEFAULT_BASE_URL, fetch_archive
from bt_lstm.data.download.store import (
    HEADER,
    HEADER_ALL,
    DownloadError,
    DownloadResult,
    PartCache,
    find_row_gaps,
    merge_lines,
    read_existing,
    short_ms,
    timeframe_ms,
    write_lines,
)

logger = logging.getLogger(__name__)

SOURCES = ("binance-archive", "ccxt")
COLUMNS = ("ohlcv", "all")
DEFAULT_START = "2017-01-01"  # before any Binance listing: "all history"
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}(/[A-Z0-9]{2,20}(:[A-Z0-9]{2,20})?)?$")


@dataclass(frozen=True)
class DownloadRequest:
    """What to fetch and where to put it (``<data_dir>/<SYMBOL>_<timeframe>.csv``)."""

    symbol: str
    timeframe: str = "4h"
    source: str = "binance-archive"
    exchange: str = "binance"
    data_dir: str = "data"
    start: str | None = None
    end: str | None = None
    base_url: str = DEFAULT_BASE_URL
    api_url: str | None = None
    columns: str = "ohlcv"  # ohlcv | all: also Binance's extra kline columns (archive only)

    @property
    def file_symbol(self) -> str:
        return self.symbol.upper().split(":")[0].replace("/", "")

    @property
    def path(self) -> Path:
        return Path(self.data_dir) / f"{self.file_symbol}_{self.timeframe}.csv"


def parse_date_ms(text: str, flag: str, end: bool = False) -> int:
    """'2024-12-31' or '2024-12-31T12:00' (UTC) -> epoch ms. For ``end``, a bare date includes
    that whole day; the result is then an exclusive bound."""
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DownloadError(f"{flag} {text!r} is not a date; use e.g. 2022-01-01 or "
                            f"2022-01-01T12:00") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    if end:
        stamp += timedelta(days=1) if len(text.strip()) == 10 else timedelta(milliseconds=1)
    return int(stamp.timestamp() * 1000)


def check_request(req: DownloadRequest) -> int:
    """Validate before any network use; return the bar length in ms."""
    if req.source not in SOURCES:
        raise DownloadError(f"--source {req.source!r}: use one of {', '.join(SOURCES)}")
    if not _SYMBOL.match(req.symbol.upper()):
        raise DownloadError(f"--symbol {req.symbol!r} is not a market symbol; use e.g. BTCUSDT "
                            f"(or BTC/USDT with --source ccxt)")
    if req.source == "binance-archive" and "/" in req.symbol:
        raise DownloadError(f"--symbol {req.symbol}: Binance archive files are named by the id "
                            f"without a slash, e.g. {req.file_symbol}")
    if req.columns not in COLUMNS:
        raise DownloadError(f"--columns {req.columns!r}: use one of {', '.join(COLUMNS)}")
    if req.columns == "all" and req.source != "binance-archive":
        raise DownloadError("--columns all keeps Binance's archive kline columns (trades, "
                            "taker-buy volume); use --source binance-archive")
    if req.source == "binance-archive" and req.exchange != "binance":
        raise DownloadError(f"--exchange {req.exchange}: the archive source is Binance's; use "
                            f"--source ccxt for other exchanges")
    return timeframe_ms(req.timeframe)


def download_candles(req: DownloadRequest, progress=None, now_ms: int | None = None
                     ) -> DownloadResult:
    """Bring ``req.path`` up to date and return what was done.

    Parameters
    ----------
    progress
        ``progress(total, unit) -> step(label)`` (a progress bar), or None.
    now_ms
        The clock (tests); candles still open at this time are never written.

    Raises
    ------
    DownloadError
        Bad request, unknown symbol or timeframe, a damaged file, a refused or failing server.
        Nothing is written then; complete months or pages already fetched are kept for the
        next run (a hidden ``.<file>.<source>.parts`` folder beside the file).
    """
    bar_ms = check_request(req)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    start_ms = parse_date_ms(req.start or DEFAULT_START, "--start")
    end_ms = parse_date_ms(req.end, "--end", end=True) if req.end else now_ms
    if end_ms <= start_ms:
        raise DownloadError(f"--end {req.end} is not after --start {req.start or DEFAULT_START}")
    old, old_bytes = read_existing(req.path)
    header = HEADER_ALL if req.columns == "all" else HEADER
    has_all = old_bytes.split(b"\n", 1)[0].strip().decode(errors="replace") == HEADER_ALL
    if old and has_all != (req.columns == "all"):
        raise DownloadError(f"{req.path} holds {'other' if req.columns == 'all' else 'more'} "
                            f"columns than --columns {req.columns} asks for; move it away to "
                            f"download it again with --columns {req.columns}")
    if old:  # continue after the stored candles, re-fetching the last one
        if req.start and start_ms < old[0][0] - bar_ms:
            logger.warning("%s starts at %s; --start %s is earlier, but a stored file is only "
                           "extended at its end (move it away to download another range)",
                           req.path, short_ms(old[0][0]), req.start)
        start_ms = old[-1][0]
    cache = PartCache(req.path, (req.source if req.source != "ccxt" else req.exchange)
                      + ("-all" if req.columns == "all" else ""))
    missing: list[str] = []
    if start_ms >= end_ms:
        new = []
    elif req.source == "binance-archive":
        new, missing = fetch_archive(req.file_symbol, req.timeframe, start_ms, end_ms, now_ms,
                                     cache, req.base_url, progress, require_rows=not old,
                                     extra=req.columns == "all")
        new = [r for r in new if start_ms <= r[0] < end_ms and r[0] + bar_ms <= now_ms]
    else:
        from bt_lstm.data.download.ccxt_source import fetch_ccxt, market_symbol, open_exchange

        exchange = open_exchange(req.exchange, req.api_url)
        new = fetch_ccxt(exchange, market_symbol(exchange, req.symbol), req.timeframe, bar_ms,
                         start_ms, end_ms, now_ms, cache, progress)
        if not new and not old:
            raise DownloadError(f"{req.exchange} returned no candles for {req.symbol} "
                                f"{req.timeframe} from {short_ms(start_ms)}; nothing written")
    lines = merge_lines(old, new)
    written = write_lines(req.path, lines, old_bytes, header) if lines else False
    cache.clear()
    times = [t for t, _ in lines]
    n_new = len({r[0] for r in new} - {t for t, _ in old})
    return DownloadResult(req.path, req.file_symbol, req.timeframe, len(lines),
                          times[0] if times else None, times[-1] if times else None, n_new,
                          written, find_row_gaps(times, bar_ms), missing, req.source)


def is_stale(path: Path, timeframe: str, now_ms: int | None = None) -> bool:
    """True when ``path`` is missing or its last candle closed more than a day and a bar ago
    (Binance publishes each day's archive file the next day)."""
    if not path.is_file():
        return True
    bar_ms = timeframe_ms(timeframe)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 4096))
        tail = fh.read().decode("utf-8", errors="replace").strip().splitlines()
    last = tail[-1].split(",")[0] if tail else ""
    try:
        if last.isdigit():
            last_ms = int(last) // (1000 if int(last) >= 10**14 else 1)
        else:
            stamp = datetime.fromisoformat(last.replace("Z", "+00:00"))
            stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
            last_ms = int(stamp.timestamp() * 1000)
    except ValueError:
        return True
    return last_ms + bar_ms < now_ms - 86_400_000 - bar_ms
