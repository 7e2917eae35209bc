"""Speed benchmark: prints a table and writes bench.json (figures are medians of repetitions).

Measures, on BTCUSDT 4h (from ../shared/data, $BT_LSTM_REAL_DATA or --csv; a synthetic series of
the same length where absent):
  - the RegimeLSTMStrategy backtest (batch forecasts + Backtrader) vs a no-model SMA cross on the
    same feed: wall time, bars/s, ratio (target <= 1.5);
  - per-window inference latency (median, p99) and batch throughput of every architecture;
  - training throughput of the default config vs a bare PyTorch loop (target ratio <= 1.3);
  - peak memory (RSS) of a process running the backtest;
  - a cached rerun of `python runners/backtest.py` end to end (target <= 15 s).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runners._common import config_from_file, make_parser, run_cli, setup_logging  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument("--csv", metavar="FILE",
                        help="candles to benchmark on (default: BTCUSDT_4h.csv from "
                             "$BT_LSTM_REAL_DATA or ../shared/data, else synthetic)")
    parser.add_argument("--config", metavar="JSON",
                        help="pipeline config to benchmark, e.g. a run's config.json (default: "
                             "the default config, as `python runners/backtest.py` uses)")
    parser.add_argument("--reps", type=int, default=5,
                        help="repetitions per figure; the median is reported (default 5)")
    parser.add_argument("--train-epochs", type=int, default=3,
                        help="epochs per training measurement (default 3)")
    parser.add_argument("--out", default="reports/bench.json", metavar="FILE",
                        help="where the JSON goes (default reports/bench.json)")
    parser.add_argument("--skip-rerun", action="store_true",
                        help="skip timing the cached rerun of runners/backtest.py")
    parser.add_argument("--label", default="", help="free text stored in the JSON (e.g. 'before')")
    return parser


def _load(args):
    import os

    from bt_lstm.data import load_ohlcv
    from bt_lstm.synthetic import make_market

    if args.csv:
        return load_ohlcv(args.csv), args.csv
    for base in filter(None, [os.environ.get("BT_LSTM_REAL_DATA"), str(REPO.parent / "shared" /
                                                                        "data")]):
        path = Path(base) / "BTCUSDT_4h.csv"
        if path.is_file():
            return load_ohlcv(path), str(path)
    return make_market(n_bars=18_158, seed=1).frame, "synthetic (18158 bars)"


def _rerun_seconds() -> dict:
    cmd = [sys.executable, "runners/backtest.py", "--quiet"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)  # make sure models exist
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return {"command": "python runners/backtest.py", "cached_rerun_s":
            time.perf_counter() - start, "target_s": 15.0}


def _table(res: dict) -> str:
    bt_, tr = res["backtest"], res["training"]
    bars = bt_["bars"]
    lines = [f"data: {res['data']}  ({bt_['bars']} bars)  machine: {res['machine']['cores']} "
             f"cores, torch {res['machine']['torch']} ({res['machine']['torch_threads']} threads)",
             "", f"{'backtest':<34}{'wall s':>10}{'bars/s':>12}",
             f"{'  RegimeLSTMStrategy (batch)':<34}{bt_['model_strategy_s']:>10.2f}"
             f"{bt_['model_strategy_bars_per_s']:>12,.0f}",
             f"{'  SmaCross (no model)':<34}{bt_['no_model_strategy_s']:>10.2f}"
             f"{bt_['no_model_bars_per_s']:>12,.0f}",
             f"{'  ratio (target <= 1.5)':<34}{bt_['ratio']:>10.2f}",
             f"{'  fills: model / SMA-cross orders':<34}{bt_['model_strategy_fills']:>10}"
             f"{bt_['no_model_orders']:>12}",
             f"{'  model strategy, no orders':<34}{bt_['model_strategy_no_orders_s']:>10.2f}"
             f"{bars / bt_['model_strategy_no_orders_s']:>12,.0f}",
             f"{'  ratio without orders':<34}{bt_['ratio_no_orders']:>10.2f}",
             f"{'  peak RSS of a backtest process':<34}{res['backtest_peak_rss_mib']:>10.0f} MiB",
             "", f"{'inference':<14}{'p50 ms/window':>16}{'p99 ms':>10}{'batch windows/s':>18}"]
    for arch, r in res["inference"].items():
        lines.append(f"  {arch:<12}{r['latency_ms_median']:>16.3f}{r['latency_ms_p99']:>10.3f}"
                     f"{r['batch_windows_per_s']:>18,.0f}")
    lines += ["", f"training ({tr['arch']} h={tr['hidden_size']} L={tr['lookback']}, "
                  f"{tr['windows']} windows, batch {tr['batch_size']})",
              f"  ours: {tr['ours_s_per_epoch']:.2f} s/epoch, {tr['ours_samples_per_s']:,.0f} "
              f"samples/s", f"  bare loop: {tr['bare_s_per_epoch']:.2f} s/epoch, "
              f"{tr['bare_samples_per_s']:,.0f} samples/s",
              f"  ratio (target <= 1.3): {tr['ratio']:.2f}"]
    if "rerun" in res:
        lines.append(f"\ncached rerun of `python runners/backtest.py`: "
                     f"{res['rerun']['cached_rerun_s']:.1f} s (target <= 15)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=True)

    def job() -> int:
        from bt_lstm import bench
        from bt_lstm.artifacts import atomic_write_json
        from bt_lstm.pipeline import fit_pipeline, prepare_windows
        from bt_lstm.windows import split_bounds
        from strategies.lstm_strategy import RegimeLSTMStrategy
        from strategies.sma_cross import SmaCross

        if args.reps < 1 or args.train_epochs < 1:
            raise ValueError("--reps and --train-epochs must be >= 1")
        cfg = config_from_file(args.config)
        frame, source = _load(args)
        res = {"label": args.label, "data": source, "reps": args.reps,
               "machine": bench.machine_info()}
        print(f"benchmarking on {source} ({len(frame)} bars), {args.reps} reps ...",
              file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            # The models a user gets from the default config: their forecasts set how often
            # the strategy trades, and Backtrader's cost per order is part of the backtest.
            fit, _ = fit_pipeline(frame, cfg)
            fit.forecaster.save(Path(tmp), fit.model_meta)
            res["backtest"] = bench.bench_backtest(frame, Path(tmp), RegimeLSTMStrategy,
                                                   SmaCross, cfg, args.reps)
            res["backtest_peak_rss_mib"] = bench.peak_rss_backtest(
                frame, Path(tmp), RegimeLSTMStrategy, cfg)
        res["inference"] = bench.bench_inference(len(cfg.features.names), cfg.windows.lookback,
                                                 cfg.model.hidden_size, args.reps)
        prep, _, _ = prepare_windows(frame, cfg, split_bounds(len(frame), cfg.windows))
        xt, yt = prep.windows("train")
        xv, yv = prep.windows("val")
        res["training"] = bench.bench_training(xt, yt, xv, yv, cfg, args.train_epochs,
                                               max(1, min(args.reps, 3)))
        if not args.skip_rerun:
            res["rerun"] = _rerun_seconds()
        atomic_write_json(args.out, res)
        print(_table(res))
        print(f"\nwritten: {args.out}")
        return 0

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
