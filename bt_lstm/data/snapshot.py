"""The bundled offline snapshot of BTCUSDT 4h candles: where it is, what it holds, and loading it
only after its sha256 matches the one recorded beside it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bt_lstm.data.candles import DataError, download_command, load_ohlcv
from bt_lstm.data.files import sha256_file

SNAPSHOT_DIR = Path(__file__).resolve().parent / "snapshots"


@dataclass(frozen=True)
class Snapshot:
    """A bundled candle file (gzip CSV) and its provenance (the JSON beside it)."""

    symbol: str
    timeframe: str
    path: Path
    info: dict

    def describe(self, data_dir: str | None = None) -> str:
        """One line: what it is, its range, and the command that replaces it with fresh data."""
        return (f"no {self.symbol}_{self.timeframe}.csv in the data folder: using the bundled "
                f"snapshot of {self.symbol} {self.timeframe} ({self.info['rows']:,} candles, "
                f"{self.info['first']} to {self.info['last']} UTC, {self.info['source_short']}); "
                f"update with: {download_command(self.symbol, self.timeframe, data_dir)}")


def find_snapshot(symbol: str, timeframe: str, folder: Path | None = None) -> Snapshot | None:
    """The bundled snapshot of ``symbol`` ``timeframe``, or None when the package has none."""
    folder = SNAPSHOT_DIR if folder is None else folder
    name = f"{symbol.upper()}_{timeframe}"
    meta = folder / f"{name}.json"
    data = folder / f"{name}.csv.gz"
    if not meta.is_file() or not data.is_file():
        return None
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta}: the snapshot's provenance file is unreadable ({exc}); "
                        f"reinstall the package") from None
    return Snapshot(symbol.upper(), timeframe, data, info)


def load_snapshot(snap: Snapshot) -> pd.DataFrame:
    """Check the file's sha256 against the provenance JSON, then load and check the candles.

    Raises
    ------
    DataError
        When the file was altered (sha256 differs) or its rows disagree with the JSON.
    """
    digest = sha256_file(snap.path)
    if digest != snap.info.get("sha256"):
        raise DataError(
            f"{snap.path}: the bundled snapshot is damaged or was altered (sha256 {digest[:12]}... "
            f"but {snap.path.with_suffix('').with_suffix('.json').name} records "
            f"{str(snap.info.get('sha256'))[:12]}...); reinstall the package, or download fresh "
            f"data with `{download_command(snap.symbol, snap.timeframe)}`")
    frame = load_ohlcv(snap.path)
    if len(frame) != snap.info.get("rows"):
        raise DataError(f"{snap.path}: {len(frame)} candles but the snapshot's JSON records "
                        f"{snap.info.get('rows')}; reinstall the package")
    return frame
