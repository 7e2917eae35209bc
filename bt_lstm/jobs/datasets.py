"""The candles a command runs on: a CSV, a --symbol's file (downloaded first on request, or the
bundled snapshot) or the synthetic SAMPLE market, named and checked against the timeframe."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bt_lstm.config import PipelineConfig
from bt_lstm.data.candles import (
    DataError,
    data_path,
    infer_bar,
    load_ohlcv,
    parse_timeframe,
    resolve_data_path,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """Where the candles come from (the data flags of a command, or a saved run's source)."""

    csv: str | None = None
    symbol: str | None = None
    timeframe: str | None = None
    data_dir: str | None = None
    download: bool = False  # fetch or extend the --symbol file first
    base_url: str | None = None  # with download: the archive root


def timeframe_label(bar: pd.Timedelta) -> str:
    """A bar length as people write it: 15m, 4h, 1d."""
    minutes = int(bar.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def load_dataset(src: DataSource, cfg: PipelineConfig, check_split: bool = True,
                 fetch: Callable[[Any], Any] | None = None,
                 notify: Callable[[str], None] = logger.info) -> tuple[pd.DataFrame, str, str]:
    """(candles, dataset name, timeframe label) from ``src.csv``, ``src.symbol`` or SAMPLE.

    ``check_split``: refuse data too short for the main job's train/validation/test split
    (walk-forward checks its own fold plan instead). ``fetch(request)`` runs a download (the
    command's progress bar around ``download_candles``); ``notify`` gets one-line notes.
    """
    from bt_lstm.data.synthetic import SAMPLE_NAME, make_sample
    from bt_lstm.research.pipeline import check_enough_bars

    _check_source(src)
    if src.csv:
        frame, name = load_ohlcv(src.csv), Path(src.csv).stem
    elif src.symbol:
        tf = src.timeframe or "4h"
        parse_timeframe(tf)
        frame, name = load_symbol(src, tf, fetch, notify), src.symbol.upper()
    else:
        if src.timeframe and parse_timeframe(src.timeframe) != parse_timeframe("4h"):
            raise DataError("the SAMPLE market is 4h; drop --timeframe or give --csv/--symbol")
        frame, name = make_sample().frame, SAMPLE_NAME
    bar = infer_bar(frame.index)
    if check_split:
        check_enough_bars(len(frame), cfg, name, bar)
    label = timeframe_label(bar)
    if src.timeframe and parse_timeframe(src.timeframe) != bar:
        raise DataError(f"{name}: candles are {label} apart but --timeframe says "
                        f"{src.timeframe}; pass --timeframe {label}")
    if name.lower().endswith(f"_{label}"):  # BTCUSDT_4h.csv is dataset BTCUSDT, 4h bars
        name = name[: -len(label) - 1]
    frame = attach_feature_inputs(frame, src, cfg, label, fetch, notify)
    return frame, name, label


def attach_feature_inputs(frame: pd.DataFrame, src: DataSource, cfg: PipelineConfig, tf: str,
                          fetch: Callable[[Any], Any] | None = None,
                          notify: Callable[[str], None] = logger.info) -> pd.DataFrame:
    """``frame`` with each ``cross:SYMBOL`` market's candles beside it (loaded as --symbol
    loads, from the same data folder and timeframe), after every feature group was computed
    once and every plugin passed its look-ahead check: a group that cannot be built fails
    here, in one line, before any training."""
    from bt_lstm.config import parse_group
    from bt_lstm.models.plugins import check_feature_inputs
    from bt_lstm.signals.groups import attach_cross

    for group in cfg.features.groups:
        kind, symbol = parse_group(group)
        if kind == "cross":
            other_src = DataSource(symbol=symbol, timeframe=tf, data_dir=src.data_dir,
                                   download=src.download, base_url=src.base_url)
            frame = attach_cross(frame, symbol, load_symbol(other_src, tf, fetch, notify))
    check_feature_inputs(frame, cfg.features)
    return frame


def _check_source(src: DataSource) -> None:
    if src.csv and src.symbol:
        raise DataError("give either --csv or --symbol, not both")
    if src.download and not src.symbol:
        raise DataError("--download needs --symbol (it fetches <SYMBOL>_<timeframe>.csv)")
    if src.base_url and not src.download:
        raise DataError("--base-url applies to --download; add --download or drop it")


def load_symbol(src: DataSource, tf: str, fetch: Callable[[Any], Any] | None = None,
                notify: Callable[[str], None] = logger.info) -> pd.DataFrame:
    """A symbol's candles: downloaded first with ``src.download`` (when missing or stale), else
    the file in the data folder, else the bundled snapshot (BTCUSDT 4h), else an error naming
    the exact download command."""
    from bt_lstm.data.snapshot import find_snapshot, load_snapshot

    path = data_path(src.symbol, tf, src.data_dir)
    if src.download:
        from bt_lstm.data.download import DownloadRequest, download_candles, is_stale
        from bt_lstm.data.download.archive import DEFAULT_BASE_URL

        if is_stale(path, tf):
            req = DownloadRequest(src.symbol.upper(), tf, data_dir=str(path.parent),
                                  base_url=src.base_url or DEFAULT_BASE_URL)
            notify((fetch or download_candles)(req).summary())
        return load_ohlcv(path)
    snap = None if path.is_file() else find_snapshot(src.symbol, tf)
    if snap is not None:
        notify(f"note: {snap.describe(src.data_dir)}")
        return load_snapshot(snap)
    return load_ohlcv(resolve_data_path(src.symbol, tf, src.data_dir))


def trim_dates(frame: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    """The candles from ``start`` to ``end`` (inclusive; either may be None)."""
    out = frame
    if start:
        out = out[out.index >= pd.Timestamp(start)]
    if end:
        out = out[out.index <= pd.Timestamp(end)]
    if len(out) < 2:
        raise ValueError(f"no candles between --start {start} and --end {end} "
                         f"(the data covers {frame.index[0]} to {frame.index[-1]})")
    return out


def market_sources(src: DataSource, csvs: list[str] | None, symbols: str | None
                   ) -> list[DataSource]:
    """One ``DataSource`` per market of a command's data flags: every ``--csv`` given, or each
    of ``--symbols`` read as ``--symbol`` is; one source (``src``) when neither names several.

    Raises
    ------
    DataError
        ``--symbols`` beside ``--symbol`` or ``--csv``.
    """
    from dataclasses import replace

    if symbols:
        if src.symbol or csvs:
            raise DataError("give --symbols, or --csv (repeated), or --symbol: not together")
        names = [s.strip() for s in symbols.split(",") if s.strip()]
        return [replace(src, symbol=s, csv=None) for s in names]
    if csvs and len(csvs) > 1:
        if src.symbol:
            raise DataError("give either --csv or --symbol, not both")
        return [replace(src, csv=c) for c in csvs]
    return [replace(src, csv=csvs[0] if csvs else src.csv)]


def load_markets(sources: list[DataSource], cfg: PipelineConfig,
                 fetch: Callable[[Any], Any] | None = None,
                 notify: Callable[[str], None] = logger.info
                 ) -> tuple[dict[str, pd.DataFrame], str]:
    """(market -> candles, timeframe label) of several sources, each loaded as ``load_dataset``
    loads one.

    Raises
    ------
    DataError
        The same market twice, or markets of different timeframes (one line each).
    """
    loaded = [load_dataset(src, cfg, False, fetch, notify) for src in sources]
    labels = {lab for _, _, lab in loaded}
    if len(labels) > 1:
        listed = ", ".join(f"{name} {lab}" for _, name, lab in loaded)
        raise DataError(f"markets of different timeframes ({listed}); give markets of one bar "
                        f"length (--timeframe)")
    frames: dict[str, pd.DataFrame] = {}
    for frame, name, _ in loaded:
        if name in frames:
            raise DataError(f"market {name} is given twice; give each market once")
        frames[name] = frame
    return frames, labels.pop()
