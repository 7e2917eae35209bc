"""The luck statistics in the main job's report: metrics.json, the terminal line, the trial
count from flags and from a saved config, and the spread of --seeds K."""
from __future__ import annotations

import json

from conftest import TINY_FLAGS

from runners import backtest as runner


def _run(market_csv, tmp_path, *extra: str) -> dict:
    args = ["--csv", str(market_csv), *TINY_FLAGS, "--models-dir", str(tmp_path / "models"),
            "--reports-dir", str(tmp_path / "reports"), "--no-tearsheet", *extra]
    assert runner.main(args) == 0
    return json.loads((tmp_path / "reports" / "backtest_candles_4h" / "metrics.json")
                      .read_text())


def test_plain_run_reports_psr_dsr_and_intervals_and_reads_declared_trials(
        market_csv, tmp_path, capsys):
    m = _run(market_csv, tmp_path)
    st = m["statistics"]
    assert st["dsr"]["n_trials"] == 1 and st["dsr"]["origin"] == "run"
    assert st["dsr"]["value"] == st["psr"]["vs_zero"]  # one trial: nothing to deflate
    assert abs(st["sharpe"] - m["strategy"]["sharpe"]) < 1e-9
    lo, hi = st["bootstrap"]["strategy"]["sharpe"]
    assert lo <= hi and len(st["bootstrap"]["sharpe_difference"]) == 2
    assert "seed_spread" not in m
    out = capsys.readouterr().out
    assert "95 % CI [" in out and "PSR" in out and "(N = 1)" in out and "noise alone" in out

    declared = _run(market_csv, tmp_path, "--trials-tried", "60")["statistics"]
    assert declared["dsr"]["n_trials"] == 60 and declared["dsr"]["origin"] == "declared"
    assert declared["dsr"]["value"] <= st["dsr"]["value"]
    assert "(N = 60)" in capsys.readouterr().out
    # the config written beside the run carries its provenance into the next run
    saved = tmp_path / "reports" / "backtest_candles_4h" / "config.json"
    assert json.loads(saved.read_text())["provenance"]["n_trials"] == 60
    cfg = tmp_path / "tuned.json"
    data = json.loads(saved.read_text())
    data["provenance"] = {"origin": "tuning", "n_trials": 40, "trials_sharpe_var": 0.8,
                          "study": "study-1"}
    cfg.write_text(json.dumps(data))
    tuned = _run(market_csv, tmp_path, "--config", str(cfg))["statistics"]["dsr"]
    assert (tuned["n_trials"], tuned["trials_sharpe_var"], tuned["origin"], tuned["study"]) == (
        40, 0.8, "tuning", "study-1")


def test_seeds_3_gives_three_distinct_models_and_the_same_spread_again(market_csv, tmp_path):
    first = _run(market_csv, tmp_path, "--seeds", "3")
    spread = first["seed_spread"]
    assert spread["seeds"] == [7, 8, 9] and spread["ensemble"] == "none"
    ratios = [r["mse_ratio"] for r in spread["runs"]]
    assert len(set(ratios)) == 3  # three different models
    assert set(spread["mean"]) == set(spread["std"]) == {"sharpe", "total_return", "mse_ratio"}
    dirs = first["models"]["dirs"]
    assert len(set(dirs)) == 3 and all(d.endswith(f"_seed{s}") for d, s in zip(dirs, (7, 8, 9)))
    # the headline trades the first seed, as a plain run with that seed does
    assert first["strategy"]["sharpe"] == spread["runs"][0]["sharpe"]
    again = _run(market_csv, tmp_path, "--seeds", "3", "--retrain")
    assert again["seed_spread"] == spread
    mean = _run(market_csv, tmp_path, "--seeds", "3", "--ensemble", "mean")
    assert mean["seed_spread"]["ensemble"] == "mean" and mean["models"]["reused"] is True
    assert mean["seed_spread"]["runs"] == spread["runs"]
