"""Reinforcement learning: a DQN trader whose Q-network is an LSTM (or the Dense baseline).

Belongs here: the shared trading specification (``spec.py``: observation builder, action map,
order sizing and fills exactly as the Backtrader broker does them), the Gymnasium environment
(``env.py``), the Q-networks as Stable-Baselines3 feature extractors (``qnets.py``) and the agent:
training, validation selection, state_dict + JSON saving (``agent.py``). The second home of torch
(beside ``models``) and the only home of stable_baselines3 and gymnasium. Does not hold:
backtrader (strategies/dqn_strategy.py drives the agent there), reports, run folders.
"""
