"""SQLite state of a live run: candles, decisions, fills and the account, one transaction per
candle, so a killed process restarts from its last committed candle (none decided twice,
none skipped).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS candles (open_ms INTEGER PRIMARY KEY, open REAL, high REAL,
    low REAL, close REAL, volume REAL);
CREATE TABLE IF NOT EXISTS decisions (symbol TEXT, timeframe TEXT, open_ms INTEGER, bar INTEGER,
    regime INTEGER, forecast REAL, signal INTEGER, position REAL, value REAL, model TEXT,
    PRIMARY KEY (symbol, timeframe, open_ms));
CREATE TABLE IF NOT EXISTS fills (symbol TEXT, timeframe TEXT, open_ms INTEGER, bar INTEGER,
    size REAL, price REAL, commission REAL, PRIMARY KEY (symbol, timeframe, open_ms));
CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY CHECK (id = 1), cash REAL,
    position REAL, pending REAL, last_ms INTEGER, first_ms INTEGER, bars INTEGER,
    rounded_to_zero INTEGER, rejected INTEGER);
CREATE TABLE IF NOT EXISTS gaps (from_ms INTEGER, to_ms INTEGER, reported_at TEXT);
"""
ACCOUNT_FIELDS = ("cash", "position", "pending", "last_ms", "first_ms", "bars", "rounded_to_zero",
                  "rejected")


class LiveState:
    """The state folder's ``state.sqlite``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "state.sqlite"
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def account(self) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {', '.join(ACCOUNT_FIELDS)} FROM account").fetchone()
        return dict(zip(ACCOUNT_FIELDS, row)) if row else None

    def recent_candles(self, n: int) -> list[tuple]:
        rows = self.conn.execute("SELECT * FROM candles ORDER BY open_ms DESC LIMIT ?",
                                 (n,)).fetchall()
        return [(int(r[0]), *map(float, r[1:])) for r in reversed(rows)]

    def commit_candle(self, candle: tuple, account: dict[str, Any], decision: tuple | None,
                      fill: tuple | None, prune_before: int | None) -> None:
        """Everything one candle changes, in one transaction."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("INSERT OR REPLACE INTO candles VALUES (?, ?, ?, ?, ?, ?)", candle)
            if fill is not None:
                c.execute("INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?)", fill)
            if decision is not None:
                c.execute("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          decision)  # the primary key refuses a second decision of a candle
            c.execute(f"INSERT OR REPLACE INTO account (id, {', '.join(ACCOUNT_FIELDS)}) VALUES "
                      f"(1, {', '.join('?' * len(ACCOUNT_FIELDS))})",
                      [account[k] for k in ACCOUNT_FIELDS])
            if prune_before is not None:
                c.execute("DELETE FROM candles WHERE open_ms < ?", (prune_before,))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def add_history(self, candles: list[tuple]) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR IGNORE INTO candles VALUES (?, ?, ?, ?, ?, ?)",
                                  candles)

    def record_gap(self, from_ms: int, to_ms: int, when: str) -> None:
        self.conn.execute("INSERT INTO gaps VALUES (?, ?, ?)", (from_ms, to_ms, when))

    def gaps(self) -> list[tuple]:
        return self.conn.execute("SELECT from_ms, to_ms FROM gaps").fetchall()

    def decisions(self) -> list[tuple]:
        return self.conn.execute("SELECT open_ms, bar, regime, forecast, signal, position, value, "
                                 "model FROM decisions ORDER BY open_ms").fetchall()

    def fills(self) -> list[tuple]:
        return self.conn.execute("SELECT open_ms, bar, size, price, commission FROM fills "
                                 "ORDER BY open_ms").fetchall()
