"""The trading kernel every path shares: the values (``Candle``, ``Forecast``, ``Decision``,
``Fill``, ``Timeframe``), the rules (forecast -> signal, order size, the placeholder rule) and the
one ``Account`` (fill at the next open, commission, slippage, fractional sizes, Backtrader's
margin checks) that the live engine and the RL environment drive.

Belongs here: those values and rules, and the only cash and position book-keeping outside
Backtrader. Does not: I/O, pandas, backtrader, torch (standard library and ``bt_lstm.config``).
"""
