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


def walk_forward_markets(args: argparse.Namespace, parser: Any, make_spec: Any,
                         saved: Any = None) -> int:
    """``bt-lstm walk-forward`` on several markets: calendar folds, panel models per fold (in
    parallel with ``--jobs`` / ``--scheduler``), each fold and the stitched test spans as a
    portfolio in ``wf_portfolio_<NAME>_<tf>/<stamp>/``; ``saved`` (``--resume``): the
    interrupted run's settings, whose finished folds are kept."""
    from bt_lstm.cli.args import build_config, given
    from bt_lstm.cli.common import load_markets
    from bt_lstm.data.candles import infer_bar
    from bt_lstm.jobs.datasets import trim_dates
    from bt_lstm.jobs.runs import new_run_dir

    unsupported = given(args, parser, ("seeds", "ensemble", "tune_trials", "space"))
    if unsupported:
        raise ValueError(f"several markets: {', '.join(unsupported)} not supported yet; drop "
                         f"it or run one market")
    cfg = saved.cfg if saved is not None else build_config(args)
    frames, timeframe = load_markets(args, cfg)
    frames = {m: trim_dates(f, args.start, args.end) for m, f in frames.items()}
    spec = saved.spec if saved is not None else make_spec(
        args, infer_bar(next(iter(frames.values())).index))
    if saved is not None:
        args.panel, args.allocation = saved.markets["panel"], saved.markets["allocation"]
    root = Path(args.reports_dir)
    name = f"{'+'.join(frames)}_{timeframe}"
    run_dir = (saved.run_dir if saved is not None else root / args.run_id if args.run_id
               else new_run_dir(root / f"wf_portfolio_{name}"))
    return _walk_forward_run(args, frames, cfg, spec, run_dir, timeframe, saved is not None)


def _walk_forward_run(args: argparse.Namespace, frames: dict, cfg: Any, spec: Any,
                      run_dir: Path, timeframe: str, resume: bool) -> int:
    """Run the panel walk-forward into ``run_dir`` and print its terminal report; an
    interrupted run says how to finish it (exit 130)."""
    import sys

    from bt_lstm.cli.progress import TrainProgress
    from bt_lstm.jobs.portfolio_wf import run_portfolio_walk_forward
    from bt_lstm.jobs.runs import run_id
    from strategies.portfolio import PortfolioStrategy

    root = Path(args.reports_dir)
    source = {"symbols": args.symbols, "csv": [str(Path(c).resolve()) for c in args.csv]
              if isinstance(args.csv, list) else None, "data_dir": args.data_dir,
              "timeframe": args.timeframe, "start": args.start, "end": args.end}
    progress = TrainProgress(cfg.train.epochs, disable=args.quiet)
    try:
        result = run_portfolio_walk_forward(
            frames, cfg, spec, PortfolioStrategy, run_dir, root, panel=args.panel,
            allocation=args.allocation, timeframe=timeframe, progress_factory=progress.factory,
            tearsheet=not args.no_tearsheet, jobs=args.jobs, scheduler=args.scheduler,
            resume=resume, force=args.force, source=source)
    except KeyboardInterrupt:
        progress.close()
        kept = len(list((run_dir / "folds").glob("fold_*/*/manifest.json")))
        print(f"interrupted: {kept} finished market bundles are kept in {run_dir / 'folds'}; "
              f"finish the run with: python runners/walk_forward.py --resume "
              f"{run_id(run_dir, root)}"
              + (f" --reports-dir {args.reports_dir}" if args.reports_dir != "reports" else ""),
              file=sys.stderr)
        return 130
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
