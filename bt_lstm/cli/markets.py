"""Several markets in one command (``--csv`` repeated, ``--symbols A,B``): the portfolio job and
its terminal report. One market never comes here: it runs the command's own job unchanged."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def several_markets(args: argparse.Namespace) -> bool:
    """Whether the data flags name more than one market (``--symbols`` of one is ``--symbol``)."""
    from bt_lstm.cli.common import market_sources

    sources = market_sources(args)
    if len(sources) == 1 and getattr(args, "symbols", None):
        args.symbol = sources[0].symbol  # one market: exactly today's run
    return len(sources) > 1


def backtest_markets(args: argparse.Namespace, cfg: Any) -> int:
    """``bt-lstm backtest`` on several markets: panel models, one portfolio backtest, the run
    folder ``reports/portfolio_<NAME>_<tf>/<stamp>/``; print each market's line."""
    from bt_lstm.cli.common import load_markets
    from bt_lstm.cli.progress import TrainProgress
    from bt_lstm.jobs.portfolio import run_portfolio_job
    from strategies.portfolio import PortfolioStrategy

    unsupported = [flag for flag, on in (("--inference per_bar", args.inference != "batch"),
                                         ("--seeds", args.seeds != 1),
                                         ("--ensemble", args.ensemble != "none")) if on]
    if unsupported:
        raise ValueError(f"several markets: {', '.join(unsupported)} not supported yet; drop "
                         f"it or run one market")
    frames, timeframe = load_markets(args, cfg)
    name = f"{'+'.join(frames)}_{timeframe}"
    progress = TrainProgress(cfg.train.epochs, disable=args.quiet)
    try:
        result = run_portfolio_job(
            frames, cfg, PortfolioStrategy,
            model_dir=Path(args.models_dir) / f"{name}_{args.panel}",
            report_dir=Path(args.reports_dir) / f"portfolio_{name}",
            panel=args.panel, allocation=args.allocation, retrain=args.retrain,
            timeframe=timeframe, progress_factory=progress.factory,
            tearsheet=not args.no_tearsheet)
    finally:
        progress.close()
    print_markets(result.metrics)
    print(f"\nmodels:  {result.model_dir}" + ("  (reused)" if result.reused_models else ""))
    print(f"report:  {result.report_dir}")
    for f in result.files:
        print(f"  {f}")
    return 0


def print_markets(metrics: dict[str, Any]) -> None:
    """Per market: the networks it trades and its skill lines; then the portfolio's."""
    from bt_lstm.signals.regimes import REGIME_LABELS

    print(f"{metrics['dataset']} {metrics['timeframe']}: panel {metrics['panel']}, allocation "
          f"{metrics['allocation']}, test from {metrics['split']['test_start']}")
    for sym, m in metrics["markets"].items():
        traded = ", ".join(m["models_traded"]) or "none (flat)"
        print(f"\n{sym}: trades {traded}; {m['data']['gaps']}")
        for regime in REGIME_LABELS:
            if regime in m["skill"]:
                print(f"  {m['skill'][regime]['line']}")
    print(f"\n{portfolio_line(metrics['portfolio'])}")


def portfolio_line(port: dict[str, Any]) -> str:
    """The book beside the equal-weight buy-and-hold basket, in one line."""
    s, b = port["strategy"], port["buy_and_hold"]
    return (f"portfolio: Sharpe {_g(s.get('sharpe'))}, return {_g(s.get('total_return'))}, max "
            f"drawdown {_g(s.get('max_drawdown'))}, {s.get('trades')} trades; equal-weight "
            f"basket: Sharpe {_g(b.get('sharpe'))}, return {_g(b.get('total_return'))}")


def _g(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{value:.3g}"


def walk_forward_markets(args: argparse.Namespace, parser: Any, make_spec: Any) -> int:
    """``bt-lstm walk-forward`` on several markets: calendar folds, panel models per fold, the
    stitched test spans as one portfolio in ``wf_portfolio_<NAME>_<tf>/<stamp>/``."""
    from bt_lstm.cli.args import build_config, given
    from bt_lstm.cli.common import load_markets
    from bt_lstm.cli.progress import TrainProgress
    from bt_lstm.jobs.datasets import trim_dates
    from bt_lstm.jobs.portfolio_wf import run_portfolio_walk_forward
    from bt_lstm.jobs.runs import new_run_dir
    from strategies.portfolio import PortfolioStrategy

    unsupported = given(args, parser, ("seeds", "ensemble", "scheduler", "tune_trials", "space",
                                       "run_id", "force"))
    if unsupported:
        raise ValueError(f"several markets: {', '.join(unsupported)} not supported yet; drop "
                         f"it or run one market")
    cfg = build_config(args)
    frames, timeframe = load_markets(args, cfg)
    frames = {m: trim_dates(f, args.start, args.end) for m, f in frames.items()}
    from bt_lstm.data.candles import infer_bar

    spec = make_spec(args, infer_bar(next(iter(frames.values())).index))
    name = f"{'+'.join(frames)}_{timeframe}"
    root = Path(args.reports_dir)
    progress = TrainProgress(cfg.train.epochs, disable=args.quiet)
    try:
        result = run_portfolio_walk_forward(
            frames, cfg, spec, PortfolioStrategy,
            new_run_dir(root / f"wf_portfolio_{name}"), root, panel=args.panel,
            allocation=args.allocation, timeframe=timeframe, progress_factory=progress.factory,
            tearsheet=not args.no_tearsheet)
    finally:
        progress.close()
    print(f"{result.metrics['dataset']} {timeframe}: {len(result.metrics['portfolio']['folds'])} "
          f"folds, panel {args.panel}, allocation {args.allocation}")
    print(result.folds.to_string(index=False))
    print(f"\n{portfolio_line(result.metrics['portfolio'])}")
    print(f"\nrun folder: {result.run_dir}")
    for f in result.files:
        print(f"  {f}")
    return 0
