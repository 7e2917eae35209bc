"""One module per command that writes a run folder (backtest, walk_forward, evaluate, tune,
bench), and the one run-manifest writer they share (provenance.py).

Belongs here: turning a research result into files a person opens (JSON, CSV, HTML), caching and
resuming runs. Does not: argument parsing (cli/), model maths (research/, models/). Jobs receive
the strategy class from their caller and never import ``strategies`` or ``runners``.
"""
