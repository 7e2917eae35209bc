"""The golden backtest: a fixed synthetic series and fixed forecasts through the strategy.

Regenerate the pinned values (after a deliberate change of the engine, costs or strategy, with
the reason in the commit message):

    python tests/golden/backtest_case.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

GOLDEN = Path(__file__).with_name("backtest.json")


def golden_case(cfg=None) -> dict:
    """Run the case (``cfg``: a StrategyConfig, default the defaults); return what the golden
    file pins."""
    from bt_lstm.backtest.engine import run_backtest
    from bt_lstm.config import StrategyConfig
    from bt_lstm.data.synthetic import make_market
    from strategies.lstm_strategy import RegimeLSTMStrategy

    frame = make_market(n_bars=400, seed=11).frame
    bar = np.arange(len(frame))
    # long, flat and short spells from a fixed wave; NaN (no forecast) for the first 10 bars
    forecast = np.where(bar < 10, np.nan, 0.003 * np.sin(bar / 9.0))
    signals = pd.DataFrame({"forecast": forecast, "regime": 1.0}, index=frame.index)
    res = run_backtest(frame, RegimeLSTMStrategy, cfg or StrategyConfig(), signals=signals)
    return {"final_value": res.final_value, "trades": int(len(res.trades)),
            "fill_bars": res.fills["bar"].astype(int).tolist(),
            "fill_sizes": res.fills["size"].round(9).tolist(),
            "commission_paid": float(res.fills["commission"].sum())}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    GOLDEN.write_text(json.dumps(golden_case(), indent=2) + "\n")
    print(f"written: {GOLDEN}")
