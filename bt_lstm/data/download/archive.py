"""Binance's public kline archive (data.binance.vision layout): monthly zips, daily zips for the
current month, each checked against its ``.CHECKSUM`` (sha256sum format) before it is used.

Spot files have no header (futures files do); spot open times switched from milliseconds to
microseconds on 2025-01-01. Both are read here, row by row.
"""
from __future__ import annotations

import calendar
import hashlib
import io
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from bt_lstm.data.download.store import DownloadError, PartCache, Row
from bt_lstm.data.download.web import http_get

DEFAULT_BASE_URL = "https://data.binance.vision"
TIMEFRAMES = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
              "3d", "1w")
FIRST_MONTH = (2017, 7)  # Binance opened in July 2017: no archive starts earlier
WORKERS = 8
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Task:
    """One archive file: ``key`` names its resume part, ``label`` the period it covers."""

    key: str
    label: str
    url: str
    daily_fallback: tuple = ()  # a recent month not yet published: its daily files instead


def _month_ms(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def plan_tasks(base_url: str, symbol: str, tf: str, start_ms: int, end_ms: int,
               now_ms: int) -> list[Task]:
    """The files covering [start_ms, end_ms): whole months up to the previous month (with a
    fallback to daily files while that month is not yet published), daily files for the
    current month up to yesterday (today's file does not exist yet)."""
    root = f"{base_url.rstrip('/')}/data/spot"
    this_month = time.gmtime(now_ms // 1000)[:2]
    first = time.gmtime(max(start_ms, _month_ms(*FIRST_MONTH)) // 1000)[:2]
    tasks: list[Task] = []
    ym = first
    while _month_ms(*ym) < min(end_ms, now_ms):
        name = f"{symbol}-{tf}-{ym[0]:04d}-{ym[1]:02d}"
        days = _daily_tasks(root, symbol, tf, ym, end_ms, now_ms)
        if ym == this_month:
            tasks += days
        else:
            recent = _next_month(*ym) == this_month
            tasks.append(Task(f"m-{ym[0]:04d}-{ym[1]:02d}", f"{ym[0]:04d}-{ym[1]:02d}",
                              f"{root}/monthly/klines/{symbol}/{tf}/{name}.zip",
                              tuple(days) if recent else ()))
        ym = _next_month(*ym)
    return tasks


def _daily_tasks(root: str, symbol: str, tf: str, ym: tuple[int, int], end_ms: int,
                 now_ms: int) -> list[Task]:
    """Daily files of month ``ym`` for the days before ``end_ms`` that are over by ``now_ms``."""
    out = []
    day = _month_ms(*ym)
    while day < _month_ms(*_next_month(*ym)) and day < end_ms and day + DAY_MS <= now_ms:
        d = time.strftime("%Y-%m-%d", time.gmtime(day // 1000))
        out.append(Task(f"d-{d}", d, f"{root}/daily/klines/{symbol}/{tf}/{symbol}-{tf}-{d}.zip"))
        day += DAY_MS
    return out


def parse_kline_csv(text: str, where: str, extra: bool = False) -> list[Row]:
    """Rows of a kline CSV: header or none, open time in ms or µs (spot files from 2025);
    ``extra``: with quote volume, trade count and taker-buy base and quote volumes."""
    rows: list[Row] = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        f = line.split(",")
        try:
            t = int(f[0])
            row = (t // 1000 if t >= 10**14 else t, float(f[1]), float(f[2]), float(f[3]),
                   float(f[4]), float(f[5]))
            if extra:  # close_time is f[6]; f[11] is Binance's unused "ignore"
                row += (float(f[7]), float(f[8]), float(f[9]), float(f[10]))
        except (ValueError, IndexError):
            if i == 0:  # a header row (futures files, some mirrors)
                continue
            raise DownloadError(f"{where}: line {i + 1} is not a kline row ({line[:60]!r}); the "
                                f"file was refused and nothing was written") from None
        rows.append(row)
    return rows


def verify_zip(data: bytes, checksum: bytes | None, name: str) -> str:
    """The CSV inside a zip whose sha256 matches its .CHECKSUM; DownloadError otherwise."""
    if checksum is None:
        raise DownloadError(f"{name}: the server has the zip but no {name}.CHECKSUM, so it cannot "
                            f"be verified; the file was refused and nothing was written")
    expected = checksum.decode("ascii", errors="replace").split()[0].lower() if \
        checksum.strip() else ""
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise DownloadError(f"{name}: sha256 {got[:16]}... differs from its .CHECKSUM "
                            f"({expected[:16]}...): a damaged or replaced file; it was refused "
                            f"and nothing was written; try again later or another --base-url")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [n for n in zf.namelist() if n.endswith(".csv")]
            if len(members) != 1:
                raise DownloadError(f"{name}: expected one CSV inside, found {len(members)}")
            return zf.read(members[0]).decode("utf-8")
    except (zipfile.BadZipFile, EOFError, UnicodeDecodeError, OSError) as exc:
        raise DownloadError(f"{name}: not a readable zip ({exc}); it was refused and nothing "
                            f"was written") from None


def fetch_file(url: str, extra: bool = False) -> list[Row] | None:
    """Verified rows of one archive file; None when the server has no such file (404)."""
    data = http_get(url)
    if data is None:
        return None
    name = url.rsplit("/", 1)[-1]
    return parse_kline_csv(verify_zip(data, http_get(url + ".CHECKSUM"), name), name, extra)


def _run_task(task: Task, cache: PartCache, extra: bool = False) -> list[Row] | None:
    """Rows of one file (None: not on the server), from the cache if a previous run got it."""
    cached = cache.get(task.key)
    if cached is not None:
        return cached
    rows = fetch_file(task.url, extra)
    if rows is not None:
        cache.put(task.key, rows)
    return rows


def _run_all(tasks: list[Task], cache: PartCache, progress,
             extra: bool = False) -> list[list[Row] | None]:
    """Every task's rows, fetched in parallel; the first failure stops the rest."""
    if not tasks:
        return []
    step = progress(len(tasks), "file") if progress is not None else None
    results: list = [None] * len(tasks)
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    try:
        futures = {pool.submit(_run_task, t, cache, extra): i for i, t in enumerate(tasks)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            if step is not None:
                step(tasks[futures[fut]].label)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def fetch_archive(symbol: str, tf: str, start_ms: int, end_ms: int, now_ms: int,
                  cache: PartCache, base_url: str = DEFAULT_BASE_URL, progress=None,
                  require_rows: bool = True, extra: bool = False
                  ) -> tuple[list[Row], list[str]]:
    """All archive rows in [start_ms, end_ms) and the periods the server does not have
    (after the first one it has: earlier ones predate the listing). With ``require_rows``, no
    file at all means an unknown symbol or timeframe (DownloadError)."""
    if tf not in TIMEFRAMES:
        raise DownloadError(f"timeframe {tf!r} is not in Binance's archive; use one of "
                            f"{', '.join(TIMEFRAMES)}")
    tasks = plan_tasks(base_url, symbol, tf, start_ms, end_ms, now_ms)
    got = _run_all(tasks, cache, progress, extra)
    # a recent month whose monthly zip is not published yet: its daily files, in parallel too
    days = [d for t, g in zip(tasks, got) if g is None for d in t.daily_fallback]
    by_key = dict(zip((d.key for d in days), _run_all(days, cache, progress, extra)))
    rows: list[Row] = []
    missing: list[str] = []
    for task, month in zip(tasks, got):
        miss = [] if month is not None else [task.label]
        if month is None and task.daily_fallback:
            found = [(d, by_key[d.key]) for d in task.daily_fallback]
            if any(r is not None for _, r in found):
                month = [row for _, r in found for row in (r or [])]
                miss = [d.label for d, r in found if r is None]
        if month is None and not rows and require_rows:
            continue  # before the first file the server has: not listed yet
        rows += month or []
        missing += miss
    if not rows and require_rows:
        raise DownloadError(
            f"no archive files for {symbol} {tf} under {base_url.rstrip('/')}/data/spot/ "
            f"between {time.strftime('%Y-%m', time.gmtime(start_ms // 1000))} and now: unknown "
            f"symbol or timeframe on Binance spot (symbols look like BTCUSDT); nothing written")
    return rows, missing
