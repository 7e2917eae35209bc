"""Feature groups (``FeatureConfig.groups``): each group's columns from candles up to t only,
concatenated in the configured order into the matrix the scaler, windows and networks see.

Legend: T bars of the data; H bars of a higher timeframe. Row t is the bar that opens at t and
closes at t + bar: a value at row t must be knowable at that close.

- ``price``: ``features.compute_features`` (today's features, ``FeatureConfig.names``).
- ``calendar``: hour of day and day of week of the bar's open, as sin / cos.
- ``flow``: taker-buy share of volume and the trailing z-score of the trade count, from the
  Binance kline columns ``taker_buy_base`` and ``trades`` (``download --columns all``).
- ``htf:TF``: the price features of TF candles resampled from the data; a TF candle is used
  from the first row whose close is at or after the TF candle's close (never an unfinished one).
- ``cross:SYMBOL``: the price features of another market whose candles the job put beside the
  data as ``SYMBOL.open`` ... (``attach_cross``: as-of, never forward in time).
- ``FILE.py:FUNCTION``: a user's plugin; the callable is loaded and checked elsewhere
  (``models.plugins``) and passed in, so this module runs no user code of its own accord.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from bt_lstm.config import FeatureConfig, parse_group
from bt_lstm.signals.features import compute_features, volume_z, warmup_bars
from bt_lstm.trading.timeframe import Timeframe

OHLCV = ("open", "high", "low", "close", "volume")
CALENDAR_COLUMNS = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")
FLOW_COLUMNS = ("taker_buy_share", "trades_z")
FLOW_INPUTS = ("trades", "taker_buy_base")  # Binance kline columns flow reads
DEFAULT_GROUPS = ("price",)
# Binance's weekly candles open on Monday 00:00 UTC; 1970-01-01 was a Thursday.
_MONDAY = pd.Timestamp("1970-01-05")

Plugin = Callable[[pd.DataFrame], pd.DataFrame]


class FeatureInputError(ValueError):
    """A group whose inputs the data lacks (flow without its columns, cross without the other
    market, htf no longer than the bar); the message says how to fix it."""


def cross_column(symbol: str, column: str) -> str:
    """The frame column holding another market's candle column: ``ETHUSDT.close``."""
    return f"{symbol.upper()}.{column}"


def data_bar(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The most common spacing of ``index`` (the bar length)."""
    if len(index) < 2:
        raise FeatureInputError("need at least two candles to know the bar length")
    return pd.Series(index[1:] - index[:-1]).mode().iloc[0]


def compute_groups(frame: pd.DataFrame, cfg: FeatureConfig,
                   plugins: Mapping[str, Plugin] | None = None) -> pd.DataFrame:
    """The columns of every group of ``cfg.groups``, in order, on ``frame``'s index.

    Parameters
    ----------
    plugins
        Group spec (``FILE.py:FUNCTION``) -> its loaded function; needed for plugin groups.

    Raises
    ------
    FeatureInputError
        A group's inputs are missing from ``frame`` (one line naming the group and the fix).

    Notes
    -----
    With the default groups this is ``compute_features(frame, cfg)``, bit for bit. Every group
    is causal: cutting ``frame`` after row t leaves the values at rows <= t unchanged
    (tests/test_groups.py), plugins by the check in ``models.plugins``. The input frame is
    not modified.
    """
    if tuple(cfg.groups) == DEFAULT_GROUPS:
        return compute_features(frame, cfg)
    parts = [group_frame(frame, cfg, group, plugins or {}) for group in cfg.groups]
    out = pd.concat(parts, axis=1) if len(parts) > 1 else parts[0]
    dup = out.columns[out.columns.duplicated()]
    if len(dup):
        raise FeatureInputError(f"feature column {dup[0]!r} comes from two groups; rename it "
                                f"in your plugin")
    return out


def group_frame(frame: pd.DataFrame, cfg: FeatureConfig, group: str,
                plugins: Mapping[str, Plugin]) -> pd.DataFrame:
    """One group's columns on ``frame``'s index (see the module docstring)."""
    kind, arg = parse_group(group)
    if kind == "price":
        return compute_features(frame, cfg)
    if kind == "calendar":
        return calendar_features(frame.index)
    if kind == "flow":
        return flow_features(frame, cfg)
    if kind == "htf":
        return htf_features(frame, cfg, arg).add_prefix(f"{group}:")
    if kind == "cross":
        return cross_features(frame, cfg, arg).add_prefix(f"{group}:")
    if group not in plugins:
        raise FeatureInputError(f"feature plugin {group} was not loaded")
    return call_plugin(plugins[group], frame, group)


def calendar_features(index: pd.DatetimeIndex) -> pd.DataFrame:
    """Hour of day and day of week of each bar's open as sin / cos (known in advance).

    Examples
    --------
    >>> idx = pd.DatetimeIndex(["2024-01-01 06:00"])  # a Monday
    >>> calendar_features(idx).round(3).iloc[0].tolist()
    [1.0, 0.0, 0.0, 1.0]
    """
    hour = (index.hour + index.minute / 60.0).to_numpy(dtype=np.float64)
    dow = index.day_of_week.to_numpy(dtype=np.float64)
    values = np.column_stack([np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24),
                              np.sin(2 * np.pi * dow / 7), np.cos(2 * np.pi * dow / 7)])
    return pd.DataFrame(values, index=index, columns=list(CALENDAR_COLUMNS))


def flow_features(frame: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """Taker-buy share of volume (0.5 on a bar without volume) and the trailing z-score of
    log(1 + trades) over ``cfg.volume_bars``.

    Raises
    ------
    FeatureInputError
        The frame has no ``trades`` / ``taker_buy_base`` columns.
    """
    missing = [c for c in FLOW_INPUTS if c not in frame.columns]
    if missing:
        raise FeatureInputError(
            f"feature group flow needs the Binance kline columns {', '.join(FLOW_INPUTS)}, "
            f"which this data lacks; download it with `bt-lstm download --symbol S "
            f"--columns all` (or drop flow from --features)")
    volume = frame["volume"].to_numpy(dtype=np.float64)
    taker = frame["taker_buy_base"].to_numpy(dtype=np.float64)
    share = np.where(volume > 0, taker / np.where(volume > 0, volume, 1.0), 0.5)
    trades_z = volume_z(frame["trades"].to_numpy(dtype=np.float64), cfg.volume_bars)
    return pd.DataFrame({"taker_buy_share": share, "trades_z": trades_z}, index=frame.index)


def htf_bar(tf: str, bar: pd.Timedelta) -> pd.Timedelta:
    """The higher timeframe's length; refused unless it is a whole multiple (> 1) of ``bar``."""
    high = pd.Timedelta(milliseconds=Timeframe.parse(tf).ms)
    if high <= bar or high % bar != pd.Timedelta(0):
        data_tf = Timeframe(int(bar / pd.Timedelta("1ms")))
        raise FeatureInputError(f"feature group htf:{tf}: a higher timeframe must be a whole "
                                f"multiple of the data's {data_tf} bars and longer, e.g. htf:1d "
                                f"on 4h candles")
    return high


def resample_candles(frame: pd.DataFrame, high: pd.Timedelta) -> pd.DataFrame:
    """Candles of length ``high`` from ``frame``'s, labelled by their open time (weeks open on
    Mondays); bins without candles are dropped, and so is a first bin the data starts inside
    of (it would be an incomplete candle)."""
    origin = _MONDAY if high % pd.Timedelta("7D") == pd.Timedelta(0) else "epoch"
    agg = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    out = frame[list(OHLCV)].resample(high, origin=origin, label="left", closed="left").agg(agg)
    out = out[out["close"].notna()]
    if len(out) and out.index[0] < frame.index[0]:
        out = out.iloc[1:]
    return out


def htf_features(frame: pd.DataFrame, cfg: FeatureConfig, tf: str) -> pd.DataFrame:
    """The price features of completed ``tf`` candles, as of each row's close.

    Notes
    -----
    A ``tf`` candle opening at s closes at s + tf; row t closes at t + bar. Row t uses the last
    candle with s + tf <= t + bar: the candle that closes with row t is used from row t (its
    last bar), the candle still open at t never is.
    """
    bar = data_bar(frame.index)
    high = htf_bar(tf, bar)
    candles = resample_candles(frame, high)
    feats = compute_features(candles, cfg).to_numpy()  # (H, F)
    return asof_rows(feats, _ns(candles.index + high), _ns(frame.index + bar), frame.index,
                     list(cfg.names))


def _ns(index: pd.DatetimeIndex) -> np.ndarray:
    # one unit for every comparison: files load as ns or us depending on how they were parsed
    return index.as_unit("ns").asi8


def asof_rows(values: np.ndarray, known_at: np.ndarray, row_close: np.ndarray,
              index: pd.DatetimeIndex, columns: list[str]) -> pd.DataFrame:
    """For each row, the last of ``values`` (rows known at ``known_at``, sorted) known at or
    before the row's close; NaN before the first. Never a value from after the row."""
    pos = np.searchsorted(known_at, row_close, side="right") - 1  # (T,)
    out = np.full((len(row_close), values.shape[1]), np.nan)
    ok = pos >= 0
    out[ok] = values[pos[ok]]
    return pd.DataFrame(out, index=index, columns=columns)


def attach_cross(frame: pd.DataFrame, symbol: str, other: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with another market's candles beside it as ``SYMBOL.open`` ... ``.volume``.

    Row t gets the other market's last candle that has closed by row t's close (as-of, never
    forward in time): where the other market has a gap its last candle repeats, before its
    first candle the columns are NaN. The other market's bar must not be longer than the data's.

    Raises
    ------
    FeatureInputError
        The other market's bars are longer than the data's.
    """
    bar, other_bar = data_bar(frame.index), data_bar(other.index)
    if other_bar > bar:
        raise FeatureInputError(f"cross:{symbol}: its candles are {other_bar} apart, longer "
                                f"than the data's {bar}; load it at the data's timeframe")
    aligned = asof_rows(other[list(OHLCV)].to_numpy(dtype=np.float64),
                        _ns(other.index + other_bar), _ns(frame.index + bar), frame.index,
                        [cross_column(symbol, c) for c in OHLCV])
    out = frame.drop(columns=[c for c in aligned.columns if c in frame.columns])
    return pd.concat([out, aligned], axis=1)


def cross_features(frame: pd.DataFrame, cfg: FeatureConfig, symbol: str) -> pd.DataFrame:
    """The price features of the other market's candles beside the data (``attach_cross``).

    Raises
    ------
    FeatureInputError
        The frame does not hold that market's candles.
    """
    cols = [cross_column(symbol, c) for c in OHLCV]
    if any(c not in frame.columns for c in cols):
        raise FeatureInputError(f"feature group cross:{symbol} needs {symbol}'s candles beside "
                                f"the data; the jobs load <data-dir>/{symbol}_<timeframe>.csv "
                                f"(give --data-dir, or download it with `bt-lstm download "
                                f"--symbol {symbol}`)")
    other = frame[cols].set_axis(list(OHLCV), axis=1)
    known = other["close"].notna().to_numpy()
    out = np.full((len(frame), len(cfg.names)), np.nan)
    if known.any():  # NaN only before the other market's first candle
        first = int(np.argmax(known))
        out[first:] = compute_features(other.iloc[first:], cfg).to_numpy()
    return pd.DataFrame(out, index=frame.index, columns=list(cfg.names))


def call_plugin(func: Plugin, frame: pd.DataFrame, group: str) -> pd.DataFrame:
    """A plugin's columns on a copy of ``frame``, as float64; ValueError (one line) for an
    output that is not a numeric frame on the same index."""
    try:
        out = func(frame.copy())
    except Exception as exc:  # the user's code: one line naming the plugin, not a traceback
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"feature plugin {group} failed: {type(exc).__name__}: {first}") \
            from exc
    if not isinstance(out, pd.DataFrame):
        raise ValueError(f"feature plugin {group} returned {type(out).__name__}, not a "
                         f"pandas DataFrame")
    if not out.index.equals(frame.index):
        raise ValueError(f"feature plugin {group} returned a frame on another index ({len(out)} "
                         f"rows, first {out.index[0] if len(out) else None}); return columns on "
                         f"the candles' own index")
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col]):
            raise ValueError(f"feature plugin {group}: column {col!r} is not numeric "
                             f"({out[col].dtype}); return float columns")
    return out.astype(np.float64).rename(columns=str)


def group_warmup_bars(cfg: FeatureConfig, bar: pd.Timedelta | None = None) -> int:
    """Bars before every built-in group has a value; an ``htf`` group needs its warm-up in
    higher candles, plus the candle the data starts inside of and the one not yet closed."""
    need = warmup_bars(cfg)
    for group in cfg.groups:
        kind, arg = parse_group(group)
        if kind == "htf" and bar is not None:
            ratio = int(htf_bar(arg, bar) / bar)
            need = max(need, (warmup_bars(cfg) + 2) * ratio)
    return need


def input_fingerprint(frame: pd.DataFrame, cfg: FeatureConfig) -> str | None:
    """sha256 of the frame's columns the groups read beside OHLCV (flow's, cross markets');
    None with none of those groups (the data fingerprint then covers everything)."""
    cols: list[str] = []
    for group in cfg.groups:
        kind, arg = parse_group(group)
        if kind == "flow":
            cols += [c for c in FLOW_INPUTS if c in frame.columns]
        elif kind == "cross":
            cols += [c for c in (cross_column(arg, o) for o in OHLCV) if c in frame.columns]
    if not cols:
        return None
    h = hashlib.sha256(",".join(cols).encode())
    h.update(np.ascontiguousarray(frame[cols].to_numpy(dtype=np.float64)).tobytes())
    return h.hexdigest()
