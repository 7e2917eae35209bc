"""Data faults: each is one clear error (or a flagged warning where the data is usable)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_FLAGS

from bt_lstm.backtest.engine import run_backtest
from bt_lstm.config import StrategyConfig
from bt_lstm.data.candles import DataError, fingerprint_frame, load_ohlcv, placeholder_mask
from bt_lstm.signals.windows import make_target
from runners import backtest as runner
from strategies.lstm_strategy import RegimeLSTMStrategy

HEADER = "timestamp,open,high,low,close,volume"


def csv(tmp_path, stamps, name="c.csv", rows=None):
    rows = rows or [(10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 5.0) for i in range(len(stamps))]
    text = HEADER + "\n" + "\n".join(f"{s},{','.join(map(str, r))}"
                                     for s, r in zip(stamps, rows)) + "\n"
    path = tmp_path / name
    path.write_text(text)
    return path


def test_mixed_utc_offsets_are_converted_and_flagged(tmp_path, caplog):
    # Europe/Berlin local time across the end of DST (2021-10-31): +02:00, then +01:00
    stamps = ["2021-10-31T01:00:00+02:00", "2021-10-31T02:00:00+02:00",
              "2021-10-31T02:00:00+01:00", "2021-10-31T03:00:00+01:00"]
    with caplog.at_level(logging.WARNING):
        frame = load_ohlcv(csv(tmp_path, stamps))
    assert list(frame.index) == list(pd.date_range("2021-10-30T23:00", periods=4, freq="1h"))
    assert "mix UTC offsets (+01:00, +02:00)" in caplog.text


def test_naive_and_offset_timestamps_mixed_are_an_error(tmp_path):
    with pytest.raises(DataError, match="some timestamps carry a UTC offset"):
        load_ohlcv(csv(tmp_path, ["2021-01-01T00:00:00", "2021-01-01T01:00:00+00:00"]))


def test_dst_repeated_local_hour_is_an_error_that_says_why(tmp_path):
    # naive local times: 02:00 happens twice when daylight saving ends
    stamps = ["2021-10-31T01:00:00", "2021-10-31T02:00:00", "2021-10-31T02:00:00",
              "2021-10-31T03:00:00"]
    with pytest.raises(DataError, match="daylight saving") as info:
        load_ohlcv(csv(tmp_path, stamps))
    assert "duplicate timestamp" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content, match", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\xff\xfe",
     "not a readable CSV"),
    (b'{"candles": [[1, 2, 3, 4, 5]]}', "missing column"),
    (b"", "empty"),
    (b"timestamp,open,high,low,close,volume\n", "header only"),
])
def test_files_that_are_not_candle_csvs(tmp_path, content, match):
    path = tmp_path / "candles.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        load_ohlcv(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("row, match", [
    ((1e300, 1e300, 1e300, 1e300, 5.0), "absurd value"),
    ((10.0, 11.0, 9.0, 10.5, 1e30), "absurd value"),
    ((10.0, 11.0, 9.0, 10.5, -1.0), "negative volume"),
    (("ten", 11.0, 9.0, 10.5, 5.0), "not a number"),
])
def test_absurd_and_textual_values_are_refused(tmp_path, row, match):
    rows = [(10.0, 11.0, 9.0, 10.5, 5.0), row, (10.0, 11.0, 9.0, 10.5, 5.0)]
    stamps = ["2021-01-01T00:00:00Z", "2021-01-01T04:00:00Z", "2021-01-01T08:00:00Z"]
    with pytest.raises(DataError, match=match):
        load_ohlcv(csv(tmp_path, stamps, rows=rows))


def test_same_candles_in_any_timezone_give_identical_results(market, tmp_path):
    frame = market.frame.iloc[:900]
    variants = {
        "naive": frame.index.strftime("%Y-%m-%dT%H:%M:%S"),
        "utc": frame.index.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kolkata": frame.index.tz_localize("UTC").tz_convert("Asia/Kolkata")
                   .strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    loaded = {}
    for name, stamps in variants.items():
        out = frame.copy()
        out.index = stamps
        path = tmp_path / f"{name}.csv"
        out.to_csv(path, index_label="timestamp")
        loaded[name] = load_ohlcv(path)
    for name in ("utc", "kolkata"):
        pd.testing.assert_frame_equal(loaded[name], loaded["naive"])
        assert fingerprint_frame(loaded[name]) == fingerprint_frame(loaded["naive"])
    metrics = []
    for name in ("naive", "kolkata"):
        rc = runner.main(["--csv", str(tmp_path / f"{name}.csv"), *TINY_FLAGS, "--no-tearsheet",
                          "--models-dir", str(tmp_path / f"m_{name}"),
                          "--reports-dir", str(tmp_path / f"r_{name}")])
        assert rc == 0
        report = tmp_path / f"r_{name}" / f"backtest_{name}_4h" / "latest" / "metrics.json"
        metrics.append(json.loads(report.read_text())["strategy"])
    assert metrics[0] == metrics[1]


def placeholder_frame():
    idx = pd.date_range("2021-01-01", periods=12, freq="4h")
    close = np.array([10, 10.5, 11, 11.5, 12, 12, 12.5, 13, 12.5, 12, 11.5, 11], dtype=float)
    frame = pd.DataFrame({"open": np.r_[10, close[:-1]], "close": close, "volume": 5.0},
                         index=idx)
    frame["high"] = frame[["open", "close"]].max(axis=1) + 0.1
    frame["low"] = frame[["open", "close"]].min(axis=1) - 0.1
    frame.iloc[5] = [12.0, 12.0, 0.0, 12.0, 12.0]  # open, close, volume, high, low: placeholder
    return frame[["open", "high", "low", "close", "volume"]]


def test_placeholder_candles_are_kept_flagged_and_never_a_target(tmp_path, caplog):
    frame = placeholder_frame()
    path = tmp_path / "p.csv"
    frame.to_csv(path, index_label="timestamp")
    with caplog.at_level(logging.WARNING):
        loaded = load_ohlcv(path)
    assert len(loaded) == 12 and "1 zero-volume placeholder" in caplog.text
    mask = placeholder_mask(loaded)
    assert mask.tolist() == [i == 5 for i in range(12)]
    target = make_target(loaded["close"], 1, mask)
    assert target.iloc[[4, 5]].isna().all()  # into and out of the placeholder
    assert target.drop(target.index[[4, 5, 11]]).notna().all()


def test_no_fill_at_a_placeholder_price():
    frame = placeholder_frame()
    forecast = np.full(len(frame), np.nan)
    forecast[4] = 0.01  # decided at the close of bar 4; bar 5 is a placeholder
    forecast[5:] = 0.01
    signals = pd.DataFrame({"forecast": forecast, "regime": 1.0}, index=frame.index)
    res = run_backtest(frame, RegimeLSTMStrategy, StrategyConfig(slippage=0.0),
                       signals=signals)
    assert len(res.fills) == 1
    fill = res.fills.iloc[0]
    assert fill["bar"] == 6 and fill["price"] == pytest.approx(frame["open"].iloc[6])
    assert res.info["deferred_fills"] == 1


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_text(HEADER + "\n2021-01-01T00:00:00,1,2,0.5,1,1\n"
                            "2021-01-01T04:00:00+00:00,1,2,0.5,1,1\n"), "UTC offset"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00"), "not a readable CSV"),
    (lambda p: p.write_text(HEADER + "\n2021-01-01T00:00:00Z,1e300,1e300,1e300,1e300,1\n"),
     "absurd"),
])
def test_runner_refuses_faulty_files_with_one_line_and_writes_nothing(tmp_path, capsys, make,
                                                                      match):
    path = tmp_path / "bad.csv"
    make(path)
    out = tmp_path / "out"
    rc = runner.main(["--csv", str(path), "--quiet", "--models-dir", str(out / "m"),
                      "--reports-dir", str(out / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and match in err
    assert not out.exists()
