"""Candle rows in memory and on disk: the canonical CSV the loader reads, merging new candles
after the stored ones, the resume cache of complete months or pages, gaps and the summary line.

A row is ``(open_ms, open, high, low, close, volume)``, or with ``--columns all`` also
``quote_volume, trades, taker_buy_base, taker_buy_quote`` (Binance's extra kline columns);
files are ``timestamp,open,high,low,close,volume[,...]`` with ISO-8601 UTC open times and
Python's shortest float text, so the same candles always give the same bytes.
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bt_lstm.data.files import atomic_write_bytes
from bt_lstm.trading.timeframe import Timeframe

Row = tuple  # (open_ms: int, open, high, low, close, volume: float)
HEADER = "timestamp,open,high,low,close,volume"
EXTRA = ("quote_volume", "trades", "taker_buy_base", "taker_buy_quote")
HEADER_ALL = ",".join([HEADER, *EXTRA])
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class DownloadError(ValueError):
    """A download that cannot go on; the message says what failed and what to do."""


def timeframe_ms(timeframe: str) -> int:
    """'4h' -> 14_400_000 (``Timeframe.parse``); DownloadError for anything that is not a bar
    length."""
    try:
        return Timeframe.parse(timeframe).ms
    except ValueError as exc:
        raise DownloadError(str(exc)) from None


def iso_ms(ms: int) -> str:
    """Epoch milliseconds -> '2021-01-01T00:00:00Z'."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def short_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms // 1000))


def parse_iso(text: str) -> int:
    """'2021-01-01T00:00:00Z' -> epoch milliseconds."""
    return int(datetime.fromisoformat(text[:19]).replace(tzinfo=timezone.utc).timestamp()) * 1000


def format_line(r: Row) -> str:
    """One row as a canonical CSV line (no newline)."""
    return ",".join([iso_ms(r[0]), *(repr(x) for x in r[1:])])


def header_of(rows: list[Row]) -> str:
    """The header of rows with (``HEADER_ALL``) or without the extra kline columns."""
    return HEADER_ALL if rows and len(rows[0]) > 6 else HEADER


def format_rows(rows: list[Row]) -> bytes:
    """Rows -> the canonical CSV bytes (header included)."""
    return ("\n".join([header_of(rows), *map(format_line, rows)]) + "\n").encode()


_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


def parse_canonical_lines(data: bytes) -> list[tuple[int, str]] | None:
    """(open ms, line) of each row of a canonical CSV, or None when ``data`` is in another
    layout. Values are kept as text: a stored row is written back byte for byte."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip().lower() not in (HEADER, HEADER_ALL):
        return None
    commas = lines[0].count(",")
    out = []
    try:
        for line in lines[1:]:
            if not line:
                continue
            if line.count(",") != commas or line[19:21] != "Z,":
                return None
            out.append(((datetime.fromisoformat(line[:19]) - _EPOCH) // _MS, line))
    except ValueError:
        return None
    return out


def parse_canonical(data: bytes) -> list[Row] | None:
    """Rows of a canonical CSV, or None when ``data`` is in another layout."""
    lines = parse_canonical_lines(data)
    if lines is None:
        return None
    try:
        return [(t, *map(float, line.split(",")[1:])) for t, line in lines]
    except ValueError:
        return None


def read_existing(path: Path) -> tuple[list[tuple[int, str]], bytes]:
    """The rows stored in ``path`` (any layout the loader reads) as (open ms, canonical line),
    and the file's bytes; ([], b'') when there is no file."""
    if not path.is_file():
        return [], b""
    data = path.read_bytes()
    lines = parse_canonical_lines(data)
    if lines is None:  # another layout (a Binance export, epoch stamps ...): the full loader
        from bt_lstm.data.candles import load_ohlcv

        frame = load_ohlcv(path)
        stamps = frame.index.as_unit("ms").asi8.tolist()
        values = frame[["open", "high", "low", "close", "volume"]].to_numpy().tolist()
        rows = [(int(t), *map(float, v)) for t, v in zip(stamps, values)]
        lines = [(r[0], format_line(r)) for r in rows]
    return lines, data


def merge_lines(old: list[tuple[int, str]], new: list[Row]) -> list[tuple[int, str]]:
    """Stored rows, replaced by fetched rows of the same open time, sorted by open time."""
    by_time = dict(old)
    by_time.update((r[0], format_line(r)) for r in new)
    return [(t, by_time[t]) for t in sorted(by_time)]


@dataclass(frozen=True)
class GapSummary:
    n_gaps: int
    n_missing: int
    largest: int
    largest_after_ms: int | None


def find_row_gaps(times: list[int], bar_ms: int) -> GapSummary:
    """Missing candles between consecutive open times (reported, never filled)."""
    n_gaps = n_missing = largest = 0
    after = None
    for a, b in zip(times, times[1:]):
        missing = (b - a) // bar_ms - 1
        if missing > 0:
            n_gaps += 1
            n_missing += missing
            if missing > largest:
                largest, after = missing, a
    return GapSummary(n_gaps, n_missing, largest, after)


@dataclass
class DownloadResult:
    """What a download did: the file, its rows, what was new, gaps, missing source files."""

    path: Path
    symbol: str
    timeframe: str
    rows: int
    first_ms: int | None
    last_ms: int | None
    n_new: int
    written: bool
    gaps: GapSummary
    not_on_server: list[str] = field(default_factory=list)
    source: str = ""

    def summary(self) -> str:
        if not self.rows:
            return f"{self.symbol} {self.timeframe}: no candles"
        g = self.gaps
        gaps = ("no gaps" if g.n_gaps == 0 else
                f"{g.n_gaps} gap{'s' if g.n_gaps != 1 else ''}, {g.n_missing} missing candles (largest {g.largest} after "
                f"{short_ms(g.largest_after_ms)})")
        what = (f"{self.n_new} new" if self.written else "up to date, file unchanged")
        return (f"{self.symbol} {self.timeframe}: {self.rows} rows, {short_ms(self.first_ms)} "
                f"to {short_ms(self.last_ms)} UTC, {gaps}; {what} -> {self.path}")


class PartCache:
    """Complete months or pages already fetched by an unfinished run, one small file each, in a
    hidden folder beside the data file; removed once the data file is written."""

    def __init__(self, target: Path, source: str) -> None:
        self.dir = target.parent / f".{target.name}.{source}.parts"

    def get(self, key: str) -> list[Row] | None:
        path = self.dir / f"{key}.csv"
        if not path.is_file():
            return None
        return parse_canonical(path.read_bytes())

    def put(self, key: str, rows: list[Row]) -> None:
        # rename is atomic, so a kill leaves a whole part or none; no fsync: a part only saves
        # time, and one that does not parse is fetched again
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(format_rows(rows))
        os.replace(tmp, self.dir / f"{key}.csv")

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def write_lines(path: Path, lines: list[tuple[int, str]], old_bytes: bytes,
                header: str = HEADER) -> bool:
    """Write the rows atomically unless the file already holds exactly these bytes."""
    data = ("\n".join([header, *(line for _, line in lines)]) + "\n").encode()
    if data == old_bytes:
        return False
    atomic_write_bytes(path, data)
    return True
