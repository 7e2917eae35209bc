from __future__ import annotations

import pandas as pd
import pytest

from bt_lstm.data.candles import (
    DataError,
    find_gaps,
    fingerprint_frame,
    load_ohlcv,
    resolve_data_path,
)

ROWS = [  # open time, o, h, l, c, v
    ("2021-01-01T00:00:00Z", 10.0, 11.0, 9.0, 10.5, 5.0),
    ("2021-01-01T04:00:00Z", 10.5, 12.0, 10.0, 11.0, 6.0),
    ("2021-01-01T08:00:00Z", 11.0, 11.5, 10.5, 11.2, 7.0),
]


def write(tmp_path, text, name="c.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def generic(rows=ROWS, header="timestamp,open,high,low,close,volume"):
    return header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n"


def test_generic_iso(tmp_path):
    frame = load_ohlcv(write(tmp_path, generic()))
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert frame.index.tz is None and frame.index[0] == pd.Timestamp("2021-01-01 00:00")
    assert frame["close"].tolist() == [10.5, 11.0, 11.2]


@pytest.mark.parametrize("scale", [1, 1000])
def test_generic_epoch_seconds_and_ms_and_any_case(tmp_path, scale):
    rows = [(int(pd.Timestamp(r[0]).timestamp()) * scale,) + r[1:] for r in ROWS]
    frame = load_ohlcv(write(tmp_path, generic(rows, "Timestamp,Open,HIGH,low,Close,Volume")))
    assert frame.index[1] == pd.Timestamp("2021-01-01 04:00")


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("unit", [1000, 1_000_000])
def test_binance_klines(tmp_path, header, unit):
    lines = []
    if header:
        lines.append("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                     "taker_buy_volume,taker_buy_quote_volume,ignore")
    for r in ROWS:
        t = int(pd.Timestamp(r[0]).timestamp()) * unit
        lines.append(",".join(map(str, [t, *r[1:], t + 4 * 3600 * unit - 1, 1.0, 3, 1.0, 1.0, 0])))
    frame = load_ohlcv(write(tmp_path, "\n".join(lines) + "\n"))
    assert frame.index[2] == pd.Timestamp("2021-01-01 08:00")
    assert frame["volume"].tolist() == [5.0, 6.0, 7.0]


def replace_row(i, **kw):
    rows = [list(r) for r in ROWS]
    names = ["timestamp", "open", "high", "low", "close", "volume"]
    for k, v in kw.items():
        rows[i][names.index(k)] = v
    return rows


BAD = {
    "missing column": ("timestamp,open,high,low,volume\n2021-01-01,1,2,0.5,3\n",
                       "missing column"),
    "nan": (generic(replace_row(1, close="nan")), "NaN"),
    "inf": (generic(replace_row(1, high="inf")), "NaN or infinite"),
    "non-positive": (generic(replace_row(0, low=0.0)), "non-positive"),
    "high<low": (generic(replace_row(1, high=9.0)), "high < low"),
    "close outside": (generic(replace_row(2, close=20.0)), "outside"),
    "duplicate": (generic(replace_row(2, timestamp=ROWS[1][0])), "duplicate"),
    "unsorted": (generic([ROWS[1], ROWS[0], ROWS[2]]), "earlier"),
    "text": (generic(replace_row(1, open="abc")), "not a number"),
    "empty": ("", "empty"),
    "header only": ("timestamp,open,high,low,close,volume\n", "header only"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_clear_error(tmp_path, case):
    text, match = BAD[case]
    with pytest.raises(DataError, match=match) as info:
        load_ohlcv(write(tmp_path, text))
    assert "\n" not in str(info.value)
    assert str(tmp_path) in str(info.value)  # says where


def test_missing_symbol_file_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as info:
        resolve_data_path("BTCUSDT", "4h", tmp_path)
    msg = str(info.value)
    assert "BTCUSDT_4h.csv" in msg and "--csv" in msg


def test_gaps_are_counted():
    idx = pd.DatetimeIndex(pd.date_range("2021", periods=10, freq="4h").delete([3, 4, 7]))
    gaps = find_gaps(idx)
    assert (gaps.n_gaps, gaps.n_missing, gaps.largest_missing) == (2, 3, 2)
    assert gaps.largest_at == pd.Timestamp("2021-01-01 08:00")


def test_loading_does_not_change_values_and_fingerprint_is_stable(tmp_path):
    p = write(tmp_path, generic())
    a, b = load_ohlcv(p), load_ohlcv(p)
    assert fingerprint_frame(a) == fingerprint_frame(b)
    b.iloc[0, 0] = 10.01
    assert fingerprint_frame(a) != fingerprint_frame(b)


def test_regime_column_is_kept(tmp_path):
    text = ("timestamp,open,high,low,close,volume,regime\n"
            + "\n".join(",".join(map(str, r + (lab,))) for r, lab
                        in zip(ROWS, ["bearish", "1", "bullish"])) + "\n")
    frame = load_ohlcv(write(tmp_path, text))
    assert frame["regime"].tolist() == [0, 1, 2]
