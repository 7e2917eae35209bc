"""Downloader: Binance archive and ccxt against a local mirror on 127.0.0.1 (real HTTP, real zip
files, real ccxt), incremental and atomic writes, every listed fault, the bundled snapshot and
the loader's time-column names. Offline; nothing is timed."""
from __future__ import annotations

import calendar
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bt_lstm.data.candles import DataError, load_ohlcv
from bt_lstm.data.download import DownloadRequest, download_candles, is_stale
from bt_lstm.data.download.mirror import KlineMirror, MirrorFaults
from bt_lstm.data.download.store import iso_ms
from runners import download as runner

REPO = Path(__file__).resolve().parents[1]
BAR = 4 * 3_600_000
SYM = "TESTUSDT"
END = "2025-02-28"  # the synthetic history ends here; later months are not on the mirror


def ms(y: int, m: int, d: int = 1, h: int = 0) -> int:
    return calendar.timegm((y, m, d, h, 0, 0)) * 1000


def make_rows(first: int, last: int, bar: int = BAR, seed: int = 0) -> list[tuple]:
    """Synthetic candles from ``first`` to ``last`` (open times, inclusive)."""
    rng = np.random.default_rng(seed)
    rows, price = [], 100.0
    for t in range(first, last + 1, bar):
        o = price
        c = round(o * float(np.exp(rng.normal(0, 0.01))), 2)
        rows.append((t, o, round(max(o, c) * 1.005, 2), round(min(o, c) * 0.995, 2), c,
                     round(float(rng.uniform(1, 5)), 3)))
        price = c
    return rows


ROWS = make_rows(ms(2023, 1), ms(2025, 2, 28, 20))  # 26 months; ms files, µs from 2025


@pytest.fixture()
def mirror():
    with KlineMirror({SYM: {"4h": ROWS}},
                     MirrorFaults(with_header={f"{SYM}-4h-2023-06.zip"})) as m:
        yield m


def expected_bytes(rows) -> bytes:
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [f"{iso_ms(r[0])},{r[1]!r},{r[2]!r},{r[3]!r},{r[4]!r},{r[5]!r}" for r in rows]
    return ("\n".join(lines) + "\n").encode()


def run(argv, capsys):
    rc = runner.main([*argv, "--quiet"])
    out, err = capsys.readouterr()
    return rc, out, err


def archive_args(m, data: Path, *extra) -> list[str]:
    return ["--symbol", SYM, "--base-url", m.url, "--data-dir", str(data), "--end", END, *extra]


def ccxt_args(m, data: Path, *extra) -> list[str]:
    return ["--symbol", SYM, "--source", "ccxt", "--api-url", m.url, "--data-dir", str(data),
            "--end", END, *extra]


def test_archive_download_writes_what_the_loader_reads(mirror, tmp_path, capsys):
    rc, out, err = run(archive_args(mirror, tmp_path), capsys)
    assert rc == 0, err
    path = tmp_path / f"{SYM}_4h.csv"
    assert path.read_bytes() == expected_bytes(ROWS)  # ms, µs (2025) and a header month alike
    frame = load_ohlcv(path)
    assert len(frame) == len(ROWS) and frame.index[0].year == 2023
    assert f"{len(ROWS)} rows" in out and "2023-01-01 00:00" in out and "no gaps" in out
    assert not list(tmp_path.glob(".*"))  # no resume cache or temp file left behind
    checked = [r for r in mirror.requests if r.endswith(".CHECKSUM")]
    assert len(checked) == 26  # every month verified


def test_ccxt_download_equals_the_archive_download(mirror, tmp_path, capsys):
    rc, out, err = run(ccxt_args(mirror, tmp_path), capsys)
    assert rc == 0, err
    assert (tmp_path / f"{SYM}_4h.csv").read_bytes() == expected_bytes(ROWS)
    pages = [r for r in mirror.requests if r.startswith("/api/v3/klines")]
    assert len(pages) >= 5 and all("limit=1000" in p for p in pages)  # our own since loop


def test_incremental_rerun_fetches_only_after_the_last_candle(mirror, tmp_path, capsys):
    assert run(archive_args(mirror, tmp_path)[:-2] + ["--end", "2024-11-30"], capsys)[0] == 0
    path = tmp_path / f"{SYM}_4h.csv"
    first = [r for r in ROWS if r[0] < ms(2024, 12)]
    assert path.read_bytes() == expected_bytes(first)
    mirror.requests.clear()
    rc, out, _ = run(archive_args(mirror, tmp_path), capsys)
    assert rc == 0
    zips = sorted(r.rsplit("-4h-", 1)[1] for r in mirror.requests if r.endswith(".zip"))
    assert zips == ["2024-11.zip", "2024-12.zip", "2025-01.zip", "2025-02.zip"]
    assert path.read_bytes() == expected_bytes(ROWS)  # no duplicate, order kept
    before = path.stat().st_mtime_ns
    rc, out, _ = run(archive_args(mirror, tmp_path), capsys)
    assert rc == 0 and "up to date, file unchanged" in out
    assert path.stat().st_mtime_ns == before


def test_rerun_replaces_an_unfinished_last_candle(mirror, tmp_path, capsys):
    path = tmp_path / f"{SYM}_4h.csv"
    head = ROWS[:100]
    partial = (*head[-1][:4], head[-1][1], 0.5)  # stored while still open: close = open
    path.write_bytes(expected_bytes(head[:-1] + [partial]))
    assert run(ccxt_args(mirror, tmp_path), capsys)[0] == 0
    assert path.read_bytes() == expected_bytes(ROWS)
    first = [r for r in mirror.requests if r.startswith("/api/v3/klines")][0]
    assert f"startTime={head[-1][0]}" in first  # the last stored candle is fetched again


def test_the_still_open_candle_is_never_written(tmp_path):
    now = ms(2025, 3, 10, 9)  # inside the 08:00 candle
    rows = make_rows(ms(2025, 1), ms(2025, 3, 10, 8))  # ... which the API reports as well
    faults = MirrorFaults(missing={f"{SYM}-4h-2025-02.zip"})  # not yet published
    with KlineMirror({SYM: {"4h": rows}}, faults, now_ms=now) as m:
        got = download_candles(DownloadRequest(SYM, source="ccxt", api_url=m.url,
                                               data_dir=str(tmp_path / "c"),
                                               start="2025-01-01"), now_ms=now)
        assert got.last_ms == ms(2025, 3, 10, 4)  # the last closed candle
        got = download_candles(DownloadRequest(SYM, base_url=m.url, data_dir=str(tmp_path / "a"),
                                               start="2025-01-01"), now_ms=now)
        # the archive: February's monthly file is missing while March is the current month,
        # so daily files are read for the days that are over
        days = [r for r in m.requests if "/daily/" in r and r.endswith(".zip")]
    assert got.last_ms == ms(2025, 3, 9, 20) and len(days) == 28 + 9 and not got.not_on_server
    assert load_ohlcv(tmp_path / "a" / f"{SYM}_4h.csv").index[-1].day == 9


@pytest.mark.parametrize("fault", ["bad_checksum", "truncated"])
def test_a_damaged_month_is_refused_and_nothing_written(mirror, tmp_path, capsys, fault):
    path = tmp_path / f"{SYM}_4h.csv"
    getattr(mirror.faults, fault).add(f"{SYM}-4h-2024-03.zip")
    rc, out, err = run(archive_args(mirror, tmp_path), capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{SYM}-4h-2024-03.zip" in err and "nothing was written" in err
    assert not path.exists()


def test_a_month_missing_on_the_server_is_a_reported_gap(mirror, tmp_path, capsys):
    mirror.faults.missing.add(f"{SYM}-4h-2024-05.zip")
    rc, out, err = run(archive_args(mirror, tmp_path), capsys)
    assert rc == 0, err
    frame = load_ohlcv(tmp_path / f"{SYM}_4h.csv")
    assert len(frame) == len(ROWS) - 31 * 6
    assert "1 gap, 186 missing candles" in out and "not on the server" in out and "2024-05" in out


def test_429_with_retry_after_waits_and_completes(mirror, tmp_path, caplog):
    mirror.faults.api_replies.append((429, {"Retry-After": "1"}))
    with caplog.at_level(logging.INFO, logger="bt_lstm.data.download"):
        got = download_candles(DownloadRequest(SYM, source="ccxt", api_url=mirror.url,
                                               data_dir=str(tmp_path), end=END))
    assert got.rows == len(ROWS)
    assert "retrying in 1.0 s" in caplog.text  # Retry-After, not the 0.5 s backoff
    assert (tmp_path / f"{SYM}_4h.csv").read_bytes() == expected_bytes(ROWS)


@pytest.mark.parametrize("source", ["ccxt", "archive"])
@pytest.mark.parametrize("status", [451, 418])
def test_451_and_418_are_one_clear_error(mirror, tmp_path, capsys, source, status):
    replies = mirror.faults.api_replies if source == "ccxt" else mirror.faults.archive_replies
    replies.extend([(status, {})] * 3)
    args = ccxt_args if source == "ccxt" else archive_args
    rc, out, err = run(args(mirror, tmp_path), capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"HTTP {status}" in err
    assert not (tmp_path / f"{SYM}_4h.csv").exists()


@pytest.mark.parametrize("argv, match", [
    (["--symbol", "NOPEUSDT"], "unknown symbol or timeframe"),
    (["--symbol", SYM, "--timeframe", "7h"], "not in Binance's archive"),
    (["--symbol", SYM, "--timeframe", "banana"], "not a bar length"),
    (["--symbol", "BTC USDT"], "not a market symbol"),
    (["--symbol", "NOPEUSDT", "--source", "ccxt"], "has no market"),
    (["--symbol", SYM, "--source", "ccxt", "--timeframe", "7h"], "has no timeframe"),
    (["--symbol", SYM, "--source", "ccxt", "--exchange", "nosuchexchange"], "not a ccxt"),
    (["--symbol", SYM, "--start", "yesterday"], "not a date"),
])
def test_unknown_symbol_or_timeframe_is_one_line_exit_2(mirror, tmp_path, capsys, argv, match):
    url = ["--api-url" if "ccxt" in argv else "--base-url", mirror.url]
    rc, out, err = run([*argv, *url, "--data-dir", str(tmp_path / "d"), "--end", END], capsys)
    assert rc == 2 and match in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def _spawn(argv) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(REPO / "runners" / "download.py"), *argv,
                             "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _wait_for(cond, proc, what: str) -> None:
    for _ in range(3000):
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"the download ended before {what}: {proc.communicate()[1].decode()}")
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    pytest.fail(f"never saw {what}")


@pytest.mark.parametrize("source", ["archive", "ccxt"])
def test_a_killed_download_resumes_to_the_same_bytes(mirror, tmp_path, capsys, source):
    data = tmp_path / "data"
    args = archive_args if source == "archive" else ccxt_args
    assert run(args(mirror, data)[:-2] + ["--end", "2023-02-28"], capsys)[0] == 0
    path = data / f"{SYM}_4h.csv"
    old = path.read_bytes()
    parts = data / f".{SYM}_4h.csv.{'binance-archive' if source == 'archive' else 'binance'}.parts"
    if source == "archive":
        mirror.faults.stall_files.add(f"{SYM}-4h-2025-01.zip")
        # 2023-02 (the stored last candle's month) to 2025-02: all but the stalled one
        ready = lambda: parts.is_dir() and len(list(parts.glob("*.csv"))) >= 24  # noqa: E731
    else:
        mirror.faults.stall_klines_from = 3  # load_markets + 3 pages, then the 4th hangs
        ready = lambda: parts.is_dir() and len(list(parts.glob("*.csv"))) >= 2  # noqa: E731
    mirror.requests.clear()
    proc = _spawn(args(mirror, data))
    _wait_for(ready, proc, "complete parts")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert path.read_bytes() == old  # the old file is whole
    mirror.faults.stall_files.clear()
    mirror.faults.stall_klines_from = None
    mirror.requests.clear()
    assert run(args(mirror, data), capsys)[0] == 0
    assert path.read_bytes() == expected_bytes(ROWS)  # as an uninterrupted download
    assert not parts.exists()
    if source == "archive":  # resumed: months kept from the killed run were not fetched again
        assert f"{SYM}-4h-2023-06.zip" not in " ".join(mirror.requests)


def test_is_stale(tmp_path):
    path = tmp_path / "X_4h.csv"
    assert is_stale(path, "4h")
    path.write_bytes(expected_bytes(ROWS[:10]))
    assert is_stale(path, "4h", now_ms=ms(2025, 1))
    assert not is_stale(path, "4h", now_ms=ROWS[9][0] + BAR)


def test_download_help_documents_every_flag():
    for action in runner.build_parser()._actions:
        assert action.help, action.option_strings
    text = subprocess.run([sys.executable, "runners/download.py", "--help"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    for flag in ("--symbol", "--timeframe", "--start", "--end", "--source", "--exchange",
                 "--base-url", "--api-url", "--data-dir"):
        assert flag in text


@pytest.mark.parametrize("header", ["Open Time", "open_time", "Date", "Datetime", "Timestamp",
                                    "time", "OPEN TIME", "open  time", "Open-Time"])
def test_loader_accepts_common_time_column_names(tmp_path, header):
    path = tmp_path / "c.csv"
    path.write_text(f"{header},Open,High,Low,Close,Volume\n"
                    "2024-01-01 00:00:00,1,2,0.5,1.5,10\n2024-01-01 04:00:00,1.5,2,1,1.8,12\n")
    frame = load_ohlcv(path)
    assert str(frame.index[0]) == "2024-01-01 00:00:00" and frame.index.tz is None  # naive=UTC
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]


def test_a_download_error_inside_a_job_is_one_line_exit_2(mirror, tmp_path, capsys):
    """The server refuses (HTTP 451) the download a backtest starts with --download: the
    DownloadError reaches the command's error handling as one line, exit 2, no traceback, and
    neither a data file nor a report is written."""
    from runners import backtest
    from tests.conftest import TINY_FLAGS

    mirror.faults.archive_replies.extend([(451, {})] * 3)
    argv = ["--symbol", SYM, "--download", "--base-url", mirror.url, "--data-dir",
            str(tmp_path / "data"), *TINY_FLAGS, "--no-tearsheet", "--quiet", "--models-dir",
            str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    rc = backtest.main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "HTTP 451" in err and err.startswith("error:"), err
    assert not (tmp_path / "data" / f"{SYM}_4h.csv").exists()
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").rglob("*.json"))


# -- the bundled snapshot and the jobs' --download ------------------------------------------

def test_the_snapshot_matches_its_json(tmp_path):
    from bt_lstm.data.snapshot import find_snapshot, load_snapshot

    snap = find_snapshot("BTCUSDT", "4h")
    assert snap is not None and snap.path.stat().st_size <= 1_000_000
    frame = load_snapshot(snap)
    assert len(frame) == snap.info["rows"] == 18158
    assert str(frame.index[0]) == "2017-08-17 04:00:00" and snap.info["first"] == "2017-08-17 04:00"
    assert str(frame.index[-1]) == "2025-12-02 00:00:00"
    assert "Binance" in snap.info["provenance"]
    from tests.conftest import real_data_dir

    shared = real_data_dir()
    if shared is not None:  # the very candles of ../shared/data
        assert frame.equals(load_ohlcv(shared / "BTCUSDT_4h.csv"))


def test_a_tampered_snapshot_is_refused(tmp_path, monkeypatch, capsys):
    from bt_lstm.data import snapshot
    from runners import backtest

    folder = tmp_path / "snap"
    shutil.copytree(snapshot.SNAPSHOT_DIR, folder)
    gz = folder / "BTCUSDT_4h.csv.gz"
    data = bytearray(gz.read_bytes())
    data[-20] ^= 0xFF
    gz.write_bytes(bytes(data))
    with pytest.raises(DataError, match="damaged or was altered"):
        snapshot.load_snapshot(snapshot.find_snapshot("BTCUSDT", "4h", folder))
    monkeypatch.setattr(snapshot, "SNAPSHOT_DIR", folder)
    rc = backtest.main(["--symbol", "BTCUSDT", "--data-dir", str(tmp_path / "none"), "--quiet",
                        "--models-dir", str(tmp_path / "m"), "--reports-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "damaged or was altered" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_missing_symbol_names_the_download_command(tmp_path, capsys):
    from runners import backtest

    rc = backtest.main(["--symbol", "SOLUSDT", "--data-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    command = f"python runners/download.py --symbol SOLUSDT --timeframe 4h --data-dir {tmp_path}"
    assert command in err


def test_backtest_download_fetches_a_missing_symbol(mirror, tmp_path, capsys):
    from runners import backtest
    from tests.conftest import TINY_FLAGS

    out = tmp_path / "out"
    argv = ["--symbol", SYM, "--download", "--base-url", mirror.url, "--data-dir",
            str(tmp_path / "data"), *TINY_FLAGS, "--no-tearsheet", "--models-dir",
            str(out / "models"), "--reports-dir", str(out / "reports")]
    assert backtest.main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "data" / f"{SYM}_4h.csv").read_bytes() == expected_bytes(ROWS)
    assert (out / "reports" / f"backtest_{SYM}_4h" / "latest" / "metrics.json").is_file()


def test_walk_forward_download_flag_and_its_errors(mirror, tmp_path, capsys):
    from runners import walk_forward

    rc = walk_forward.main(["--download", "--quiet", "--reports-dir", str(tmp_path)])
    assert rc == 2 and "--download needs --symbol" in capsys.readouterr().err
    rc = walk_forward.main(["--symbol", "NOPEUSDT", "--download", "--base-url", mirror.url,
                            "--data-dir", str(tmp_path / "d"), "--quiet", "--reports-dir",
                            str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown symbol" in err and err.count("\n") == 1


def test_a_file_in_another_layout_is_extended(mirror, tmp_path, capsys):
    """A stored Binance-style export (epoch ms, `Open Time` header) is continued after its last
    candle and rewritten in the canonical layout."""
    head = [r for r in ROWS if r[0] < ms(2024, 6)]
    lines = ["Open Time,Open,High,Low,Close,Volume"] + [",".join(map(str, r)) for r in head]
    path = tmp_path / f"{SYM}_4h.csv"
    path.write_text("\n".join(lines) + "\n")
    assert run(archive_args(mirror, tmp_path), capsys)[0] == 0
    assert path.read_bytes() == expected_bytes(ROWS)
    zips = [r for r in mirror.requests if r.endswith(".zip")]
    assert sorted(z.rsplit("-4h-", 1)[1] for z in zips)[0] == "2024-05.zip" and len(zips) == 10


def test_columns_all_keeps_the_flow_columns_and_the_flow_group_reads_them(mirror, tmp_path,
                                                                           capsys):
    from conftest import TINY_FLAGS

    from bt_lstm.config import FeatureConfig
    from bt_lstm.signals.groups import compute_groups
    from runners import backtest

    rc, out, err = run(archive_args(mirror, tmp_path, "--columns", "all"), capsys)
    assert rc == 0, err
    path = tmp_path / f"{SYM}_4h.csv"
    assert path.read_text().splitlines()[0] == ("timestamp,open,high,low,close,volume,"
                                               "quote_volume,trades,taker_buy_base,"
                                               "taker_buy_quote")
    frame = load_ohlcv(path)
    assert len(frame) == len(ROWS) and {"trades", "taker_buy_base"} <= set(frame.columns)
    k = frame.index.as_unit("ms").asi8 // BAR  # the mirror's trade counts and taker shares
    assert (frame["trades"].to_numpy() == 100 + k % 37).all()
    flow = compute_groups(frame, FeatureConfig(groups=("flow",)))
    np.testing.assert_allclose(flow["taker_buy_share"], 0.3 + 0.4 * (k % 11) / 10)
    assert flow["trades_z"].iloc[60:].notna().all() and flow["trades_z"].std() > 0.5
    # an incremental rerun keeps the layout; asking for OHLCV only on it is one clear line
    assert run(archive_args(mirror, tmp_path, "--columns", "all"), capsys)[0] == 0
    rc, out, err = run(archive_args(mirror, tmp_path), capsys)
    assert rc == 2 and "move it away" in err and len(err.strip().splitlines()) == 1
    rc = backtest.main(["--csv", str(path), *TINY_FLAGS, "--features", "price,flow",
                        "--models-dir", str(tmp_path / "m"), "--reports-dir",
                        str(tmp_path / "r"), "--no-tearsheet"])
    assert rc == 0, capsys.readouterr().err


def test_flow_on_a_download_without_columns_all_is_one_line(mirror, tmp_path, capsys):
    from runners import backtest

    assert run(archive_args(mirror, tmp_path), capsys)[0] == 0
    rc = backtest.main(["--csv", str(tmp_path / f"{SYM}_4h.csv"), "--features", "price,flow",
                        "--quiet", "--models-dir", str(tmp_path / "m"),
                        "--reports-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "--columns all" in err and len(err.strip().splitlines()) == 1
    rc, out, err = run(ccxt_args(mirror, tmp_path / "c", "--columns", "all"), capsys)
    assert rc == 2 and "--source binance-archive" in err
