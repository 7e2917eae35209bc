"""The trading rules under their first names, for the strategies: forecast -> signal, order size,
fill price at the next open, commission, placeholder candles.

The rules live in ``rules.py`` (signal, size), ``fills.py`` (price, commission: the Account's
arithmetic) and ``values.py`` (the placeholder rule); ``Account`` applies them for the live
engine and the RL environment. The strategies fill through Backtrader's broker and size through
``order_size``. The live and RL paths may not import this module (import-linter): they trade
through ``Account``.
"""
from __future__ import annotations

from bt_lstm.trading.fills import commission_of, fill_price
from bt_lstm.trading.rules import decide_signal, order_size
from bt_lstm.trading.values import is_placeholder

__all__ = ["commission_of", "decide_signal", "fill_price", "is_placeholder", "order_size"]
