"""Pure, causal transforms of candles: features, regime labels, the target and model windows.

Belongs here: functions whose value at bar t uses bars up to t only (the target in windows.py is
the single forward look), and fitted statistics in the ``fit_x(train) -> params`` /
``apply_x(frame, params)`` shape. Does not: file or network I/O, torch, backtrader, plotting.
"""
