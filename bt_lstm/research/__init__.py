"""What fits and judges a model: the train/validation/test pipeline, walk-forward folds,
baselines, forecast scoring, the look-ahead audit, the known-truth benchmark and hyperparameter
search (tuning.py: the one home of Optuna).

Belongs here: orchestration of fitting and scoring on data held in memory. Does not: argument
parsing or terminal output (cli/), run folders and report files (jobs/), direct use of torch or
backtrader (through models/ and backtest/ only).
"""
