"""Load and validate OHLCV candles (generic CSV or Binance klines); locate a symbol's file."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bt_lstm.data.files import DATA_DIR_ENV
from bt_lstm.trading.timeframe import Timeframe
from bt_lstm.trading.values import is_placeholder

logger = logging.getLogger(__name__)

OHLCV = ["open", "high", "low", "close", "volume"]
# Time column names, after normalising a header (lower case, spaces and dashes -> underscores):
# `Open Time`, `open_time`, `Date`, `Datetime`, `Timestamp`, `time` ... all name the open time.
TIME_COLUMNS = ("timestamp", "time", "date", "datetime", "open_time", "opentime", "date_time",
                "time_stamp")
BINANCE_COLUMNS = [
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "trades", "taker_buy_base", "taker_buy_quote", "ignore",
]
# Binance's extra kline columns, kept when a file has them (`download --columns all`): the
# `flow` feature group reads trades and taker_buy_base.
EXTRA_COLUMNS = ("quote_volume", "trades", "taker_buy_base", "taker_buy_quote")
REGIME_NAMES = {"bearish": 0, "sideways": 1, "bullish": 2}
MAX_PRICE = 1e12  # no asset is quoted above this; 1e300 is a unit or parsing error
MAX_VOLUME = 1e20


class DataError(ValueError):
    """Input data that cannot be used; the message says what, where and how to fix it."""


@dataclass(frozen=True)
class GapReport:
    """Missing candles found between consecutive timestamps."""

    n_gaps: int
    n_missing: int
    largest_missing: int
    largest_at: pd.Timestamp | None

    def describe(self) -> str:
        if self.n_gaps == 0:
            return "no gaps"
        return (f"{self.n_missing} missing candles in {self.n_gaps} gaps "
                f"(largest: {self.largest_missing} candles after {self.largest_at})")


def parse_duration(text: str) -> pd.Timedelta | None:
    """'15m', '4h', '1d', '365d', '2w' -> Timedelta; None when it is not such a span.

    The kernel's ``Timeframe.parse`` reads it (one parser for every bar length and span), not
    ``pd.Timedelta(str)``, whose unit spellings change between pandas versions ('d' is
    deprecated in pandas 3).
    """
    try:
        return pd.Timedelta(milliseconds=Timeframe.parse(str(text)).ms)
    except ValueError:
        return None


def parse_timeframe(timeframe: str) -> pd.Timedelta:
    """'4h' -> Timedelta(hours=4); raise DataError for anything that is not a bar length."""
    try:
        return pd.Timedelta(milliseconds=Timeframe.parse(timeframe).ms)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def data_path(symbol: str, timeframe: str, data_dir: str | os.PathLike | None = None) -> Path:
    """``<data_dir>/<SYMBOL>_<timeframe>.csv`` (data_dir default: $BT_LSTM_DATA_DIR or data)."""
    base = Path(data_dir or os.environ.get(DATA_DIR_ENV) or "data")
    return base / f"{symbol.upper()}_{timeframe}.csv"


def resolve_data_path(symbol: str, timeframe: str, data_dir: str | os.PathLike | None = None
                      ) -> Path:
    """Return ``<data_dir>/<SYMBOL>_<timeframe>.csv`` or raise DataError saying where it looked."""
    path = data_path(symbol, timeframe, data_dir)
    if not path.is_file():
        raise DataError(
            f"no data for {symbol.upper()} {timeframe}: looked for {path.resolve()}; download it "
            f"with `{download_command(symbol, timeframe, data_dir)}`, or put a CSV "
            f"(timestamp,open,high,low,close,volume) there, or pass --csv FILE")
    return path


def download_command(symbol: str, timeframe: str, data_dir: str | os.PathLike | None = None
                     ) -> str:
    """The exact command that downloads (or updates) ``<data_dir>/<SYMBOL>_<timeframe>.csv``."""
    cmd = f"python runners/download.py --symbol {symbol.upper()} --timeframe {timeframe}"
    return cmd + (f" --data-dir {data_dir}" if data_dir else "")


def _epoch_unit(values: pd.Series) -> str:
    magnitude = float(np.nanmedian(np.abs(values.to_numpy(dtype=float))))
    if magnitude < 1e11:
        return "s"
    if magnitude < 1e14:
        return "ms"
    if magnitude < 1e17:
        return "us"
    return "ns"


_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")


def _check_offsets(raw: pd.Series, where: str) -> None:
    """Naive and offset-carrying timestamps mixed is an error; several offsets, a warning."""
    text = raw.astype(str).str.strip()
    offsets = text.str.extract(_OFFSET.pattern, expand=False)
    has = offsets.notna()
    if has.any() and not has.all():
        i = int(np.flatnonzero(~has.to_numpy())[0])
        raise DataError(f"{where}: row {i + 2} ({text.iloc[i]}): some timestamps carry a UTC "
                        f"offset and some do not, so the naive ones are ambiguous; give every "
                        f"timestamp in UTC (e.g. 2021-01-01T00:00:00Z)")
    distinct = sorted(set(offsets.dropna().str.replace("Z", "+00:00")))
    if len(distinct) > 1:
        logger.warning("%s: timestamps mix UTC offsets (%s), as local-time exports across a "
                       "daylight-saving change do; each was converted to UTC", where,
                       ", ".join(distinct))


def _parse_times(raw: pd.Series, where: str) -> pd.DatetimeIndex:
    numeric = pd.to_numeric(raw, errors="coerce")
    try:
        if numeric.notna().all():
            times = pd.to_datetime(numeric.astype("int64"), unit=_epoch_unit(numeric), utc=True)
        else:
            _check_offsets(raw, where)
            times = pd.to_datetime(raw.astype(str), utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"{where}: timestamps could not be read ({exc}); use ISO-8601 "
                        f"(2021-01-01T00:00:00Z) or epoch seconds/milliseconds") from None
    return pd.DatetimeIndex(times).tz_convert("UTC").tz_localize(None)


def _read_table(path: Path) -> tuple[pd.DataFrame, str]:
    where = str(path)
    try:
        head = pd.read_csv(path, header=None, nrows=1, dtype=str)
    except pd.errors.EmptyDataError:
        raise DataError(f"{where}: the file is empty; give a CSV with a header "
                        f"timestamp,open,high,low,close,volume and one row per candle") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    first = head.iloc[0].tolist()
    headerless = pd.to_numeric(pd.Series(first[:6]), errors="coerce").notna().all()
    try:
        if headerless and len(first) == 12:
            return pd.read_csv(path, header=None, names=BINANCE_COLUMNS), "binance"
        if headerless:
            raise DataError(f"{where}: no header row and not a 12-column Binance kline file; add "
                            f"the header timestamp,open,high,low,close,volume")
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    frame.columns = [normalise_column(c) for c in frame.columns]
    if len(frame.columns) == 12 and "open_time" in frame.columns:
        return frame, "binance"
    return frame, "generic"


def normalise_column(name: object) -> str:
    """'Open Time' -> 'open_time', ' Close ' -> 'close': lower case, runs of spaces, dashes and
    underscores become one underscore."""
    return re.sub(r"[\s_\-]+", "_", str(name).strip().lower())


def load_ohlcv(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a candle CSV.

    Parameters
    ----------
    path
        Generic ``timestamp,open,high,low,close,volume`` (any column case; ISO-8601 or epoch
        s/ms/µs) or a Binance kline CSV (12 columns, header optional, open time in ms or µs).

    Returns
    -------
    Frame with lowercase ``open high low close volume`` (plus ``regime`` and the Binance columns
    ``EXTRA_COLUMNS`` when the file has them),
    indexed by the candle's open time as a sorted, unique, tz-naive UTC DatetimeIndex.

    Raises
    ------
    DataError
        On a missing file, missing columns, unreadable values, NaN/inf, non-positive prices,
        inconsistent OHLC, or duplicate / unsorted timestamps.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path given to --csv")
    frame, kind = _read_table(path)
    where = str(path)
    time_col = next((c for c in TIME_COLUMNS if c in frame.columns), None)
    missing = [c for c in OHLCV if c not in frame.columns]
    if time_col is None:
        missing.insert(0, "timestamp")
    if missing:
        found = ", ".join(frame.columns)
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; the header must hold "
                        f"timestamp,open,high,low,close,volume (found: "
                        f"{found[:120] + '...' if len(found) > 120 else found})")
    if frame.empty:
        raise DataError(f"{where}: header only, no candles; add one row per candle")
    index = _parse_times(frame[time_col], where)
    out = pd.DataFrame(index=index)
    out.index.name = "timestamp"
    for col in OHLCV:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{where}: row {i + 2} ({index[i]}): {col} {frame[col].iloc[i]!r} is "
                            f"not a number; fix or remove that row")
        out[col] = values.to_numpy(dtype=float)
    for col in EXTRA_COLUMNS:
        if col in frame.columns:
            out[col] = _extra_column(frame[col], col, index, where)
    if "regime" in frame.columns:
        out["regime"] = _parse_regime_column(frame["regime"], where)
    validate_ohlcv(out, where)
    report_placeholders(out, where)
    return out


def _extra_column(raw: pd.Series, col: str, index: pd.DatetimeIndex, where: str) -> np.ndarray:
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}: row {i + 2} ({index[i]}): {col} {raw.iloc[i]!r} is not a "
                        f"number >= 0; fix or remove that row")
    return values


def _parse_regime_column(raw: pd.Series, where: str) -> np.ndarray:
    mapped = raw.map(lambda v: REGIME_NAMES.get(str(v).strip().lower(), v))
    values = pd.to_numeric(mapped, errors="coerce")
    if values.isna().any() or not values.isin([0, 1, 2]).all():
        raise DataError(f"{where}: the regime column must hold 0/1/2 or bearish/sideways/bullish "
                        f"on every row")
    return values.to_numpy(dtype=np.int64)


def _first_bad(mask: np.ndarray, frame: pd.DataFrame, where: str, what: str, fix: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise DataError(f"{where}: row {i + 2} ({frame.index[i]}): {what} "
                        f"({int(mask.sum())} such rows); {fix}")


def validate_ohlcv(frame: pd.DataFrame, where: str = "data") -> None:
    """Raise DataError for the first problem found in an OHLCV frame; return None when usable."""
    values = frame[OHLCV].to_numpy(dtype=float)
    _first_bad(~np.isfinite(values).all(axis=1), frame, where, "NaN or infinite value",
               "fill or drop incomplete candles before loading")
    o, h, lo, c, v = values.T
    _first_bad((values[:, :4] <= 0).any(axis=1), frame, where, "non-positive price",
               "prices must be > 0")
    _first_bad(v < 0, frame, where, "negative volume", "volume must be >= 0")
    _first_bad((values[:, :4] > MAX_PRICE).any(axis=1) | (v > MAX_VOLUME), frame, where,
               f"absurd value (a price above {MAX_PRICE:g} or a volume above {MAX_VOLUME:g})",
               "check the units and the column order of that row")
    _first_bad(h < lo, frame, where, "high < low", "check the column order")
    _first_bad((o < lo) | (o > h) | (c < lo) | (c > h), frame, where,
               "open or close outside [low, high]", "check the column order or the candle")
    idx = frame.index
    dup = idx.duplicated()
    _first_bad(np.asarray(dup), frame, where, "duplicate timestamp",
               "remove repeated candles (a local-time export repeats an hour when daylight "
               "saving ends: export timestamps in UTC)")
    if len(idx) > 1:
        back = np.concatenate([[False], np.asarray(idx[1:] <= idx[:-1])])
        _first_bad(back, frame, where, "timestamp earlier than the row before",
                   "sort the file by time")


def placeholder_mask(frame: pd.DataFrame) -> np.ndarray:
    """(T,) bool: zero-volume candles with open = high = low = close, which exchanges insert
    during outages. No trade happened at their price: never a fill price or a target."""
    v = frame[OHLCV].to_numpy(dtype=float)  # (T, 5)
    return is_placeholder(v[:, 0], v[:, 1], v[:, 2], v[:, 3], v[:, 4])


def report_placeholders(frame: pd.DataFrame, where: str) -> int:
    """Log how many placeholder candles there are (kept, flagged); return the count."""
    mask = placeholder_mask(frame)
    if mask.any():
        logger.warning("%s: %d zero-volume placeholder candles (open=high=low=close), first "
                       "at %s: kept for the features, never used as a fill price or a "
                       "training target", where, int(mask.sum()),
                       frame.index[int(np.flatnonzero(mask)[0])])
    return int(mask.sum())


def find_gaps(index: pd.DatetimeIndex, bar: pd.Timedelta | None = None) -> GapReport:
    """Count missing candles, taking the bar length as the most common spacing unless given."""
    if len(index) < 3:
        return GapReport(0, 0, 0, None)
    steps = pd.Series(index[1:] - index[:-1])
    bar = bar if bar is not None else steps.mode().iloc[0]
    missing = (steps / bar).round().astype(int) - 1
    gaps = missing[missing > 0]
    if gaps.empty:
        return GapReport(0, 0, 0, None)
    at = int(gaps.idxmax())
    return GapReport(int(gaps.size), int(gaps.sum()), int(gaps.max()), index[at])


def infer_bar(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The most common spacing between candles."""
    if len(index) < 2:
        raise DataError("need at least two candles to know the bar length")
    return pd.Series(index[1:] - index[:-1]).mode().iloc[0]


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """sha256 of the index and OHLCV values: identical data, identical fingerprint."""
    h = hashlib.sha256()
    h.update(frame.index.asi8.tobytes())
    h.update(np.ascontiguousarray(frame[OHLCV].to_numpy(dtype=np.float64)).tobytes())
    if "regime" in frame.columns:
        h.update(frame["regime"].to_numpy(dtype=np.int64).tobytes())
    return h.hexdigest()
