"""RegimeLSTMStrategy: trade the forecast of the model of the current regime."""
from __future__ import annotations

from bt_lstm.models.forecast import Forecaster, load_forecaster
from bt_lstm.trading.decide import decide_signal
from strategies.base import BaseStrategy, check_inference


class RegimeLSTMStrategy(BaseStrategy):
    """Long, short or flat on the thresholded next-bar forecast of the current regime's model.

    Entry
        At the close of bar t the regime of t picks the model, which forecasts the next bar's log
        return from the window of the last ``lookback`` bars. Long when the forecast exceeds
        ``threshold``; short when it is below ``-threshold`` (unless ``long_only``).
    Exit
        Flat when the forecast lies within ``[-threshold, threshold]`` or is unavailable
        (warm-up); a signal of the other side reverses the position in one order.
    Sizing
        ``position_fraction`` of current equity at the close of t, rounded down to
        ``size_step`` (fractional sizes, as crypto needs). Sizes that round to zero are counted.
    Execution
        Market orders: decided at the close of t, filled at the open of t+1 (backtrader's
        default, no cheat-on-close). Commission and slippage come from the broker. Rejected
        orders (margin, etc.) are counted and logged, never dropped silently.

    Forecasts arrive either precomputed in batch as the feed's ``forecast`` / ``regime`` lines
    (``inference='batch'``, the fast path for backtests) or are computed here bar by bar from
    the candles seen so far (``inference='per_bar'``, for live or streaming use). Both give the
    same forecasts (tests/test_strategy.py). In a walk-forward the batch lines hold, at each
    bar, the forecast of the models of the fold that owns that bar, so the models switch at
    fold boundaries while an open position carries across. The bookkeeping (records, fills,
    trades, rejections, one order at a time) is ``strategies.base.BaseStrategy``'s.
    """

    params = (
        ("model_dir", None),  # bundle folder: every regime model is loaded at init
        ("forecaster", None),  # or an already-loaded bt_lstm Forecaster (per_bar needs one)
        ("inference", "batch"),  # batch: read the feed's forecast line | per_bar: run the model
        ("threshold", 0.001),  # |forecast| (log return) needed to hold a position
        ("long_only", False),  # never go short
    )

    def __init__(self) -> None:
        super().__init__()
        self._batch = check_inference(self, "forecast", "a feed with forecast/regime lines "
                                      "(bt_lstm.backtest.engine.SignalData)")
        self.forecaster: Forecaster | None = self.p.forecaster
        if self.forecaster is None and self.p.model_dir is not None:
            self.forecaster = load_forecaster(self.p.model_dir)
        if self.forecaster is None and self.p.inference == "per_bar":
            raise ValueError("inference='per_bar' needs model_dir or forecaster")
        if self._batch:
            self._forecast, self._regime = self.data.lines.forecast, self.data.lines.regime

    def target(self) -> tuple[int, float, int]:
        """The thresholded forecast of this close, with the forecast and the regime."""
        if self._batch:
            forecast, regime = float(self._forecast[0]), int(self._regime[0])
        else:
            regime, forecast = self.forecaster.forecast_last(self.candles_so_far())
        return decide_signal(forecast, self.p.threshold, self.p.long_only), forecast, regime
