"""Backtrader strategies built on bt_lstm."""
