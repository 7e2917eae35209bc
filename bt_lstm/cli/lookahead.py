"""Look-ahead audit: does any output at bar t change when the bars after t are removed?

At --cuts points spread over the data, features, regime, scaled window, forecast and trading
signal are recomputed on data truncated at the cut and compared with their full-data values.
Every differing column and bar is reported. Exit code 1 when anything differs, 0 when clean.
A warm-up check also reports how the last bar's outputs drift when computed from only the last
200 / 500 / 1000 / 2000 bars (informational: that is history length, not look-ahead).

Examples
--------
    python runners/lookahead.py --symbol BTCUSDT
    python runners/lookahead.py --csv ../shared/data/BTCUSDT_4h.csv --cuts 40
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bt_lstm.cli.args import DATA, add_group, add_pipeline_groups, build_config
from bt_lstm.cli.common import load_data, main_job_models, make_parser, run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm lookahead`` (``prog``: the name its usage lines show;
    default the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_group(parser, "data (default: the bundled synthetic SAMPLE market)", *DATA)
    add_pipeline_groups(parser)
    add_group(parser, "run", "cuts", "models_dir", "reports_dir", "quiet")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm lookahead`` with ``argv`` (default: the process's arguments); return the
    exit code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    return run_cli(build_parser(prog), argv, job)


def job(args: argparse.Namespace) -> int:
    """Run the look-ahead audit on the flags' data; return 1 when any output changed with the
    bars after its cut, 0 when clean."""
    from bt_lstm.data.files import atomic_write_json, clean_json
    from bt_lstm.research.audit import RTOL, format_audit, run_audit

    cfg = build_config(args)
    frame, dataset, timeframe = load_data(args, cfg)
    fc = main_job_models(args, cfg, frame, dataset, timeframe)
    report = run_audit(frame, fc, cfg.strategy.threshold, cfg.strategy.long_only, args.cuts)
    out = Path(args.reports_dir) / f"lookahead_{dataset}_{timeframe}.json"
    atomic_write_json(out, clean_json({
        "dataset": dataset, "timeframe": timeframe, "clean": report.clean,
        "tolerance": {"relative": RTOL, "forecast_absolute": report.forecast_atol},
        "cuts": [str(frame.index[t]) for t in report.cuts],
        "columns_differing": report.columns_differing(),
        "differences": report.differences, "warmup": report.warmup}))
    print(f"{dataset} {timeframe} ({len(frame)} bars)")
    print(format_audit(report))
    print(f"\nreport: {out}")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
