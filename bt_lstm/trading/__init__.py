"""The trading rules every path shares: forecast -> signal, order size, fill price at the next
open, commission, placeholder candles. Pure functions (standard library only).

Belongs here: the rules that must not drift between the Backtrader strategies, the live engine
and the reinforcement-learning environment, which all call these functions. Does not: state,
I/O, backtrader, torch.
"""
