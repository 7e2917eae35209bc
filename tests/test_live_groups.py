"""Live parity for non-default feature groups: a causal plugin (its file's sha256 checked by the
live loader) and a cross market (both markets' klines over one combined WebSocket stream)."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_live import Replay, assert_parity, live_args, make_run
from test_plugins import docs_plugin

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
