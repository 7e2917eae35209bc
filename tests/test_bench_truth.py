"""runners/bench_truth.py on a small synthetic market: a complete, self-consistent JSON."""
from __future__ import annotations

import json

import pytest

from runners import bench_truth


def test_bench_truth_writes_consistent_figures(tiny_cfg, tmp_path, capsys):
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(tiny_cfg.to_json())
    out = tmp_path / "truth.json"
    assert bench_truth.main(["--bars", "1500", "--seed", "3", "--config", str(cfg_path),
                             "--out", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert set(res["classifiers"]) == {"rule", "gmm"}
    for scopes in res["classifiers"].values():
        for scope in ("out_of_sample", "test", "settled"):
            assert 0.0 <= scopes[scope]["balanced_accuracy"] <= 1.0
        assert scopes["settled"]["bars"] < scopes["out_of_sample"]["bars"]
    oracle = res["r2"]["oracle"]
    assert oracle > 0  # the true expected return does explain the synthetic returns
    for name, share in res["r2_share_of_oracle"].items():
        assert share == pytest.approx(res["r2"][name] / oracle)
    target = res["targets"]["regime_lstm_r2_share"]
    assert target["met"] == (target["value"] >= 0.8)
    acc = res["targets"]["default_classifier_balanced_accuracy"]
    assert acc["value"] == res["classifiers"]["rule"]["out_of_sample"]["balanced_accuracy"]
    assert res["strategy"]["oracle"]["trades"] >= 0
    assert "share of oracle" in capsys.readouterr().out
