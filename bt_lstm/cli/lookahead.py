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

from bt_lstm.cli.common import (
    MAIN_JOB_MODELS,
    add_data_args,
    add_output_args,
    add_pipeline_args,
    build_config,
    load_dataset,
    main_job_models,
    make_parser,
    run_cli,
    setup_logging,
)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__, prog)
    add_data_args(parser)
    add_pipeline_args(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--cuts", type=int, default=20, metavar="N",
                     help="cut points spread over the data (default 20, at least 2)")
    add_output_args(run, models=MAIN_JOB_MODELS,
                    reports="where lookahead_<DATASET>_<timeframe>.json goes (default: reports)")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.quiet)

    def job() -> int:
        from bt_lstm.data.files import atomic_write_json, clean_json
        from bt_lstm.research.audit import RTOL, format_audit, run_audit

        if args.cuts < 2:
            raise ValueError(f"--cuts {args.cuts}: use at least 2")
        cfg = build_config(args)
        frame, dataset, timeframe = load_dataset(args, cfg)
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

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
