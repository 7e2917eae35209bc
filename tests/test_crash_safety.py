"""Crash safety: SIGKILL mid-write leaves an old or new complete file; leftovers are tidied."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import TINY_FLAGS

from bt_lstm.data.files import clean_stale
from runners import backtest as backtest_runner
from runners import walk_forward as wf_runner

SIZE = 4 << 20  # 4 MiB a write: long enough to be killed in the middle of one

WRITER = """
import sys
from pathlib import Path
from bt_lstm.data.files import atomic_write_bytes
path = Path(sys.argv[1])
i = 0
while True:
    atomic_write_bytes(path, bytes([i % 251]) * {size})
    if i == 0:
        print("ready", flush=True)
    i += 1
""".format(size=SIZE)


@pytest.mark.parametrize("delay", [0.01, 0.05, 0.13, 0.29])
def test_sigkill_during_atomic_writes_leaves_a_complete_file(tmp_path, delay):
    path = tmp_path / "model.pt"
    with subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    data = path.read_bytes()
    assert len(data) == SIZE and data == bytes([data[0]]) * SIZE  # one write, whole
    clean_stale(tmp_path)  # the next start tidies the killed writer's temp file
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


SWAPPER = """
import os, signal, sys
from pathlib import Path
from bt_lstm.data import files as artifacts
final = Path(sys.argv[1])
staged = artifacts.staging_dir(final)
(staged / "metrics.json").write_text("new")
real = os.replace
def dies_after_the_first_rename(src, dst):
    real(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)  # between moving the old aside and the new in
artifacts.os.replace = dies_after_the_first_rename
artifacts.replace_dir(staged, final)
"""


def test_sigkill_while_replacing_a_folder_restores_the_old_one(tmp_path):
    final = tmp_path / "backtest_X"
    final.mkdir()
    (final / "metrics.json").write_text("old")
    proc = subprocess.run([sys.executable, "-c", SWAPPER, str(final)])
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists()  # the torn moment: old set aside, new not in place
    done = clean_stale(tmp_path)  # what the next start does
    assert (final / "metrics.json").read_text() == "old"
    assert any("restored" in line for line in done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backtest_X"]  # staging removed too


def test_live_writers_files_are_left_alone(tmp_path):
    mine = tmp_path / f".x.{os.getpid()}.abc.tmp"
    mine.write_text("in progress")
    assert clean_stale(tmp_path) == [] and mine.exists()


def test_ctrl_c_during_training_keeps_the_last_good_models(market_csv, tmp_path, monkeypatch,
                                                           capsys):
    args = ["--csv", str(market_csv), *TINY_FLAGS, "--no-tearsheet",
            "--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    assert backtest_runner.main(args) == 0
    bundle = tmp_path / "models" / "candles_4h"
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    report_before = (tmp_path / "reports" / "backtest_candles_4h" / "latest"
                     / "metrics.json").read_bytes()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("bt_lstm.research.pipeline.train_model", interrupted)
    capsys.readouterr()
    assert backtest_runner.main([*args, "--retrain"]) == 130
    err = capsys.readouterr().err
    assert f"the models of the last complete run are kept in {bundle}" in err
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert (tmp_path / "reports" / "backtest_candles_4h" / "latest"
                     / "metrics.json").read_bytes() \
        == report_before
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]


def test_existing_run_is_moved_aside_with_force_never_deleted(market_csv, tmp_path, capsys):
    reports = tmp_path / "reports"
    args = ["--csv", str(market_csv), "--train-bars", "400", "--test-bars", "400", *TINY_FLAGS,
            "--no-tearsheet", "--run-id", "r", "--reports-dir", str(reports)]
    assert wf_runner.main(args) == 0
    first = json.loads((reports / "r" / "metrics.json").read_text())
    assert wf_runner.main(args) == 2  # never overwritten without --force
    assert wf_runner.main([*args, "--force"]) == 0
    aside = [p for p in reports.iterdir() if p.name.startswith("r.replaced-")]
    assert len(aside) == 1
    assert json.loads((aside[0] / "metrics.json").read_text()) == first
    assert (reports / "r" / "metrics.json").is_file()
