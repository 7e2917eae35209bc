"""DQNStrategy: trade the greedy action of a DQN agent (LSTM or Dense Q-network)."""
from __future__ import annotations

import numpy as np

from bt_lstm.rl.agent import DQNAgent, load_agent
from bt_lstm.rl.spec import ACTIONS, Q_COLUMNS, target_side
from strategies.base import BaseStrategy, check_inference


class DQNStrategy(BaseStrategy):
    """Hold, Buy or Sell: the action with the highest Q-value for the window and current side.

    Entry
        At the close of bar t the agent sees the window of the last ``window`` bars and the
        current side; Buy goes long, Sell goes flat (short when the agent was trained with
        ``allow_short``), Hold keeps the side.
    Exit
        A Sell (or a Buy, when short); nothing else closes a position.
    Sizing
        ``position_fraction`` of equity at the close of t, rounded down to ``size_step``: the
        same function (``bt_lstm.trading.decide.order_size``) the training environment uses.
    Execution
        Market orders filled at the open of t+1 with the broker's commission and slippage.

    Q-values come precomputed in batch as the feed's nine Q lines (``inference='batch'``,
    ``run_backtest(qvalues=agent.q_frame(...))``) or are computed here bar by bar from the
    candles seen so far (``inference='per_bar'``); both give the same actions (tests/test_rl.py).
    Each bar's record adds the ``action`` taken; its ``forecast`` is that action's Q-value.
    """

    params = (
        ("agent", None),  # a loaded bt_lstm.rl.agent.DQNAgent
        ("model_dir", None),  # or the folder of a saved agent (qnet.pt + qnet.json)
        ("inference", "batch"),  # batch: read the feed's Q lines | per_bar: run the Q-network
    )
    RECORD_COLUMNS = BaseStrategy.RECORD_COLUMNS + ("action",)

    def __init__(self) -> None:
        super().__init__()
        self.agent: DQNAgent | None = self.p.agent
        if self.agent is None and self.p.model_dir is not None:
            self.agent = load_agent(self.p.model_dir)
        if self.agent is None:
            raise ValueError("DQNStrategy needs agent or model_dir")
        batch = check_inference(self, "q0", "a feed with Q lines "
                                "(run_backtest(..., qvalues=agent.q_frame(candles)))")
        self._q = [getattr(self.data.lines, c) for c in Q_COLUMNS] if batch else []
        self.action_counts = dict.fromkeys(ACTIONS, 0)

    def _per_bar_q(self) -> np.ndarray:
        frame = self.candles_so_far()
        if self.agent.cfg.features == "price":
            frame = frame.iloc[-self.agent.cfg.window:]  # the window is all it reads
        return self.agent.q_table(self.agent.windows(frame)[-1:])[0]  # (3 sides, 3 actions)

    def target(self) -> tuple[int, float, int, int]:
        """The side the greedy action leads to, with its Q-value, no regime (-1) and the
        action."""
        pos = self._position.size
        have = (pos > 0) - (pos < 0)
        if self._q:
            q = [line[0] for line in self._q[3 * (have + 1):3 * (have + 2)]]
        else:
            q = self._per_bar_q()[have + 1]
        action = int(np.argmax(q))
        self.action_counts[ACTIONS[action]] += 1
        return target_side(action, have, self.agent.cfg.allow_short), float(q[action]), -1, action
