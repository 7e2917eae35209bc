"""Candles in and files out: loading and validating OHLCV files, the synthetic SAMPLE market, and
the atomic file writes every other layer uses.

Belongs here: reading, checking and (later) downloading candles; file formats; atomic writes.
Does not: features or anything derived from prices (signals/), torch (models/), backtrader
(backtest/). Imports only ``bt_lstm.config`` from this package.
"""
