"""runners/bench.py runs end to end and writes a complete JSON (figures are never asserted)."""
from __future__ import annotations

import json
import multiprocessing

import numpy as np

from bt_lstm.jobs.bench import peak_rss_mib
from runners import bench


def test_bench_writes_every_figure(market_csv, tiny_cfg, tmp_path, capsys):
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(tiny_cfg.to_json())
    out = tmp_path / "bench.json"
    rc = bench.main(["--csv", str(market_csv), "--config", str(cfg_path), "--reps", "1",
                     "--train-epochs", "1", "--skip-rerun", "--out", str(out),
                     "--dqn-steps", "100"])
    assert rc == 0
    res = json.loads(out.read_text())
    bt_ = res["backtest"]
    assert bt_["bars"] == 1200
    assert bt_["ratio"] == bt_["model_strategy_s"] / bt_["no_model_strategy_s"]
    assert bt_["model_strategy_fills"] >= 0 and bt_["no_model_orders"] >= 0
    from bt_lstm.models.nets import registered_models

    assert set(res["inference"]) == set(registered_models()) >= {"gru", "lstm", "mlp",
                                                                 "stacked_lstm"}
    for fig in res["inference"].values():
        assert fig["latency_ms_p99"] >= fig["latency_ms_median"] > 0
    tr = res["training"]
    assert tr["windows"] > 0 and tr["epochs"] == 1 and tr["lookback"] == tiny_cfg.windows.lookback
    assert res["backtest_peak_rss_mib"] > 0
    assert res["machine"]["cores"] >= 1 and res["machine"]["torch"]
    for qnet in ("lstm", "dense"):
        assert set(res["dqn"][qnet]) >= {"train_env_steps_per_s", "train_env_steps_per_cpu_s",
                                         "act_latency_ms_median", "act_latency_ms_p99",
                                         "batch_q_obs_per_s"}
    assert res["dqn"]["settings"]["train_freq"] >= 1 and "load_average_before" in res["dqn"]
    assert "ratio (target <= 1.25)" in capsys.readouterr().out


def test_bench_bad_config_path_is_a_clear_error(tmp_path, capsys):
    assert bench.main(["--config", str(tmp_path / "nope.json"), "--skip-rerun"]) == 2
    assert "no such file" in capsys.readouterr().err


def _report_peak(queue):
    queue.put(peak_rss_mib())


def test_a_spawned_childs_peak_memory_is_its_own_not_the_parents():
    ballast = np.ones(1024 * 1024 * 1024 // 8)  # 1 GiB touched in this process
    assert peak_rss_mib() >= 1024
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_report_peak, args=(queue,))
    proc.start()
    child = queue.get(timeout=120)
    proc.join()
    del ballast
    # The child imports bt_lstm (torch: a few hundred MiB) but never held the parent's GiB.
    assert 0 < child < 1024
