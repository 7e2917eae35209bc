"""The skill map: grid parsing and bad input, cell-by-cell resume, N of the deflated Sharpe,
the corrections, and a calendar-only market whose map names exactly the calendar cell."""
from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_FLAGS

from bt_lstm.research import walkforward as wf
from bt_lstm.research.scoring import diebold_mariano, skill_record
from bt_lstm.research.skillmap import (
    Cell,
    correct_rows,
    make_grid,
    parse_feature_sets,
    parse_horizons,
    parse_targets,
)
from bt_lstm.research.stats import deflated_sharpe, holm_adjust
from runners import skillmap as runner

SPANS = ["--train-bars", "400", "--test-bars", "200"]


def run_map(tmp_path, run_id, *extra, csvs=None):
    csvs = csvs or [tmp_path / "candles.csv"]
    markets = [a for c in csvs for a in ("--csv", str(c))]
    return runner.main([*markets, *SPANS, *TINY_FLAGS, "--run-id", run_id,
                        "--reports-dir", str(tmp_path / "reports"), *extra])


def table(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "skillmap.csv")


# --- the grid -------------------------------------------------------------------------------

def test_grid_parses_sets_horizons_targets_and_crosses_markets():
    sets = parse_feature_sets("price; price,calendar ;price,htf:1d")
    assert sets == (("price",), ("price", "calendar"), ("price", "htf:1d"))
    assert parse_horizons("1,3,6") == (1, 3, 6)
    assert parse_targets("logret,vol-scaled") == ("logret", "vol-scaled")
    cells = make_grid(sets, (1, 3, 6), ("logret", "vol-scaled"), ["BTC", "ETH"])
    assert len(cells) == 3 * 3 * 2 * 2
    assert len({c.cell_id for c in cells}) == len(cells)  # one folder per cell
    assert cells[0] == Cell(("price",), 1, "logret", "BTC")
    assert Cell(("price", "calendar"), 3, "logret", "ETH").cell_id == "price+calendar_h3_logret_ETH"


@pytest.mark.parametrize("argv, words", [
    (["--grid-features", "price;;calendar"], "--grid-features 'price;;calendar': an empty"),
    (["--grid-features", "price;prise"], "feature group 'prise' is unknown"),
    (["--grid-features", "price;price"], "the set price is given twice"),
    (["--horizons", "1,0"], "--horizons '1,0': expected comma-separated whole numbers"),
    (["--horizons", "1,1"], "a horizon is given twice"),
    (["--targets", "logret,returns"], "--targets: 'returns' is invalid"),
    (["--symbols", "BTCUSDT"], "either as --csv files or as --symbols"),
])
def test_bad_grid_or_markets_is_one_line_and_exit_2_before_any_training(
        market_csv, tmp_path, capsys, argv, words):
    rc = run_map(tmp_path, "bad", *argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert words in err, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "reports" / "bad").exists()  # refused before the run folder


def test_the_same_market_twice_is_refused(market_csv, tmp_path, capsys):
    assert run_map(tmp_path, "twice", csvs=[market_csv, market_csv]) == 2
    assert "the same market is given twice" in capsys.readouterr().err


# --- resume ---------------------------------------------------------------------------------

GRID = ["--grid-features", "price", "--horizons", "1,2", "--targets", "logret"]


def test_a_killed_map_resumes_without_redoing_finished_cells_and_equals_a_whole_run(
        market_csv, tmp_path, monkeypatch, capsys):
    assert run_map(tmp_path, "whole", *GRID) == 0
    whole = tmp_path / "reports" / "whole"
    real, calls = wf._train_task, {"n": 0, "die_at": None}

    def counted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["die_at"]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(wf, "_train_task", counted)
    # a run of the first cell alone trains this many tasks; die 5 tasks into the second cell
    assert run_map(tmp_path, "probe", *GRID[:3], "1", *GRID[4:]) == 0
    first_cell_tasks = calls["n"]
    calls.update(n=0, die_at=first_cell_tasks + 5)
    capsys.readouterr()
    assert run_map(tmp_path, "cut", *GRID) == 130
    cut = tmp_path / "reports" / "cut"
    assert "1 finished cells are kept" in capsys.readouterr().err
    rows = sorted((cut / "rows").glob("*.json"))
    assert [p.stem for p in rows] == ["price_h1_logret_candles"]
    stamp = rows[0].stat().st_mtime_ns
    assert not (cut / "skillmap.csv").exists()
    calls.update(n=0, die_at=None)
    rc = runner.main(["--resume", "cut", "--reports-dir", str(tmp_path / "reports"), "--quiet"])
    assert rc == 0
    assert rows[0].stat().st_mtime_ns == stamp  # the finished cell was read, never rewritten
    # only the second cell trained, and only its folds the kill had not finished
    assert 0 < calls["n"] < first_cell_tasks
    pd.testing.assert_frame_equal(table(whole), table(cut))


def test_resume_refuses_other_settings(market_csv, tmp_path, capsys):
    assert run_map(tmp_path, "one", "--grid-features", "price", "--horizons", "1",
                   "--targets", "logret") == 0
    capsys.readouterr()
    assert runner.main(["--resume", "one", "--horizons", "3",
                        "--reports-dir", str(tmp_path / "reports")]) == 2
    assert "drop --horizons" in capsys.readouterr().err


# --- the corrections ------------------------------------------------------------------------

def test_dsr_takes_n_equal_to_the_number_of_cells(market_csv, tmp_path):
    other = tmp_path / "other.csv"
    frame = pd.read_csv(market_csv, index_col=0)
    frame[["open", "high", "low", "close"]] *= 2.0  # a second market, same shape
    frame.to_csv(other)
    assert run_map(tmp_path, "n", "--grid-features", "price", "--horizons", "1,2", "--targets",
                   "logret", "--no-skill", "trade",  # every cell trades: four Sharpes
                   "--panel", "per-market",  # each market its own walk-forward
                   csvs=[market_csv, other]) == 0
    run_dir = tmp_path / "reports" / "n"
    t = table(run_dir)
    n = 1 * 2 * 1 * 2  # feature sets x horizons x targets x markets
    assert len(t) == n and (t["dsr_n"] == n).all()
    assert json.loads((run_dir / "metrics.json").read_text())["rule"]["dsr_n_trials"] == n
    for cell_id in t["cell_id"]:  # each cell's own walk-forward report deflates by N too
        m = json.loads((run_dir / "cells" / cell_id / "metrics.json").read_text())
        assert m["statistics"]["dsr"]["n_trials"] == n
    assert t["sr_pp"].notna().sum() == n
    var = float(np.var(t["sr_pp"], ddof=1))
    for _, r in t.iterrows():
        want, _ = deflated_sharpe(r["sr_pp"], int(r["days"]), r["skew"], r["kurt"], n, var)
        assert r["dsr"] == pytest.approx(want)
        one, _ = deflated_sharpe(r["sr_pp"], int(r["days"]), r["skew"], r["kurt"], 1, var)
        assert r["dsr"] < one  # four cells tried cost something


def test_holm_and_the_keep_rule():
    assert holm_adjust(np.array([0.01, 0.04, 0.03])).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust(np.array([np.nan, 0.01])).tolist() == pytest.approx([1.0, 0.02])
    base = {"days": 400, "skew": 0.0, "kurt": 3.0, "features": "price", "horizon": 1,
            "target": "logret", "market": "X"}
    rows = [dict(base, mse_ratio=0.9, dm_p=0.001, sr_pp=0.3),   # skill, trades well
            dict(base, mse_ratio=0.9, dm_p=0.03, sr_pp=0.3),    # p 0.03 x 3 > 0.05 after Holm
            dict(base, mse_ratio=1.1, dm_p=np.nan, sr_pp=np.nan)]  # flat: nothing to judge
    out = correct_rows(rows)
    assert [r["keeps_skill"] for r in out] == [True, False, False]
    assert out[1]["dm_p_holm"] == pytest.approx(0.06) and rows[1].get("dm_p_holm") is None


def test_dm_with_overlapping_targets_widens_the_variance():
    rng = np.random.default_rng(0)
    shocks = rng.normal(size=3000)
    realised = np.convolve(shocks, np.ones(6), "valid")  # 6-bar sums: overlapping targets
    forecast = 0.1 * realised + rng.normal(size=len(realised))
    one = diebold_mariano(forecast - realised, realised, "less", horizon=1)
    six = diebold_mariano(forecast - realised, realised, "less", horizon=6)
    assert abs(six["dm"]) < abs(one["dm"])
    # the skill guard judges a K-bar model's validation windows the same way
    guard = [skill_record(forecast, realised, 0.0, 1, horizon=k)["dm_p"] for k in (1, 6)]
    assert guard == pytest.approx([one["p_value"], six["p_value"]])
    assert guard[1] > guard[0]


# --- a market with a calendar effect only ---------------------------------------------------

def calendar_market(n_bars: int = 2400, seed: int = 5, effect: float = 0.004,
                    noise: float = 0.006) -> pd.DataFrame:
    """4h candles whose bar return depends on its hour of day and nothing else: the next
    bar's expected return is known from the calendar at t, never from past prices."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2022-01-01", periods=n_bars, freq="4h")
    sign = np.array([1.0, 1.0, -1.0, -1.0, 1.0, -1.0])[index.hour // 4]  # small autocorrelation
    ret = effect * sign + noise * rng.normal(size=n_bars)
    close = 100.0 * np.exp(np.cumsum(ret))
    open_ = np.concatenate([[100.0], close[:-1]])
    wiggle = np.abs(rng.normal(scale=noise / 2, size=(2, n_bars)))
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * (1 + wiggle[0]),
                         "low": np.minimum(open_, close) * (1 - wiggle[1]),
                         "close": close, "volume": rng.lognormal(3, 0.3, n_bars)}, index=index)


def test_a_calendar_effect_is_found_by_the_calendar_cell_only(tmp_path, capsys):
    path = tmp_path / "calendar.csv"
    frame = calendar_market()
    frame.index = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(path, index_label="timestamp")
    rc = runner.main(["--csv", str(path), "--grid-features", "price;price,calendar",
                      "--horizons", "1", "--targets", "logret", "--train-bars", "900",
                      "--test-bars", "500", "--lookback", "8", "--hidden-size", "8",
                      "--epochs", "20", "--patience", "5", "--batch-size", "32", "--lr", "0.003",
                      "--min-regime-windows", "100000",  # one pooled model per fold
                      "--threshold", "0.0005", "--commission", "0", "--slippage", "0",
                      "--run-id", "cal", "--reports-dir", str(tmp_path / "reports"), "--quiet"])
    assert rc == 0
    run_dir = tmp_path / "reports" / "cal"
    t = table(run_dir).set_index("features")
    assert not t.loc["price", "keeps_skill"]
    assert t.loc["price,calendar", "keeps_skill"]
    assert t.loc["price,calendar", "mse_ratio"] < t.loc["price", "mse_ratio"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["keeps_skill"] == ["price+calendar_h1_logret_calendar"]
    assert "1 of 2 cells keep skill" in metrics["verdict"]
    assert "price,calendar h1 logret on calendar" in metrics["verdict"]
    page = (run_dir / "index.html").read_text()
    assert html.escape(metrics["verdict"]) in page and "price,calendar · h1 · logret ✔" in page
    assert "price,calendar h1 logret on calendar" in capsys.readouterr().out
    assert "1 of 2 cells keep skill" in (tmp_path / "reports" / "index.html").read_text()


# --- several markets: the pooled panel ------------------------------------------------------

POOLED_GRID = ["--grid-features", "price", "--horizons", "1,2", "--targets", "logret",
               "--no-skill", "trade"]  # every market trades: a Sharpe and a DM p per row


@pytest.fixture
def two_markets(tmp_path):
    """Two synthetic markets on one calendar with different paths (their rows must differ)."""
    from bt_lstm.data.synthetic import make_market

    paths = []
    for name, seed in (("alpha", 3), ("beta", 4)):
        frame = make_market(n_bars=1200, seed=seed).frame.copy()
        frame.index = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
        paths.append(tmp_path / f"{name}.csv")
        frame.to_csv(paths[-1], index_label="timestamp")
    return paths


def test_pooled_cells_run_one_panel_walk_forward_and_score_each_market_on_its_own(
        two_markets, tmp_path, monkeypatch):
    from bt_lstm.backtest.metrics import PERIODS_PER_YEAR
    from bt_lstm.research import panel
    from bt_lstm.research.skillmap import forecast_figures, trading_figures

    real, horizons = panel.skill_record, set()

    def spy(*args, **kwargs):
        horizons.add(args[6] if len(args) > 6 else kwargs.get("horizon", 1))
        return real(*args, **kwargs)

    monkeypatch.setattr(panel, "skill_record", spy)
    assert run_map(tmp_path, "pool", *POOLED_GRID, csvs=two_markets) == 0
    assert horizons == {1, 2}  # the pooled skill guard's DM: long-run variance for K bars
    run_dir = tmp_path / "reports" / "pool"
    assert json.loads((run_dir / "config.json").read_text())["panel"] == "pooled"
    assert json.loads((run_dir / "metrics.json").read_text())["panel"] == "pooled"
    # one panel walk-forward per setting, one row per market and setting
    assert sorted(p.name for p in (run_dir / "cells").iterdir() if p.is_dir()) == [
        "price_h1_logret_panel", "price_h2_logret_panel"]
    t = table(run_dir)
    assert sorted(zip(t["market"], t["horizon"])) == [("alpha", 1), ("alpha", 2), ("beta", 1),
                                                      ("beta", 2)]
    assert (t["dsr_n"] == 4).all()
    for _, r in t.iterrows():
        stitched = run_dir / "cells" / f"price_h{r['horizon']}_logret_panel" / "stitched"
        fc = pd.read_csv(stitched / "forecasts.csv", index_col=0, parse_dates=True)
        fc = fc[fc["symbol"] == r["market"]]
        # the realised target is this market's own K-bar log return
        close = pd.read_csv(tmp_path / f"{r['market']}.csv", index_col=0,
                            parse_dates=True)["close"]
        close.index = close.index.tz_localize(None)
        want = np.log(close.shift(-int(r["horizon"])) / close).reindex(fc.index)
        np.testing.assert_allclose(fc["realised"], want)
        figures = forecast_figures(fc["forecast"].to_numpy(), fc["realised"].to_numpy(),
                                   int(r["horizon"]), 0)
        assert r["mse_ratio"] == pytest.approx(figures["mse_ratio"])
        assert r["dm_p"] == pytest.approx(figures["dm_p"])
        daily = pd.read_csv(stitched / "returns.csv", index_col=0)[r["market"]].dropna()
        sharpe = trading_figures(daily.to_numpy(), PERIODS_PER_YEAR)["sharpe"]
        assert r["sharpe"] == pytest.approx(sharpe)
        m = json.loads((stitched / "metrics.json").read_text())["markets"][r["market"]]
        assert r["fold_models"] == m["skill"]["fold_regime_models"] > 0
        assert r["trades"] == m["strategy"]["trades"]
        assert m["statistics"]["dsr"]["n_trials"] == 4  # the panel run deflates by N too
    a, b = t[t["market"] == "alpha"], t[t["market"] == "beta"]
    assert not np.allclose(a["mse_ratio"], b["mse_ratio"])  # each market its own forecasts


def test_a_killed_pooled_map_resumes_from_the_panel_folds_and_equals_a_whole_run(
        two_markets, tmp_path, monkeypatch, capsys):
    from bt_lstm.jobs import portfolio_folds

    assert run_map(tmp_path, "whole", *POOLED_GRID, csvs=two_markets) == 0
    real, calls = portfolio_folds._fit_task, {"n": 0, "die_at": None}

    def counted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["die_at"]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(portfolio_folds, "_fit_task", counted)
    per_cell = len(list((tmp_path / "reports" / "whole" / "cells" / "price_h1_logret_panel"
                         / "folds").glob("fold_*")))  # pooled: one task per fold
    calls.update(n=0, die_at=per_cell + 2)  # one fold of the second setting is saved
    capsys.readouterr()
    assert run_map(tmp_path, "cut", *POOLED_GRID, csvs=two_markets) == 130
    cut = tmp_path / "reports" / "cut"
    assert "2 finished cells are kept" in capsys.readouterr().err
    rows = sorted((cut / "rows").glob("*.json"))
    assert [p.stem for p in rows] == ["price_h1_logret_alpha", "price_h1_logret_beta"]
    stamps = [p.stat().st_mtime_ns for p in rows]
    calls.update(n=0, die_at=None)
    rc = runner.main(["--resume", "cut", "--reports-dir", str(tmp_path / "reports"), "--quiet"])
    assert rc == 0
    assert [p.stat().st_mtime_ns for p in rows] == stamps  # finished cells never rewritten
    assert calls["n"] == per_cell - 1  # only the second setting's unfinished folds trained
    pd.testing.assert_frame_equal(table(tmp_path / "reports" / "whole"), table(cut))
