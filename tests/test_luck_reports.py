"""The luck statistics in the main job's report: metrics.json, the terminal line, the trial
count from flags and from a saved config, and the spread of --seeds K."""
from __future__ import annotations

import json

from conftest import TINY_FLAGS

from runners import backtest as runner


def _run(market_csv, tmp_path, *extra: str) -> dict:
    # the tiny models show no validated skill: --no-skill trade keeps them trading, so the
    # statistics describe a strategy with trades (the skill guard has its own tests)
    args = ["--csv", str(market_csv), *TINY_FLAGS, "--no-skill", "trade",
            "--models-dir", str(tmp_path / "models"),
            "--reports-dir", str(tmp_path / "reports"), "--no-tearsheet", *extra]
    assert runner.main(args) == 0
    return json.loads((tmp_path / "reports" / "backtest_candles_4h" / "latest" / "metrics.json")
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
    saved = tmp_path / "reports" / "backtest_candles_4h" / "latest" / "config.json"
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
    mean = _run(market_csv, tmp_path, "--seeds", "3", "--ensemble", "mean", "--jobs", "2")
    assert mean["seed_spread"]["ensemble"] == "mean" and mean["models"]["reused"] is True
    assert mean["seed_spread"]["runs"] == spread["runs"]


def test_walk_forward_reports_luck_and_seed_spread_on_its_index_page(market_csv, tmp_path,
                                                                     capsys):
    from runners import walk_forward as wf_runner

    args = ["--csv", str(market_csv), "--train-bars", "400", "--test-bars", "200", *TINY_FLAGS,
            "--no-skill", "trade",
            "--no-tearsheet", "--reports-dir", str(tmp_path / "reports"), "--seeds", "2",
            "--trials-tried", "5"]
    assert wf_runner.main([*args, "--run-id", "a"]) == 0
    run_dir = tmp_path / "reports" / "a"
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["statistics"]["dsr"]["n_trials"] == 5
    assert m["seed_spread"]["seeds"] == [7, 8] and len(m["seed_spread"]["runs"]) == 2
    assert m["strategy"]["sharpe"] == m["seed_spread"]["runs"][0]["sharpe"]
    assert (run_dir / "folds_seed7").is_dir() and (run_dir / "folds_seed8").is_dir()
    page = (run_dir / "index.html").read_text()
    assert "could be luck" in page and "(N = 5)" in page and "Seed spread" in page
    assert "noise alone" in page
    assert "(N = 5)" in capsys.readouterr().out
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["seeds"] == {"n": 2, "ensemble": "none"}
    assert wf_runner.main([*args, "--run-id", "b"]) == 0  # same seeds, same spread
    again = json.loads((tmp_path / "reports" / "b" / "metrics.json").read_text())
    assert again["seed_spread"] == m["seed_spread"]
