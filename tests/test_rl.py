"""The DQN trader: Q-network shapes, env = backtest, saving, temporal learning."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

from bt_lstm.backtest.engine import run_backtest
from bt_lstm.config import StrategyConfig
from bt_lstm.rl.agent import (
    AgentError,
    DQNAgent,
    agent_identity,
    build_dqn,
    load_agent,
    obtain_agent,
    save_agent,
)
from bt_lstm.rl.env import TradingEnv
from bt_lstm.rl.qnets import batch_q_values, build_q_network, observation_space
from bt_lstm.rl.spec import (
    DQNConfig,
    fit_observation,
    flat_observations,
    observation_windows,
    price_windows,
)
from strategies.dqn_strategy import DQNStrategy

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("qnet", ["lstm", "dense"])
def test_q_network_maps_a_window_batch_to_three_q_values(qnet):
    net = build_q_network(qnet, 50, 1)
    obs = flat_observations(np.random.default_rng(0).normal(size=(7, 50, 1)).astype(np.float32),
                            np.array([-1, 0, 1, 0, 1, 0, -1]))
    assert obs.shape == (7, 51)
    assert batch_q_values(net, obs).shape == (7, 3)
    assert net(torch.as_tensor(obs[:1])).shape == (1, 3)  # batch of one keeps its dimension


def test_lstm_q_network_layers_are_as_specified():
    ext = build_q_network("lstm", 50, 1).features_extractor
    assert (ext.lstm1.input_size, ext.lstm1.hidden_size, ext.lstm1.num_layers) == (1, 64, 1)
    assert (ext.lstm2.input_size, ext.lstm2.hidden_size) == (64, 32)
    assert ext.drop1.p == ext.drop2.p == 0.2
    head = build_q_network("lstm", 50, 1).q_net
    assert [m.out_features for m in head if isinstance(m, torch.nn.Linear)] == [64, 3]
    assert isinstance(head[1], torch.nn.ReLU)
    dense = build_q_network("dense", 50, 1)
    sizes = [m.out_features for m in dense.modules() if isinstance(m, torch.nn.Linear)]
    assert sizes == [128, 128, 64, 3]
    assert [m.p for m in dense.modules() if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2]


def test_observation_builder_keeps_temporal_order_and_uses_no_later_bar(market):
    frame = market.frame.iloc[:300]
    close = frame["close"].to_numpy()
    win = price_windows(close, 10)  # (T, 10, 1)
    t = 120
    logs = np.log(close[t - 9:t + 1])
    expect = (logs - logs[-1]) / np.diff(logs).std()
    np.testing.assert_allclose(win[t, :, 0], expect, rtol=1e-5)  # oldest first, t last
    changed = close.copy()
    changed[t + 1:] *= 3.0
    np.testing.assert_array_equal(price_windows(changed, 10)[:t + 1], win[:t + 1])
    cfg = DQNConfig(window=10, features="pipeline")
    params = fit_observation(frame, cfg, 200)
    pipe = observation_windows(frame, cfg, params)
    assert pipe.shape == (300, 10, 7)
    np.testing.assert_array_equal(pipe[t, -1], pipe[t + 1, -2])  # rows shift one bar per bar
    cut = observation_windows(frame.iloc[:t + 1], cfg, params)
    np.testing.assert_allclose(cut[t], pipe[t], atol=1e-6)


# ---------------------------------------------------------------- environment = backtest

def _gappy_candles(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * (1 + rng.normal(0, 0.001, n))
    open_[20] = close[19] * 1.04  # gap up at the open where a Buy fills
    open_[35] = close[34] * 0.96  # gap down where a Sell fills
    high = np.maximum(open_, close) * 1.002
    high[20] = open_[20]  # the buy's slippage is capped at this bar's high
    low = np.minimum(open_, close) * 0.998
    idx = pd.date_range("2024-01-01", periods=n, freq="4h")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": 1.0}, index=idx)


def _fixed_actions(n: int) -> np.ndarray:
    actions = np.zeros(n, dtype=int)
    actions[[5, 19, 27, 40, n - 1]] = 1  # buys: one fills on the gap-up bar, one on the last
    actions[[12, 34, 45]] = 2  # sells: one fills on the gap-down bar
    return actions


@pytest.mark.parametrize("allow_short", [False, True])
def test_env_and_backtest_give_the_same_fills_position_and_equity(allow_short):
    candles = _gappy_candles()
    n = len(candles)
    cfg = StrategyConfig(commission=0.001, slippage=0.002, position_fraction=0.95)
    dcfg = DQNConfig(window=4, allow_short=allow_short)
    windows = price_windows(candles["close"].to_numpy(), 4)
    actions = _fixed_actions(n)
    env = TradingEnv(candles, windows, 0, n, cfg, allow_short)
    env.reset()
    values, positions, done = [env.value], [env.pos], False
    while not done:
        _, _, term, trunc, _ = env.step(int(actions[env.t]))
        values.append(env.value)
        positions.append(env.pos)
        done = term or trunc
    # Q-values that make the strategy take the fixed action whatever its side
    q = np.zeros((n, 3, 3))
    q[np.arange(n), :, actions] = 1.0
    qframe = pd.DataFrame(q.reshape(n, 9), index=candles.index,
                          columns=[f"q{i}" for i in range(9)])
    agent = DQNAgent(build_q_network("lstm", 4, 1), dcfg, {"kind": "price"})
    result = run_backtest(candles, DQNStrategy, cfg, qvalues=qframe, agent=agent)
    bars = result.bars
    np.testing.assert_allclose(bars["value"].to_numpy(), values, rtol=1e-12)
    # the strategy records the position before the bar's order; the env after the fill
    np.testing.assert_allclose(bars["position"].to_numpy(), positions, rtol=1e-12)
    fills = result.fills
    assert list(fills["bar"]) == [f[0] for f in env.fills]
    np.testing.assert_allclose(fills["size"], [f[1] for f in env.fills], rtol=1e-12)
    np.testing.assert_allclose(fills["price"], [f[2] for f in env.fills], rtol=1e-12)
    np.testing.assert_allclose(fills["commission"], [f[3] for f in env.fills], rtol=1e-12)
    assert 20 in list(fills["bar"]) and 35 in list(fills["bar"])
    assert fills.loc[fills["bar"] == 20, "price"].iloc[0] == pytest.approx(candles["high"].iloc[20])
    assert n - 1 not in list(fills["bar"])  # the last bar's Buy never fills
    assert list(bars["action"]) == list(actions)
    # short, then a Buy filled on the 4 % gap up: the short is closed, the cash left cannot
    # pay for the new long at the gapped price, and the broker refuses that part (Margin)
    assert len(result.rejected) == (1 if allow_short else 0)


def test_training_envs_are_staggered_over_the_span_then_start_at_its_start(market):
    from bt_lstm.rl.agent import build_dqn, training_env

    frame = market.frame.iloc[:120]
    cfg = DQNConfig(window=4, envs=4, train_freq=16)
    windows = observation_windows(frame, cfg, fit_observation(frame, cfg, len(frame)))
    vec = training_env(frame, windows, (10, 90), StrategyConfig(), cfg)
    obs = vec.reset()
    firsts = [e.unwrapped.t for e in vec.envs]
    assert firsts == [10, 29, 49, 69]  # k * 79 // 4 decisions into the span
    for k, e in enumerate(vec.envs):  # each observation is its own bar's window
        np.testing.assert_array_equal(obs[k][:-1], windows[firsts[k]].reshape(-1))
    for _ in range(89 - 69):  # env 3 reaches the span's last bar: truncated, starts again
        vec.step(np.zeros(4, dtype=int))
    assert vec.envs[3].unwrapped.t == 10 and vec.envs[0].unwrapped.t == 30
    assert build_dqn(vec, cfg, windows.shape[2]).train_freq.frequency == 4  # 16 env steps
    with pytest.raises(ValueError, match="multiple of envs"):
        DQNConfig(envs=3, train_freq=16)


def test_env_reward_is_the_log_change_of_value_and_ends_by_truncation():
    candles = _gappy_candles()
    env = TradingEnv(candles, price_windows(candles["close"].to_numpy(), 4), 10, 30,
                     StrategyConfig(), False)
    env.reset()
    total, steps = 0.0, 0
    while True:
        before = env.value
        _, reward, term, trunc, _ = env.step(1)
        assert reward == pytest.approx(np.log(env.value / before))
        total, steps = total + reward, steps + 1
        if term or trunc:
            break
    assert trunc and not term and env.t == 29 and steps == 19
    assert total == pytest.approx(np.log(env.value / StrategyConfig().cash))


def test_batch_and_per_bar_strategies_take_the_same_actions(market):
    frame = market.frame.iloc[:400]
    cfg = DQNConfig(window=16)
    torch.manual_seed(0)
    agent = DQNAgent(build_q_network("lstm", 16, 1), cfg, {"kind": "price"})
    test = frame.iloc[300:]
    batch = run_backtest(test, DQNStrategy, StrategyConfig(), qvalues=agent.q_frame(frame, 300),
                         agent=agent)
    per_bar = run_backtest(test, DQNStrategy, StrategyConfig(), agent=agent,
                           inference="per_bar", history=frame.iloc[:300])
    assert list(batch.bars["action"]) == list(per_bar.bars["action"])
    assert batch.bars["action"].nunique() > 1  # a policy that acts, not a constant
    assert batch.final_value == per_bar.final_value


# ---------------------------------------------------------------- saving

def _saved_agent(folder: Path, qnet: str = "lstm", window: int = 8) -> tuple[DQNAgent, dict]:
    torch.manual_seed(1)
    cfg = DQNConfig(qnet=qnet, window=window)
    agent = DQNAgent(build_q_network(qnet, window, 1), cfg, {"kind": "price"})
    identity = agent_identity(cfg, StrategyConfig(), 1, "fp", (0, 100), (101, 150))
    save_agent(agent, folder, identity)
    return agent, identity


LOAD_SCRIPT = """
import json, sys
import numpy as np
from bt_lstm.rl.agent import load_agent
agent = load_agent(sys.argv[1])
w = np.linspace(-1, 1, 8 * 5, dtype=np.float32).reshape(5, 8, 1)
print(json.dumps(agent.q_table(w).tolist()))
"""


def test_save_load_in_a_fresh_process_gives_identical_q_values(tmp_path):
    agent, _ = _saved_agent(tmp_path / "a")
    w = np.linspace(-1, 1, 8 * 5, dtype=np.float32).reshape(5, 8, 1)
    out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(tmp_path / "a")],
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    np.testing.assert_array_equal(np.array(json.loads(out.stdout), dtype=np.float32),
                                  agent.q_table(w))
    meta = json.loads((tmp_path / "a" / "qnet.json").read_text())
    for key in ("qnet", "window", "features", "normalisation", "action_map", "costs",
                "data_fingerprint", "training_span", "versions", "weights_sha256"):
        assert key in meta


def test_tampered_weights_or_json_are_refused(tmp_path):
    _saved_agent(tmp_path / "a")
    weights = tmp_path / "a" / "qnet.pt"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(AgentError, match="sha256"):
        load_agent(tmp_path / "a")
    _saved_agent(tmp_path / "b")
    meta_path = tmp_path / "b" / "qnet.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["window"] = 9  # same weight shapes for an LSTM: only the digest notices
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(AgentError, match="edited"):
        load_agent(tmp_path / "b")


def test_load_or_create_refuses_a_different_agent_and_never_overwrites(tmp_path, market):
    folder = tmp_path / "agent"
    _saved_agent(folder, qnet="dense", window=8)
    before = (folder / "qnet.pt").read_bytes()
    cfg = DQNConfig(qnet="lstm", window=12, timesteps=60, learning_starts=20, eval_every=30,
                    batch_size=8)
    frame = market.frame.iloc[:200]
    with pytest.raises(AgentError) as err:
        obtain_agent(frame, cfg, StrategyConfig(), folder, (0, 100), (101, 150), "fp")
    assert "qnet: saved 'dense', asked 'lstm'" in str(err.value)
    assert "window: saved 8, asked 12" in str(err.value)
    assert "--retrain" in str(err.value)
    assert (folder / "qnet.pt").read_bytes() == before
    agent, reused = obtain_agent(frame, cfg, StrategyConfig(), folder, (0, 100), (101, 150),
                                 "fp", retrain=True)
    assert not reused and agent.cfg.qnet == "lstm"
    again, reused = obtain_agent(frame, cfg, StrategyConfig(), folder, (0, 100), (101, 150), "fp")
    assert reused
    w = agent.windows(frame)[50:60]
    np.testing.assert_array_equal(again.q_table(w), agent.q_table(w))


# ---------------------------------------------------------------- temporal learning

def _order_task(n: int, window: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Windows of i.i.d. draws; the next bar goes up (+1) when the last draw exceeds the one
    before it, else down (-1). Shuffling a window's steps keeps its values, loses the answer."""
    x = rng.normal(size=(n, window, 1)).astype(np.float32)  # (N, L, 1)
    return x, np.where(x[:, -1, 0] > x[:, -2, 0], 1.0, -1.0).astype(np.float32)


def _fit_q(qnet: str, x: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    """Q(s, a) regressed on each action's one-bar reward (hold 0, buy y, sell -y): a DQN target
    with gamma 0, every action's reward known; the same network, optimiser and clipping."""
    torch.manual_seed(seed)
    net = build_q_network(qnet, x.shape[1], 1).train()
    obs = torch.as_tensor(flat_observations(x, np.zeros(len(x))))
    target = torch.as_tensor(np.stack([np.zeros_like(y), y, -y], axis=1))  # (N, 3)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(150):
        idx = torch.randint(0, len(obs), (128,), generator=gen)
        loss = torch.nn.functional.smooth_l1_loss(net(obs[idx]), target[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
    return net.eval()


def _accuracy(net: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    q = batch_q_values(net, flat_observations(x, np.zeros(len(x))))
    return float(np.mean(np.where(q[:, 1] > q[:, 2], 1.0, -1.0) == y))


def _shuffle_steps(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    perm = np.argsort(rng.random(x.shape[:2]), axis=1)  # (N, L): one permutation per window
    return np.take_along_axis(x, perm[:, :, None], axis=1)


def test_lstm_q_network_learns_an_order_dependent_task_and_shuffled_steps_do_not():
    rng = np.random.default_rng(0)
    x_train, y_train = _order_task(3000, 10, rng)
    x_test, y_test = _order_task(2000, 10, rng)
    accs = {"lstm": _accuracy(_fit_q("lstm", x_train, y_train, 0), x_test, y_test),
            "dense": _accuracy(_fit_q("dense", x_train, y_train, 0), x_test, y_test),
            "lstm_shuffled": _accuracy(
                _fit_q("lstm", _shuffle_steps(x_train, rng), y_train, 0),
                _shuffle_steps(x_test, rng), y_test)}
    print("held-out accuracy (chance 0.5):", accs)
    assert accs["lstm"] > 0.8
    # the Dense baseline sees the flattened window, each step at a fixed place: order too
    assert accs["dense"] > 0.8
    assert accs["lstm_shuffled"] < 0.58


class _OrderMarket(gym.Env):
    """The order task as a market for SB3: each step shows a window drawn from a fixed training
    pool (side flat); Buy earns the next bar's move y, Sell -y (going short), Hold 0: the
    one-bar reward of each action from flat, no costs. Truncated every 200 steps."""

    def __init__(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        self.obs, self.y = flat_observations(x, np.zeros(len(x))), y  # (N, L+1), (N,)
        self.observation_space = observation_space(x.shape[1], 1)
        self.action_space = gym.spaces.Discrete(3)
        self.rng = np.random.default_rng(seed)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.n, self.i = 0, int(self.rng.integers(len(self.y)))
        return self.obs[self.i], {}

    def step(self, action):
        reward = (0.0, float(self.y[self.i]), -float(self.y[self.i]))[int(action)]
        self.n, self.i = self.n + 1, int(self.rng.integers(len(self.y)))
        return self.obs[self.i], reward, False, self.n >= 200, {}


def _learn_dqn(qnet: str, x: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    """SB3's DQN.learn (replay, target network, epsilon-greedy, clipping) through build_dqn,
    the constructor train_agent uses; gamma 0: the task is one bar ahead."""
    cfg = DQNConfig(qnet=qnet, window=x.shape[1], timesteps=2000, learning_starts=500,
                    buffer_size=2000, batch_size=64, train_freq=4, gamma=0.0,
                    learning_rate=3e-3, target_update_interval=250, seed=seed)
    model = build_dqn(_OrderMarket(x, y, seed), cfg, 1)
    model.learn(total_timesteps=cfg.timesteps)
    return model.policy.q_net.eval()


def test_dqn_learning_loop_learns_the_order_task_with_an_lstm_not_from_shuffled_steps():
    rng = np.random.default_rng(0)
    x_train, y_train = _order_task(3000, 10, rng)
    x_test, y_test = _order_task(2000, 10, rng)
    xs_train, xs_test = _shuffle_steps(x_train, rng), _shuffle_steps(x_test, rng)
    accs = {"lstm": _accuracy(_learn_dqn("lstm", x_train, y_train, 0), x_test, y_test),
            "dense": _accuracy(_learn_dqn("dense", x_train, y_train, 0), x_test, y_test),
            "lstm_shuffled": _accuracy(_learn_dqn("lstm", xs_train, y_train, 0), xs_test,
                                       y_test)}
    print("SB3 DQN, held-out accuracy (chance 0.5):", accs)
    assert accs["lstm"] > 0.8
    assert accs["dense"] > 0.8  # the feed-forward baseline learns it through SB3 too
    assert accs["lstm_shuffled"] < 0.6


# ---------------------------------------------------------------- integration

def test_runner_trains_a_few_thousand_steps_and_writes_the_report(market_csv, tmp_path):
    from conftest import TINY_FLAGS

    from bt_lstm.cli.dqn import main

    args = ["--csv", str(market_csv), "--window", "16", "--timesteps", "1200",
            "--learning-starts", "400", "--eval-every", "400", "--seeds", "2",
            "--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports"),
            *TINY_FLAGS]
    assert main(args) == 0
    folder = next((tmp_path / "reports").glob("dqn_*_lstm")) / "latest"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert (folder / "tearsheet.html").is_file() and (folder / "bars.csv").is_file()
    assert set(metrics["strategy"]["actions"]) == {"hold", "buy", "sell"}
    assert sum(metrics["strategy"]["actions"].values()) == metrics["period"]["bars"]
    assert [r["seed"] for r in metrics["seed_spread"]["runs"]] == [7, 8]
    assert "sharpe" in metrics["regime_lstm"] and "sharpe" in metrics["buy_and_hold"]
    assert "psr" in metrics["statistics"]
    # a second run reuses the saved agents
    assert main(args) == 0
    assert all(r["reused"] for r in json.loads(
        (folder / "metrics.json").read_text())["seed_spread"]["runs"])
