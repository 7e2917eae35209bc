"""DQNStrategy: trade the greedy action of a DQN agent (LSTM or Dense Q-network)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from bt_lstm.backtest.engine import nums_to_index
from bt_lstm.rl.agent import DQNAgent, load_agent
from bt_lstm.rl.spec import ACTIONS, Q_COLUMNS, order_size, target_side
from strategies.lstm_strategy import RegimeLSTMStrategy

logger = logging.getLogger(__name__)


class DQNStrategy(RegimeLSTMStrategy):
    """Hold, Buy or Sell: the action with the highest Q-value for the window and current side.

    Entry
        At the close of bar t the agent sees the window of the last ``window`` bars and the
        current side; Buy goes long, Sell goes flat (short when the agent was trained with
        ``allow_short``), Hold keeps the side.
    Exit
        A Sell (or a Buy, when short); nothing else closes a position.
    Sizing
        ``position_fraction`` of equity at the close of t, rounded down to ``size_step``: the
        same function (``bt_lstm.rl.spec.order_size``) the training environment uses.
    Execution
        Market orders filled at the open of t+1 with the broker's commission and slippage.

    Q-values come precomputed in batch as the feed's nine Q lines (``inference='batch'``,
    ``run_backtest(qvalues=agent.q_frame(...))``) or are computed here bar by bar from the
    candles seen so far (``inference='per_bar'``); both give the same actions (tests/test_rl.py).
    """

    params = (
        ("agent", None),  # a loaded bt_lstm.rl.agent.DQNAgent
        ("model_dir", None),  # or the folder of a saved agent (qnet.pt + qnet.json)
    )
    RECORD_COLUMNS = RegimeLSTMStrategy.RECORD_COLUMNS + ("action",)

    def __init__(self) -> None:
        self.agent: DQNAgent | None = self.p.agent
        if self.agent is None and self.p.model_dir is not None:
            self.agent = load_agent(self.p.model_dir)
        if self.agent is None:
            raise ValueError("DQNStrategy needs agent or model_dir")
        if self.p.inference == "batch" and not hasattr(self.data.lines, "q0"):
            raise ValueError("inference='batch' needs a feed with Q lines "
                             "(run_backtest(..., qvalues=agent.q_frame(candles)))")
        if self.p.inference not in ("batch", "per_bar"):
            raise ValueError(f"inference={self.p.inference!r}: use 'batch' or 'per_bar'")
        # the bookkeeping RegimeLSTMStrategy's notify_* and *_frame methods use
        self.records: list[tuple] = []
        self.fills: list[tuple] = []
        self.closed_trades: list[tuple] = []
        self.rejected: list[dict] = []
        self.rounded_to_zero = 0
        self._pending = None
        self._rows: list[dict] = []
        self._history = self.p.history
        self._q = [getattr(self.data.lines, c) for c in Q_COLUMNS] if (
            self.p.inference == "batch") else []
        self.action_counts = dict.fromkeys(ACTIONS, 0)

    def _per_bar_q(self) -> np.ndarray:
        d = self.data
        self._rows.append({"open": d.open[0], "high": d.high[0], "low": d.low[0],
                           "close": d.close[0], "volume": d.volume[0]})
        index = nums_to_index(np.asarray(d.datetime.get(size=len(self._rows))))
        frame = pd.DataFrame(self._rows, index=index)
        if self._history is not None and len(self._history):
            frame = pd.concat([self._history[frame.columns], frame])
        if self.agent.cfg.features == "price":
            frame = frame.iloc[-self.agent.cfg.window:]  # the window is all it reads
        return self.agent.q_table(self.agent.windows(frame)[-1:])[0]  # (3 sides, 3 actions)

    def next(self) -> None:
        pos = self.position.size
        have = (pos > 0) - (pos < 0)
        if self.p.inference == "batch":
            q = [line[0] for line in self._q[3 * (have + 1):3 * (have + 2)]]
        else:
            q = self._per_bar_q()[have + 1]
        action = int(np.argmax(q))
        self.action_counts[ACTIONS[action]] += 1
        want = target_side(action, have, self.agent.cfg.allow_short)
        value = self.broker.getcash() + pos * self.data.close[0]
        self.records.append((len(self) - 1, -1, float(q[action]), want, pos, value, action))
        if want == have or self._pending is not None:
            return
        size = order_size(want, pos, value, self.data.close[0], self.p.position_fraction,
                          self.p.size_step)
        if size == 0:
            self.rounded_to_zero += 1
            return
        self._pending = (self.buy if size > 0 else self.sell)(size=abs(size))

    def notify_order(self, order) -> None:
        # A reversal whose new side the cash cannot cover (a gap against the position) fills
        # its closing part (Partial) before the broker refuses the rest (Margin): record it.
        if order.status == order.Partial and order.executed.exbits:
            bit = order.executed.exbits[-1]
            self.fills.append((bit.dt, len(self) - 1, bit.size, bit.price, bit.comm))
            return
        super().notify_order(order)
