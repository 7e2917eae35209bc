"""The portfolio's figures (score_portfolio), its basket benchmark and its report files."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from bt_lstm.backtest.engine import run_backtest
from bt_lstm.backtest.metrics import buy_and_hold_equity, score_backtest
from bt_lstm.backtest.portfolio import run_portfolio_backtest
from bt_lstm.backtest.portfolio_metrics import basket_equity, score_portfolio
from bt_lstm.backtest.reports.portfolio import OVERVIEW, write_portfolio_report
from bt_lstm.config import PipelineConfig
from bt_lstm.data.files import clean_json
from bt_lstm.jobs.backtest import luck_figures
from strategies.lstm_strategy import RegimeLSTMStrategy
from strategies.portfolio import PortfolioStrategy
from tests.test_portfolio import flips, walk

CFG = PipelineConfig()


@pytest.fixture(scope="module")
def scored():
    u = {"A": walk(400, 1), "LATE": walk(300, 2, start="2022-01-20"), "C": walk(400, 3)}
    sig = {s: flips(f, k) for k, (s, f) in enumerate(u.items())}
    res = run_portfolio_backtest(u, sig, PortfolioStrategy, CFG.strategy)
    metrics, daily = score_portfolio(u, res, CFG, luck=lambda s, b: luck_figures(s, b, CFG))
    return u, res, metrics, daily


def test_one_market_figures_are_the_one_market_runs():
    frame = walk(400, 11)
    sig = flips(frame, 12)
    single = run_backtest(frame, RegimeLSTMStrategy, CFG.strategy, signals=sig,
                          forecaster=object())
    s_daily, b_daily, strat, bh = score_backtest(frame, single, CFG)
    folio = run_portfolio_backtest({"X": frame}, {"X": sig}, PortfolioStrategy, CFG.strategy)
    metrics, daily = score_portfolio({"X": frame}, folio, CFG)
    assert clean_json(metrics["portfolio"]["strategy"]) == clean_json(strat)
    assert clean_json(metrics["portfolio"]["buy_and_hold"]) == clean_json(bh)
    pd.testing.assert_series_equal(daily["portfolio"], s_daily)
    # the basket lives on the book's clock (ns); buy-and-hold on the candles' index (us)
    pd.testing.assert_series_equal(daily["basket"], b_daily, check_index_type=False)


def test_the_basket_holds_a_later_markets_share_in_cash_until_it_starts(scored):
    u, res, _, _ = scored
    basket = basket_equity(u, 9000.0, 0.001, 0.0005, res.equity.index)
    late_start = u["LATE"].index[0]
    before = basket[basket.index < late_start]
    assert len(before) > 0
    a = buy_and_hold_equity(u["A"], 3000.0, 0.001, 0.0005)
    c = buy_and_hold_equity(u["C"], 3000.0, 0.001, 0.0005)
    np.testing.assert_allclose(before, 3000.0 + a[before.index] + c[before.index], rtol=1e-12)
    late = buy_and_hold_equity(u["LATE"], 3000.0, 0.001, 0.0005)
    t = u["LATE"].index[5]
    assert basket[t] == pytest.approx(a[t] + c[t] + late[t], rel=1e-12)


def test_the_sleeves_pnl_sum_to_the_books(scored):
    _, res, metrics, _ = scored
    total = sum(m["strategy"]["pnl"] for m in metrics["markets"].values())
    assert total == pytest.approx(res.final_value - CFG.strategy.cash, rel=1e-9)
    assert sum(m["strategy"]["trades"] for m in metrics["markets"].values()) == \
        metrics["portfolio"]["strategy"]["trades"]
    # the book is exposed whenever any market is: at least as often as its busiest market
    assert metrics["portfolio"]["strategy"]["exposure"] >= \
        max(m["strategy"]["exposure"] for m in metrics["markets"].values())
    late = metrics["markets"]["LATE"]
    assert late["period"]["start"] == "2022-01-20 00:00:00"
    assert {"psr", "dsr", "bootstrap"} <= set(metrics["portfolio"]["statistics"])
    assert "statistics" in late and late["counts"]["rejected_orders"] == 0


def test_the_report_folder(scored, tmp_path):
    _, res, metrics, daily = scored
    files = write_portfolio_report(tmp_path, metrics, res, daily, "three markets")
    assert {f.name for f in files} == {"metrics.json", "bars.csv", "fills.csv", "trades.csv",
                                       "rejected.csv", "pnl.csv", "returns.csv", OVERVIEW,
                                       "tearsheet.html"}
    assert all(f.is_file() for f in files)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved) == {"portfolio", "markets"} and set(saved["markets"]) == {"A", "LATE", "C"}
    bars = pd.read_csv(tmp_path / "bars.csv")
    assert bars.columns[1] == "symbol" and set(bars["symbol"]) == {"A", "LATE", "C"}
    assert len(bars) == len(res.bars)
    pnl = pd.read_csv(tmp_path / "pnl.csv", index_col=0)
    np.testing.assert_allclose(pnl["total"] + CFG.strategy.cash, pnl["value"], rtol=1e-12)
    page = (tmp_path / "tearsheet.html").read_text()
    assert "equal-weight buy-and-hold basket" in page and "<td>LATE</td>" in page
    assert (tmp_path / OVERVIEW).read_bytes()[:4] == b"\x89PNG"
    without = write_portfolio_report(tmp_path / "x", metrics, res, daily, "t", tearsheet=False)
    assert "tearsheet.html" not in {f.name for f in without}


def test_a_flat_book_scores_and_reports(tmp_path):
    u = {"A": walk(100, 1), "B": walk(100, 2)}
    res = run_portfolio_backtest(u, {}, PortfolioStrategy, replace(CFG.strategy))
    metrics, daily = score_portfolio(u, res, CFG)
    assert metrics["portfolio"]["strategy"]["trades"] == 0
    assert metrics["portfolio"]["strategy"]["exposure"] == 0.0
    write_portfolio_report(tmp_path, metrics, res, daily, "flat")
    assert (tmp_path / "tearsheet.html").is_file()


@pytest.mark.slow  # spawns a fresh process per size for its peak memory
def test_the_markets_benchmark_copies_markets_onto_one_grid_and_writes_its_json(
        tmp_path, monkeypatch, capsys):
    from bt_lstm.jobs.bench_portfolio import copy_markets, market_counts, run_portfolio_bench
    from runners import bench

    assert market_counts(16) == [1, 4, 16] and market_counts(5) == [1, 4, 5]
    assert market_counts(1) == [1]
    bases = {"BTCUSDT": walk(2000, 1), "ETHUSDT": walk(2000, 2)}
    copies = copy_markets(bases, 5, 300)
    assert list(copies) == [f"{b}_{k}" for k, b in enumerate(["BTCUSDT", "ETHUSDT"] * 2
                                                               + ["BTCUSDT"])]
    assert all(f.index.equals(copies["BTCUSDT_0"].index) and len(f) == 300
               for f in copies.values())
    assert not np.allclose(copies["BTCUSDT_0"]["close"], copies["BTCUSDT_2"]["close"])
    for symbol, frame in bases.items():  # written as the shared data's files
        frame.rename_axis("timestamp").to_csv(tmp_path / f"{symbol}_4h.csv")
    monkeypatch.setenv("BT_LSTM_REAL_DATA", str(tmp_path))
    out = tmp_path / "bench.json"
    res = run_portfolio_bench(2, RegimeLSTMStrategy, PortfolioStrategy, CFG.strategy, 1, out,
                              bars=300)
    saved = json.loads(out.read_text())
    assert saved["data"] == str(tmp_path) and [r["markets"] for r in saved["portfolio"]] == [1, 2]
    one, two = res["portfolio"]
    assert one["fills"] == res["one_market"]["fills"]  # the same trades as run_backtest
    assert two["target_ratio"] == 2 * 1.2 and two["peak_rss_mib"] >= two["rss_before_backtest_mib"]
    assert bench.main(["--markets", "0"]) == 2
    assert "--markets 0" in capsys.readouterr().err
