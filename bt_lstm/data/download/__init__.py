"""Downloading candles: Binance's public kline archives (``archive.py``, standard library HTTP)
and any ccxt exchange (``ccxt_source.py``), merged incrementally and written atomically
(``store.py``) by ``sync.download_candles``.

This subpackage is the only home of HTTP clients and ccxt in the project (an import contract in
setup.cfg says so). It does not import pandas: a no-op update stays fast.
"""
from __future__ import annotations

from bt_lstm.data.download.store import DownloadError, DownloadResult
from bt_lstm.data.download.sync import SOURCES, DownloadRequest, download_candles, is_stale

__all__ = ["SOURCES", "DownloadError", "DownloadRequest", "DownloadResult", "download_candles",
           "is_stale"]
