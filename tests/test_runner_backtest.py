"""runners/backtest.py end to end: outputs, metrics recomputed from returns, clear errors."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TINY_FLAGS, real_data_dir

from runners import backtest as runner


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network access blocked in tests")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def dirs(tmp_path):
    return ["--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]


def test_end_to_end_writes_report_and_metrics_match_returns(market_csv, tmp_path, capsys,
                                                            no_network):
    # --no-skill trade: the tiny models show no skill, and this test needs a strategy that trades
    rc = runner.main(["--csv", str(market_csv), *TINY_FLAGS, *dirs(tmp_path),
                      "--no-skill", "trade"])
    out = capsys.readouterr().out
    assert rc == 0
    report = tmp_path / "reports" / "backtest_candles_4h" / "latest"
    for name in ("tearsheet.html", "metrics.json", "returns.csv", "config.json", "bars.csv"):
        assert (report / name).is_file(), name
    assert "Buy & hold" in out and str(report.resolve()) in out
    listed = {line.strip() for line in out.splitlines()}
    for f in report.resolve().iterdir():  # the terminal lists every file the run wrote
        assert str(f) in listed, f
    assert str(tmp_path / "reports" / "index.html") in listed
    html = (report / "tearsheet.html").read_text()
    assert "<html" in html.lower() and "Buy &amp; hold" in html or "Buy & hold" in html
    metrics = json.loads((report / "metrics.json").read_text())
    returns = pd.read_csv(report / "returns.csv", index_col=0, parse_dates=True)
    for col, key in (("strategy", "strategy"), ("buy_and_hold", "buy_and_hold")):
        r = returns[col].to_numpy()
        m = metrics[key]
        equity = np.concatenate([[1.0], np.cumprod(1 + r)])
        assert m["total_return"] == pytest.approx(equity[-1] - 1)
        assert m["cagr"] == pytest.approx(equity[-1] ** (365 / len(r)) - 1)
        assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(365))
        downside = np.sqrt(np.sum(np.minimum(r, 0) ** 2) / len(r))
        assert m["sortino"] == pytest.approx(r.mean() / downside * np.sqrt(365))
        assert m["max_drawdown"] == pytest.approx(np.min(equity / np.maximum.accumulate(equity)
                                                         - 1))
    # the same figures as QuantStats computes from the same daily returns
    import quantstats as qs
    strat = returns["strategy"]
    assert metrics["strategy"]["sharpe"] == pytest.approx(qs.stats.sharpe(strat, periods=365))
    assert metrics["strategy"]["max_drawdown"] == pytest.approx(qs.stats.max_drawdown(strat))
    bars = pd.read_csv(report / "bars.csv", index_col=0)
    assert metrics["strategy"]["exposure"] == pytest.approx((bars["position"] != 0).mean())
    assert metrics["period"]["bars"] == len(bars)


def test_rerun_reuses_saved_models_and_gives_the_same_metrics(market_csv, tmp_path, capsys):
    args = ["--csv", str(market_csv), *TINY_FLAGS, *dirs(tmp_path), "--no-tearsheet"]
    assert runner.main(args) == 0
    report = tmp_path / "reports" / "backtest_candles_4h" / "latest" / "metrics.json"
    first = json.loads(report.read_text())
    assert runner.main(args) == 0
    second = json.loads(report.read_text())
    assert first["models"]["reused"] is False and second["models"]["reused"] is True
    assert first["strategy"] == second["strategy"]
    assert "(reused)" in capsys.readouterr().out
    assert runner.main(args + ["--retrain"]) == 0
    assert json.loads(report.read_text())["models"]["reused"] is False


def bad_csvs(tmp_path, market_csv):
    text = market_csv.read_text().splitlines()
    cases = {
        "missing": tmp_path / "nope.csv",
        "nan": ["\n".join(text[:50] + [text[50].rsplit(",", 1)[0] + ",nan"] + text[51:])],
        "high<low": None,
        "duplicate": ["\n".join(text[:100] + [text[99]] + text[100:])],
        "unsorted": ["\n".join(text[:1] + text[2:3] + text[1:2] + text[3:])],
        "too few": ["\n".join(text[:300])],
        "no columns": ["a,b\n1,2\n"],
    }
    row = text[10].split(",")
    row[2], row[3] = row[3], row[2]  # swap high and low
    cases["high<low"] = ["\n".join(text[:10] + [",".join(row)] + text[11:])]
    out = {}
    for name, content in cases.items():
        if isinstance(content, list):
            p = tmp_path / f"{name.replace('<', '_')}.csv"
            p.write_text(content[0] + "\n")
            out[name] = p
        else:
            out[name] = content
    return out


EXPECT = {"missing": "no such file", "nan": "NaN", "high<low": "high < low",
          "duplicate": "duplicate", "unsorted": "earlier", "too few": "too few",
          "no columns": "missing column"}


@pytest.mark.parametrize("case", sorted(EXPECT))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, market_csv, tmp_path, capsys):
    path = bad_csvs(tmp_path, market_csv)[case]
    out_dir = tmp_path / "out"
    rc = runner.main(["--csv", str(path), *TINY_FLAGS, *dirs(out_dir)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert EXPECT[case] in err
    assert not out_dir.exists()


@pytest.mark.parametrize("argv, match", [
    (["--symbol", "NOPE"], "NOPE_4h.csv"),
    (["--lookback", "0"], "lookback"),
    (["--features", "rsi,macd"], "names"),
    (["--device", "cuda"], "cuda"),
    (["--timeframe", "1h"], "4h"),
])
def test_bad_flags_exit_2(argv, match, tmp_path, capsys, monkeypatch):
    if argv[:2] == ["--device", "cuda"]:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    monkeypatch.chdir(tmp_path)
    rc = runner.main(argv + ["--epochs", "1", "--quiet", *dirs(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err
    assert not (tmp_path / "out" / "reports").exists()


def test_failed_run_keeps_the_previous_report(market_csv, tmp_path, monkeypatch):
    args = ["--csv", str(market_csv), *TINY_FLAGS, *dirs(tmp_path), "--no-tearsheet"]
    assert runner.main(args) == 0
    group = tmp_path / "reports" / "backtest_candles_4h"
    report = group / "latest"
    before = (report / "metrics.json").read_text()
    kept = sorted(p.name for p in group.iterdir())  # the run folder and latest

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr("bt_lstm.jobs.backtest.write_tearsheet", crash)
    assert runner.main(args[:-1] + ["--threshold", "0.01"]) == 2
    assert (report / "metrics.json").read_text() == before
    assert sorted(p.name for p in group.iterdir()) == kept  # no half-written run left
    assert sorted(p.name for p in group.parent.iterdir()) == ["backtest_candles_4h",
                                                                "index.html"]


def test_help_documents_every_flag():
    parser = runner.build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
    text = subprocess.run([sys.executable, "runners/backtest.py", "--help"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    for flag in ("--symbol", "--csv", "--timeframe", "--threshold", "--long-only",
                 "--retrain", "--device", "--regimes", "--commission", "--slippage"):
        assert flag in text


@pytest.mark.realdata
def test_real_btcusdt_4h_run_completes(tmp_path, capsys):
    data = real_data_dir()
    if data is None:
        pytest.skip("../shared/data/BTCUSDT_4h.csv not present")
    rc = runner.main(["--symbol", "BTCUSDT", "--data-dir", str(data), *TINY_FLAGS,
                      *dirs(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "reports" / "backtest_BTCUSDT_4h" / "latest" / "metrics.json")
                         .read_text())
    assert metrics["period"]["bars"] > 2000
    assert "missing candles" in metrics["data_gaps"]
