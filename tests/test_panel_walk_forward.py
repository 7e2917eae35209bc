"""Walk-forward over several markets: a portfolio report per fold and stitched, the index of
runs, --resume after an interruption, --jobs across folds and markets."""
from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
from conftest import TINY_FLAGS

from bt_lstm.config import StrategyConfig
from bt_lstm.data.synthetic import make_market
from bt_lstm.jobs import portfolio_folds
from bt_lstm.research.walkforward import WalkForwardSpec

SPEC = WalkForwardSpec(train_bars=500, test_bars=150)
WF_FLAGS = ["--train-bars", "500", "--test-bars", "150", "--no-skill", "trade",
            "--threshold", "0"]


@pytest.fixture(scope="module")
def markets() -> dict[str, pd.DataFrame]:
    """A full market and one that starts 60 days later with a 10-bar outage."""
    a = make_market(n_bars=1200, seed=3).frame
    b = make_market(n_bars=900, seed=4, start="2021-03-02").frame
    return {"AAA": a, "BBB": b.drop(b.index[400:410])}


@pytest.fixture
def trade_cfg(tiny_cfg):
    return replace(tiny_cfg, strategy=StrategyConfig(no_skill="trade", threshold=0.0))


def _write(frame: pd.DataFrame, path) -> str:
    out = frame.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index_label="timestamp")
    return str(path)


def _report_files(folder) -> None:
    for name in ("metrics.json", "bars.csv", "fills.csv", "trades.csv", "pnl.csv",
                 "returns.csv", "portfolio_overview.png", "tearsheet.html"):
        assert (folder / name).is_file(), folder / name


def test_every_fold_and_the_stitched_run_get_the_portfolio_report(markets, trade_cfg,
                                                                  tmp_path):
    from bt_lstm.jobs.portfolio import run_portfolio_job
    from bt_lstm.jobs.portfolio_wf import run_portfolio_walk_forward
    from bt_lstm.jobs.runs import index_row
    from strategies.portfolio import PortfolioStrategy

    root = tmp_path / "reports"
    run_dir = root / "wf_portfolio_AAA+BBB_4h" / "run1"
    run = run_portfolio_walk_forward(markets, trade_cfg, SPEC, PortfolioStrategy, run_dir, root,
                                     timeframe="4h")
    table = run.folds
    starts = sorted(set(table["test_start"]))
    for i, start in enumerate(starts):
        folder = run_dir / "fold_reports" / f"fold_{i:03d}"
        _report_files(folder)
        m = json.loads((folder / "metrics.json").read_text())
        assert set(m["markets"]) == set(table[table.fold == i].symbol)
        assert m["portfolio"]["benchmark"] == "equal-weight buy-and-hold basket"
        assert "statistics" in m["portfolio"] and m["split"]["test_start"] == start
        bars = pd.read_csv(folder / "bars.csv", index_col=0, parse_dates=True)
        assert set(bars["symbol"]) == set(m["markets"])
        # only this fold's test span, traded from the starting cash
        assert bars.index.min() >= pd.Timestamp(start)
        if i + 1 < len(starts):
            assert bars.index.max() < pd.Timestamp(starts[i + 1])
    stitched = run_dir / "stitched"
    _report_files(stitched)
    m = json.loads((stitched / "metrics.json").read_text())
    assert set(m["markets"]) == {"AAA", "BBB"} and m["portfolio"]["skill"]["BBB"]["traded"] > 0
    assert set(pd.read_csv(stitched / "bars.csv")["symbol"]) == {"AAA", "BBB"}
    # the index lists the walk-forward with its out-of-sample figures and page
    row = index_row(run_dir, root)
    assert row["job"] == "walk_forward_portfolio" and row["data"] == "AAA+BBB 4h"
    assert row["sharpe"] == f"{m['portfolio']['strategy']['sharpe']:.2f}"
    assert row["bh_sharpe"] == f"{m['portfolio']['buy_and_hold']['sharpe']:.2f}"
    assert row["dates"].startswith(m["portfolio"]["period"]["start"][:10])
    assert row["link"].endswith("run1/stitched/tearsheet.html")
    assert "AAA:" in row["skill"] and "fold models traded" in row["skill"]
    # and the portfolio backtest with its book's figures
    job = run_portfolio_job(markets, trade_cfg, PortfolioStrategy, tmp_path / "m",
                            root / "portfolio_AAA+BBB_4h", timeframe="4h", tearsheet=False)
    row = index_row(job.report_dir, root)
    assert row["job"] == "portfolio"
    assert row["sharpe"] == f"{job.metrics['portfolio']['strategy']['sharpe']:.2f}"
    assert row["trades"] == job.metrics["portfolio"]["strategy"]["trades"]
    assert row["skill"].startswith("AAA: ")
    page = (root / "index.html").read_text()
    assert "wf_portfolio_AAA+BBB_4h/run1/stitched/tearsheet.html" in page


def test_a_killed_run_resumes_without_refitting_finished_folds(markets, tmp_path,
                                                              monkeypatch, capsys):
    """Interrupted after fold 1 is saved; --resume fits only the later folds and ends where an
    uninterrupted run ends, byte for byte."""
    from bt_lstm.cli.walk_forward import main

    csvs = [_write(f, tmp_path / f"{m}_4h.csv") for m, f in markets.items()]
    base = [a for c in csvs for a in ("--csv", c)] + [*TINY_FLAGS, *WF_FLAGS, "--no-tearsheet",
                                                      "--reports-dir", str(tmp_path / "r")]
    assert main([*base, "--run-id", "whole"]) == 0
    save, fitted = portfolio_folds.save_panel, []

    def killed_after_fold_1(fold_dir, *args, **kwargs):
        save(fold_dir, *args, **kwargs)
        if fold_dir.name == "fold_001":
            raise KeyboardInterrupt

    monkeypatch.setattr(portfolio_folds, "save_panel", killed_after_fold_1)
    assert main([*base, "--run-id", "cut"]) == 130
    assert "--resume cut" in capsys.readouterr().err
    cut = tmp_path / "r" / "cut"
    assert sorted(p.name for p in (cut / "folds").iterdir()) == ["fold_000", "fold_001"]
    assert not (cut / "stitched").exists()
    fit = portfolio_folds._fit_task
    monkeypatch.setattr(portfolio_folds, "save_panel", save)
    monkeypatch.setattr(portfolio_folds, "_fit_task",
                        lambda frames, cfg, split, *a: fitted.append(split.test_start)
                        or fit(frames, cfg, split, *a))
    assert main(["--resume", "cut", "--reports-dir", str(tmp_path / "r")]) == 0
    n_folds = len(list((cut / "folds").iterdir()))
    whole = tmp_path / "r" / "whole"
    assert len(fitted) == n_folds - 2 and n_folds > 3
    folds = pd.read_csv(whole / "stitched" / "folds.csv")
    assert min(fitted) == pd.Timestamp(sorted(set(folds.test_start))[2])  # 0 and 1 kept
    for name in ("bars.csv", "fills.csv", "folds.csv"):
        assert (cut / "stitched" / name).read_bytes() == (whole / "stitched" / name).read_bytes()
    for fold in ("fold_000", "fold_004"):
        assert ((cut / "fold_reports" / fold / "bars.csv").read_bytes()
                == (whole / "fold_reports" / fold / "bars.csv").read_bytes())
    a, b = (json.loads((d / "stitched" / "metrics.json").read_text())["portfolio"]
            for d in (cut, whole))
    assert a["strategy"] == b["strategy"] and a["folds"] == b["folds"]


def test_resume_refuses_changed_data_and_a_new_run_never_overwrites(markets, trade_cfg,
                                                                    tmp_path):
    from bt_lstm.data.panel import align_markets
    from bt_lstm.jobs.portfolio_wf import start_panel_run

    aligned = align_markets(markets)
    from bt_lstm.jobs.portfolio_wf import PanelRunSpec

    run_dir = tmp_path / "run"
    start_panel_run(run_dir, aligned, trade_cfg, SPEC, PanelRunSpec(), False, False)
    with pytest.raises(ValueError, match="already exists"):
        start_panel_run(run_dir, aligned, trade_cfg, SPEC, PanelRunSpec(), False, False)
    changed = dict(markets, BBB=markets["BBB"].iloc[:-1])
    with pytest.raises(ValueError, match="the data changed"):
        start_panel_run(run_dir, align_markets(changed), trade_cfg, SPEC, PanelRunSpec(), True,
                        False)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["markets"] == {"symbols": ["AAA", "BBB"], "panel": "pooled",
                                "allocation": "equal"}


def test_jobs_fit_folds_and_markets_in_parallel_to_the_same_models(markets, trade_cfg,
                                                                  tmp_path):
    """per-market: one task per fold and market; two workers give the one-worker run."""
    from bt_lstm.jobs.portfolio_wf import run_portfolio_walk_forward
    from strategies.portfolio import PortfolioStrategy

    spec = WalkForwardSpec(train_bars=500, test_bars=300)
    runs = [run_portfolio_walk_forward(markets, trade_cfg, spec, PortfolioStrategy,
                                       tmp_path / f"jobs{n}", tmp_path, panel="per-market",
                                       tearsheet=False, jobs=n) for n in (1, 2)]
    one, two = (r.run_dir / "stitched" for r in runs)
    assert (one / "bars.csv").read_bytes() == (two / "bars.csv").read_bytes()
    assert (one / "folds.csv").read_bytes() == (two / "folds.csv").read_bytes()
    for bundle in (runs[0].run_dir / "folds").glob("fold_*/*/manifest.json"):
        twin = runs[1].run_dir / bundle.relative_to(runs[0].run_dir)
        assert json.loads(twin.read_text())["model_key"] == json.loads(
            bundle.read_text())["model_key"]


@pytest.mark.parametrize("flag", [["--seeds", "2"], ["--tune-trials", "2"]])
def test_flags_not_yet_with_several_markets_get_one_line(markets, tmp_path, capsys, flag):
    from bt_lstm.cli.walk_forward import main

    csvs = [_write(f, tmp_path / f"{m}_4h.csv") for m, f in markets.items()]
    code = main([a for c in csvs for a in ("--csv", c)] + [*TINY_FLAGS, *WF_FLAGS, *flag,
                                                           "--reports-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag[0] in err[0] and "not supported" in err[0]
