"""Live parity for non-default feature groups: a causal plugin (its file's sha256 checked by the
live loader) and a cross market (both markets' klines over one combined WebSocket stream)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_live import Replay, assert_parity, live_args, make_run
from test_plugins import docs_plugin

from bt_lstm.live.klines import candles_of
from bt_lstm.models.forecast import load_forecaster
from runners import live as live_runner

pytestmark = pytest.mark.slow


def test_live_replay_matches_the_backtest_with_a_plugin_and_refuses_a_changed_file(
        market, tmp_path, capsys):
    """The docs' plugin: the live engine runs it on its bounded history as the backtest did on
    all of it; once the file changes, the live loader refuses the bundle in one line."""
    path = docs_plugin(tmp_path)
    (tmp_path / "run").mkdir()
    run = make_run(tmp_path / "run", market, "--features", f"price,{path}:range_position",
                   "--threshold", "0.003")
    fc = load_forecaster(run["bundle"])
    assert tuple(fc.columns[-2:]) == ("range_pos", "ret_20")
    replay = Replay(run)
    try:
        assert live_runner.main([*live_args(run, tmp_path / "state", replay),
                                 "--threshold", "0.003"]) == 0
    finally:
        replay.close()
    assert_parity(run, tmp_path / "state")
    capsys.readouterr()
    Path(path).write_text(Path(path).read_text() + "\n# edited\n")
    replay = Replay(run)
    try:
        rc = live_runner.main(live_args(run, tmp_path / "state2", replay))
    finally:
        replay.close()
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "changed since the models" in err, err


def write_csv(frame, path: Path) -> None:
    out = frame.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index_label="timestamp")


def test_live_replay_matches_the_backtest_with_a_cross_market(market, tmp_path):
    """BTCUSDT traded with ETHUSDT's features beside it: both markets' klines over one combined
    stream (ETH's candle of each close sent just after ours, so the engine waits for it every
    bar), the warm-up of both over REST. ETH misses one candle in the traded span: the backtest's
    as-of rule repeats its last candle there, and so does the live engine after --cross-wait."""
    from bt_lstm.data.synthetic import make_market

    other = make_market(n_bars=len(market.frame), seed=11).frame.set_axis(market.frame.index)
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "run").mkdir()
    hole = other.index[len(other) - 40]  # in the test span the live engine decides
    write_csv(other.drop(index=hole), data / "ETHUSDT_4h.csv")
    run = make_run(tmp_path / "run", market, "--features", "price,cross:ETHUSDT",
                   "--data-dir", str(data), "--threshold", "0.0045")  # forecasts about -0.005
    fc = load_forecaster(run["bundle"])
    assert fc.columns[-1] == "cross:ETHUSDT:volume_z" and len(fc.columns) == 14
    assert hole > run["bars"].index[0]
    replay = Replay(run, others={"ETHUSDT": candles_of(other.drop(index=hole))})
    try:
        assert live_runner.main([*live_args(run, tmp_path / "state", replay),
                                 "--threshold", "0.0045", "--cross-wait", "0.3"]) == 0
    finally:
        replay.close()
    assert_parity(run, tmp_path / "state")
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["feed"]["cross_late"] == 1  # the hole, and only it
