"""Trade bt-lstm's forecast of the next candle's log return inside freqtrade (FreqAI).

Entry: long at the next open when the model forecasts a log return above ``threshold`` and
FreqAI's ``do_predict`` is 1 (a complete window and a network with validated skill).
Exit: at the next open once the forecast is at or below ``threshold`` or ``do_predict`` is 0.
Sizing: the config's stake (``stake_amount``). Execution: freqtrade fills at the next open.
Features: bt-lstm's causal features (``bt_lstm.signals.features``); label: the next candle's
log return, the one forward look.
"""
from __future__ import annotations

import numpy as np
from freqtrade.strategy import IStrategy
from pandas import DataFrame

from bt_lstm.config import FeatureConfig
from bt_lstm.signals.features import compute_features, warmup_bars

LABEL = "&-log_ret_next"
FEATURES = FeatureConfig()


class BtLstmStrategy(IStrategy):
    """Long-only: hold BTC while the forecast exceeds the threshold (as RegimeLSTMStrategy)."""

    INTERFACE_VERSION = 3
    timeframe = "4h"
    can_short = False
    process_only_new_candles = True
    use_exit_signal = True
    minimal_roi = {"0": 100.0}  # exits come from the forecast, not from ROI
    stoploss = -0.99
    startup_candle_count = warmup_bars(FEATURES) + 10
    threshold = 0.001  # |forecast| (log return) needed to hold a position

    def feature_engineering_standard(self, dataframe: DataFrame, metadata: dict,
                                     **kwargs) -> DataFrame:
        values = compute_features(dataframe, FEATURES)  # causal: row t uses candles up to t
        for name in values.columns:
            dataframe[f"%-bt_{name}"] = values[name].to_numpy()
        return dataframe

    def set_freqai_targets(self, dataframe: DataFrame, metadata: dict, **kwargs) -> DataFrame:
        close = dataframe["close"]
        dataframe[LABEL] = np.log(close.shift(-1) / close)
        return dataframe

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return self.freqai.start(dataframe, metadata, self)

    def populate_entry_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        go = (df["do_predict"] == 1) & (df[LABEL] > self.threshold)
        df.loc[go, ["enter_long", "enter_tag"]] = (1, "bt_lstm_long")
        return df

    def populate_exit_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        stop = (df["do_predict"] != 1) | (df[LABEL] <= self.threshold)
        df.loc[stop, ["exit_long", "exit_tag"]] = (1, "bt_lstm_flat")
        return df
