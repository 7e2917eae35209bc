"""bt_lstm: regime-aware LSTM forecasters, backtested out of sample in Backtrader."""
from __future__ import annotations

__version__ = "0.1.0"
