"""Skill map: is there out-of-sample skill in these features, at these horizons, with these
targets, on these markets? One walk-forward per cell, resumable cell by cell (several markets:
one pooled panel walk-forward per setting with --panel pooled, the default, or each market its
own with --panel per-market); the table and a heatmap per market name the cells that keep skill
after correcting for every cell tried.

Examples
--------
    python runners/skillmap.py --symbols BTCUSDT,ETHUSDT --data-dir ../shared/data \\
        --grid-features "price;price,calendar" --horizons 1,3,6 --targets logret,vol-scaled \\
        --train 365d --test 90d --jobs 2
    python runners/skillmap.py --csv a.csv --csv b.csv --horizons 1 --targets logret \\
        --panel per-market
    python runners/skillmap.py --resume skillmap_BTCUSDT+ETHUSDT_4h
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bt_lstm.cli.args import (
    DOWNLOAD,
    PIPELINE,
    STRATEGY,
    TRIALS,
    add_group,
    build_config,
    config_flags,
    given,
    resolve_plugin_paths,
)
from bt_lstm.cli.common import make_parser, run_cli
from bt_lstm.cli.walk_forward import FOLDS, fold_spec

GRID = ("grid_features", "horizons", "targets")
MARKETS = ("csv", "symbols", "timeframe", "data_dir", "panel")
# the grid sets these per cell; trials: N is the number of cells
CELL_SET = ("features", "target", "horizon", *TRIALS)
RESUME_FIXED = (*MARKETS, "start", "end", *DOWNLOAD, *FOLDS, *GRID, "config")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm skillmap`` (``prog``: the name its usage lines show)."""
    parser = make_parser(__doc__, prog)
    add_group(parser, "markets (default: the bundled synthetic SAMPLE market)", *MARKETS,
              "start", "end", csv={"append": True})
    add_group(parser, "download (with --symbols)", *DOWNLOAD)
    add_group(parser, "grid", *GRID)
    add_group(parser, "folds (each cell's walk-forward)",
              *(f for f in FOLDS if f not in ("start", "end")))
    add_group(parser, "pipeline (flags override --config; the grid sets features, horizon and "
              "target)", *(n for n in PIPELINE if n not in CELL_SET))
    add_group(parser, "strategy and costs", *STRATEGY)
    add_group(parser, "run", "jobs", "scheduler", "run_id", "resume", "force", "reports_dir",
              "quiet")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm skillmap`` with ``argv``; return the exit code: 0 done, 2 a user mistake
    (one line on stderr), 130 interrupted (finished cells kept)."""
    parser = build_parser(prog)
    return run_cli(parser, argv, lambda args: job(args, parser))


def market_sources(args: argparse.Namespace) -> list[dict]:
    """One source per market: each --csv, each of --symbols, or the SAMPLE market."""
    csvs = args.csv or []
    symbols = [s.strip() for s in (args.symbols or "").split(",") if s.strip()]
    if csvs and symbols:
        raise ValueError("give the markets either as --csv files or as --symbols, not both")
    if args.download and not symbols:
        raise ValueError("--download needs --symbols")
    base = {"timeframe": args.timeframe, "data_dir": args.data_dir, "start": args.start,
            "end": args.end, "download": bool(args.download), "base_url": args.base_url}
    if csvs:
        return [dict(base, csv=str(Path(c).resolve()), symbol=None) for c in csvs]
    return [dict(base, csv=None, symbol=s) for s in symbols] or [dict(base, csv=None,
                                                                      symbol=None)]


def load_markets(sources: list[dict], cfg, grid) -> list:
    """The candles of every market, trimmed to --start/--end, all of one timeframe; with the
    inputs of every feature group of the grid attached (cross markets) and checked (plugins'
    look-ahead, flow's columns) before any cell trains."""
    from bt_lstm.cli.progress import fetch_with_progress
    from bt_lstm.config import replace, split_feature_spec
    from bt_lstm.jobs.datasets import DataSource, load_dataset, trim_dates
    from bt_lstm.jobs.skillmap import MarketData

    groups: list[str] = []
    for fs in grid.feature_sets:
        groups += [g for g in split_feature_spec(",".join(fs))[1] if g not in groups]
    cfg = replace(cfg, features=replace(cfg.features, groups=tuple(groups)))
    markets = []
    for src in sources:
        ds = DataSource(csv=src["csv"], symbol=src["symbol"], timeframe=src["timeframe"],
                        data_dir=src["data_dir"], download=src["download"],
                        base_url=src["base_url"])
        frame, name, tf = load_dataset(ds, cfg, check_split=False, fetch=fetch_with_progress,
                                       notify=lambda line: print(line, file=sys.stderr))
        markets.append(MarketData(name, tf, trim_dates(frame, src["start"], src["end"]), src))
    names = [m.name for m in markets]
    if len(set(names)) != len(names):
        raise ValueError(f"the same market is given twice: {', '.join(names)}")
    if len({m.timeframe for m in markets}) > 1:
        raise ValueError("the markets have different timeframes: "
                         + ", ".join(f"{m.name} {m.timeframe}" for m in markets))
    return markets


def _grid(args: argparse.Namespace):
    from bt_lstm.jobs.skillmap import SkillGrid
    from bt_lstm.research.skillmap import parse_feature_sets, parse_horizons, parse_targets

    sets = tuple(resolve_plugin_paths(s) for s in parse_feature_sets(args.grid_features))
    return SkillGrid(sets, parse_horizons(args.horizons), parse_targets(args.targets))


def job(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Build (or read back) the grid, load the markets and run every cell."""
    from bt_lstm.cli.progress import FoldProgress
    from bt_lstm.data.candles import infer_bar
    from bt_lstm.jobs.runs import new_run_dir, run_id
    from bt_lstm.jobs.skillmap import load_saved_skillmap, run_skillmap
    from bt_lstm.jobs.skillmap_cells import CellRun
    from strategies.lstm_strategy import RegimeLSTMStrategy
    from strategies.portfolio import PortfolioStrategy

    if args.resume:
        extra = given(args, parser, (*RESUME_FIXED, *config_flags()))
        if extra:
            raise ValueError(f"--resume takes the run's own settings; drop {', '.join(extra)}")
        saved = load_saved_skillmap(Path(args.reports_dir) / args.resume)
        cfg, spec, grid, sources, run_dir = (saved.cfg, saved.spec, saved.grid, saved.sources,
                                             saved.run_dir)
        panel = saved.panel
        markets = load_markets(sources, cfg, grid)
    else:
        grid, cfg, panel = _grid(args), build_config(args), args.panel
        markets = load_markets(market_sources(args), cfg, grid)
        spec = fold_spec(args, infer_bar(markets[0].frame.index))
        name = "+".join(m.name for m in markets)
        run_dir = (Path(args.reports_dir) / args.run_id if args.run_id else
                   new_run_dir(Path(args.reports_dir) / f"skillmap_{name}_{markets[0].timeframe}"))
    progress = FoldProgress(True)  # per-cell lines below; fold bars would interleave them
    try:
        run = CellRun(RegimeLSTMStrategy, PortfolioStrategy, jobs=args.jobs,
                      scheduler=args.scheduler, start_progress=progress.start)
        result = run_skillmap(markets, grid, cfg, spec, run, run_dir, panel=panel,
                              resume=bool(args.resume), force=args.force,
                              on_cell=None if args.quiet else print_cell,
                              reports_root=Path(args.reports_dir))
    except KeyboardInterrupt:
        kept = len(list((run_dir / "rows").glob("*.json")))
        print(f"interrupted: {kept} finished cells are kept in {run_dir}; finish the map "
              f"with: python runners/skillmap.py --resume "
              f"{run_id(run_dir, Path(args.reports_dir))}"
              + (f" --reports-dir {args.reports_dir}" if args.reports_dir != "reports"
                 else ""), file=sys.stderr)
        return 130
    finally:
        progress.close()
    print_result(result, Path(args.reports_dir))
    return 0


def print_cell(event) -> None:
    """One terminal line per cell: started, finished (with its figures) or kept."""
    head = f"cell {event.index + 1}/{event.total} {event.cell.label} on {event.cell.market}"
    if event.status == "start":
        print(f"{head}: running" + (f" ({event.note})" if event.note else ""), file=sys.stderr,
              flush=True)
        return
    r = event.row
    took = f" in {event.seconds:.0f} s" if event.status == "done" else " (kept from before)"
    print(f"{head}: MSE/zero {_g(r['mse_ratio'])}, DM p {_g(r['dm_p'])}, IC {_g(r['ic'])}, "
          f"skill {r['with_skill']}/{r['fold_models']}, Sharpe {_g(r['sharpe'])}{took}",
          file=sys.stderr, flush=True)


def _g(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3g}"


def print_result(result, reports_root: Path) -> None:
    """The map as a terminal table, the verdict and the files."""
    from bt_lstm.jobs.runs import describe_files

    print(f"{'market':<10} {'cell':<28} {'MSE/zero':>8} {'DM p':>7} {'p Holm':>7} {'IC':>7} "
          f"{'skill':>6} {'Sharpe':>7} {'DSR':>6}")
    for r in result.rows:
        label = f"{r['features']} h{r['horizon']} {r['target']}"
        print(f"{r['market']:<10} {label:<28} {_g(r['mse_ratio']):>8} {_g(r['dm_p']):>7} "
              f"{_g(r['dm_p_holm']):>7} {_g(r['ic']):>7} "
              f"{r['with_skill']:>2}/{r['fold_models']:<3} {_g(r['sharpe']):>7} "
              f"{_g(r['dsr']):>6}" + (" keeps skill" if r["keeps_skill"] else ""))
    print(f"\n{result.verdict}")
    print(f"\nrun folder: {result.run_dir}")
    for line in describe_files(result.run_dir, reports_root):
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
