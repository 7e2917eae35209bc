"""State of live runs: candles, decisions, fills and the account of each market (symbol,
timeframe), one transaction per candle, so a killed process restarts from its last committed
candle (none decided twice, none skipped).

One schema and one set of statements for both databases: SQLite (``LiveState``, a state
folder, one process) and PostgreSQL (``PgState`` in ``pgstate.py``, shared by several decide
processes). BIGINT and DOUBLE PRECISION are what PostgreSQL needs (INTEGER and REAL are 32-bit
there); SQLite reads them as INTEGER and REAL.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from bt_lstm.trading.values import Candle, Decision, Fill

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS candles (symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    open_ms BIGINT NOT NULL, open DOUBLE PRECISION, high DOUBLE PRECISION,
    low DOUBLE PRECISION, close DOUBLE PRECISION, volume DOUBLE PRECISION,
    PRIMARY KEY (symbol, timeframe, open_ms))""",
    """CREATE TABLE IF NOT EXISTS decisions (symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    open_ms BIGINT NOT NULL, bar BIGINT, regime INTEGER, forecast DOUBLE PRECISION,
    signal INTEGER, position DOUBLE PRECISION, value DOUBLE PRECISION, model TEXT,
    PRIMARY KEY (symbol, timeframe, open_ms))""",
    """CREATE TABLE IF NOT EXISTS fills (symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    open_ms BIGINT NOT NULL, bar BIGINT, size DOUBLE PRECISION, price DOUBLE PRECISION,
    commission DOUBLE PRECISION, PRIMARY KEY (symbol, timeframe, open_ms))""",
    """CREATE TABLE IF NOT EXISTS account (symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    cash DOUBLE PRECISION, position DOUBLE PRECISION, pending DOUBLE PRECISION,
    last_ms BIGINT, first_ms BIGINT, bars BIGINT, rounded_to_zero BIGINT, rejected BIGINT,
    PRIMARY KEY (symbol, timeframe))""",
    """CREATE TABLE IF NOT EXISTS gaps (symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    from_ms BIGINT, to_ms BIGINT, reported_at TEXT)""",
)
# the kernel's Account (trading.account.STORED) and the engine's last_ms, first_ms, bars
ACCOUNT_FIELDS = ("cash", "position", "pending", "last_ms", "first_ms", "bars", "rounded_to_zero",
                  "rejected")
_COLS = ", ".join(ACCOUNT_FIELDS)
_MARKET = "symbol = ? AND timeframe = ?"
SQL = {
    "account": f"SELECT {_COLS} FROM account WHERE {_MARKET}",
    "fresh": f"INSERT INTO account (symbol, timeframe, {_COLS}) VALUES (?, ?, "
             f"{', '.join('?' * len(ACCOUNT_FIELDS))}) ON CONFLICT (symbol, timeframe) DO NOTHING",
    "upsert": f"INSERT INTO account (symbol, timeframe, {_COLS}) VALUES (?, ?, "
              f"{', '.join('?' * len(ACCOUNT_FIELDS))}) ON CONFLICT (symbol, timeframe) DO UPDATE "
              f"SET " + ", ".join(f"{k} = excluded.{k}" for k in ACCOUNT_FIELDS),
    "candle": "INSERT INTO candles VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    "fill": "INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?)",
    # the primary key refuses a second decision of a candle
    "decision": "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "prune": f"DELETE FROM candles WHERE {_MARKET} AND open_ms < ?",
    "recent": f"SELECT open_ms, open, high, low, close, volume FROM candles WHERE {_MARKET} "
              f"ORDER BY open_ms DESC LIMIT ?",
    "gap": "INSERT INTO gaps VALUES (?, ?, ?, ?, ?)",
    "gaps": f"SELECT from_ms, to_ms FROM gaps WHERE {_MARKET}",
    "decisions": f"SELECT open_ms, bar, regime, forecast, signal, position, value, model "
                 f"FROM decisions WHERE {_MARKET} ORDER BY open_ms",
    "fills": f"SELECT open_ms, bar, size, price, commission FROM fills WHERE {_MARKET} "
             f"ORDER BY open_ms",
}


class SqlState:
    """What both databases share; subclasses open the connection and the transaction."""

    placeholder = "?"
    lock_suffix = ""  # PostgreSQL: " FOR UPDATE"

    def __init__(self, conn: Any, symbol: str, timeframe: str) -> None:
        self.conn, self.symbol, self.timeframe = conn, symbol, timeframe
        self.market = (symbol, timeframe)

    def _x(self, name: str, params: tuple = ()) -> Any:
        sql = SQL[name] if self.placeholder == "?" else SQL[name].replace("?", self.placeholder)
        return self.conn.execute(sql, params)

    def begin(self) -> None:
        """Start the candle's transaction (each database its own way)."""
        raise NotImplementedError

    def commit(self) -> None:
        """Commit the candle's transaction."""
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """Roll the candle's transaction back (nothing of it is kept)."""
        self.conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def account(self) -> dict[str, Any] | None:
        """The market's account row as a dict, or None before its first candle."""
        row = self._x("account", self.market).fetchone()
        return dict(zip(ACCOUNT_FIELDS, row)) if row else None

    def lock_account(self, fresh: dict[str, Any]) -> dict[str, Any]:
        """Begin a transaction holding the market's account row (created from ``fresh`` if
        missing): other processes deciding this market wait until ``commit``/``rollback``."""
        self.begin()
        try:
            self._x("fresh", (*self.market, *(fresh[k] for k in ACCOUNT_FIELDS)))
            sql = SQL["account"] + self.lock_suffix
            if self.placeholder != "?":
                sql = sql.replace("?", self.placeholder)
            row = self.conn.execute(sql, self.market).fetchone()
        except BaseException:
            self.rollback()
            raise
        return dict(zip(ACCOUNT_FIELDS, row))

    def write_candle(self, candle: Candle, account: dict[str, Any], decision: Decision | None,
                     fill: Fill | None, prune_before: int | None) -> None:
        """Everything one candle changes (inside the open transaction); a fill comes with the
        decision of its candle."""
        self._x("candle", (*self.market, *candle))
        if fill is not None:
            self._x("fill", (*self.market, fill.open_ms, decision.bar, fill.size, fill.price,
                             fill.commission))
        if decision is not None:
            self._x("decision", decision)
        self._x("upsert", (*self.market, *(account[k] for k in ACCOUNT_FIELDS)))
        if prune_before is not None:
            self._x("prune", (*self.market, prune_before))

    def commit_candle(self, candle: Candle, account: dict[str, Any], decision: Decision | None,
                      fill: Fill | None, prune_before: int | None) -> None:
        """Everything one candle changes, in one transaction."""
        self.begin()
        try:
            self.write_candle(candle, account, decision, fill, prune_before)
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def recent_candles(self, n: int) -> list[Candle]:
        """The last ``n`` stored candles, oldest first (the engine's rolling history on restart)."""
        rows = self._x("recent", (*self.market, n)).fetchall()
        return [Candle(int(r[0]), *map(float, r[1:])) for r in reversed(rows)]

    def add_history(self, candles: list[Candle]) -> None:
        """Store warm-up candles (never decided) in one transaction."""
        self.begin()
        for c in candles:
            self._x("candle", (*self.market, *c))
        self.commit()

    def record_gap(self, from_ms: int, to_ms: int, when: str) -> None:
        """Store a gap the exchange could not fill."""
        self.begin()
        self._x("gap", (*self.market, from_ms, to_ms, when))
        self.commit()

    def gaps(self) -> list[tuple]:
        """Every recorded gap: from, to, when reported."""
        return [tuple(r) for r in self._x("gaps", self.market).fetchall()]

    def decisions(self) -> list[tuple]:
        """Every decision, in candle order (the rows of ``decisions.csv``)."""
        return [tuple(r) for r in self._x("decisions", self.market).fetchall()]

    def fills(self) -> list[tuple]:
        """Every paper fill, in order (the rows of ``fills.csv``)."""
        return [tuple(r) for r in self._x("fills", self.market).fetchall()]


class LiveState(SqlState):
    """A state folder's ``state.sqlite`` (WAL; one writing process)."""

    def __init__(self, folder: Path, symbol: str = "", timeframe: str = "") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "state.sqlite"
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        super().__init__(conn, symbol, timeframe)
        self._migrate()
        for stmt in SCHEMA:
            conn.execute(stmt)

    def begin(self) -> None:
        """Start the transaction with ``BEGIN IMMEDIATE``: the write lock is taken at once."""
        self.conn.execute("BEGIN IMMEDIATE")

    def _migrate(self) -> None:
        """A state folder of the first live release (one market, account row id 1, candles
        keyed by open time): its rows move to the market-keyed tables of this schema."""
        c = self.conn
        cols = [r[1] for r in c.execute("PRAGMA table_info(account)")]
        if "id" not in cols:
            return
        c.execute("BEGIN IMMEDIATE")
        try:
            for t in ("account", "candles", "gaps"):
                c.execute(f"ALTER TABLE {t} RENAME TO {t}_v1")
            for stmt in SCHEMA:
                c.execute(stmt)
            c.execute(f"INSERT INTO account SELECT ?, ?, {_COLS} FROM account_v1", self.market)
            c.execute("INSERT INTO candles SELECT ?, ?, * FROM candles_v1", self.market)
            c.execute("INSERT INTO gaps SELECT ?, ?, * FROM gaps_v1", self.market)
            for t in ("account", "candles", "gaps"):
                c.execute(f"DROP TABLE {t}_v1")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
