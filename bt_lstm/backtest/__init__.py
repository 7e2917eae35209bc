"""Trading simulation and its read-out: Backtrader glue (feed, broker, commission,
``run_backtest``), return and performance maths, and the QuantStats / matplotlib reports.

Belongs here: anything that imports backtrader (engine.py; portfolio.py, several markets in one
run), quantstats or matplotlib (reports/, only there), and the formulas that turn equity into
figures (metrics.py; allocation.py and portfolio_metrics.py for a portfolio). Does not:
training or model selection (research/), run folders (jobs/). Strategies themselves live in the
top-level ``strategies/`` package and are passed in as classes.
"""
