"""Trading simulation and its read-out: Backtrader glue (feed, broker, commission,
``run_backtest``), return and performance maths, and the QuantStats / matplotlib reports.

Belongs here: anything that imports backtrader (engine.py), quantstats or matplotlib
(reports.py, only there), and the formulas that turn equity into figures (metrics.py). Does not:
training or model selection (research/), run folders (jobs/). Strategies themselves live in the
top-level ``strategies/`` package and are passed in as classes.
"""
