"""PostgreSQL state of live runs, shared by several decide processes (``--state
postgresql://...``): the schema and statements of ``state.py``; the market's account row is
locked (``SELECT ... FOR UPDATE``) for the whole transaction of a candle, so one market's
candles are decided one at a time, in candle order, whichever process holds them.
"""
from __future__ import annotations

from typing import Any

import psycopg

from bt_lstm.live.state import SCHEMA, SqlState

_SCHEMA_LOCK = 0x62746C73  # advisory lock id: concurrent CREATE TABLE IF NOT EXISTS may collide


def connect_pg(url: str) -> Any:
    """A connection (autocommit: transactions are explicit BEGIN/COMMIT) with the schema
    created; several processes may start at once."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
    try:
        for stmt in SCHEMA:
            conn.execute(stmt)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))
    return conn


def pg_markets(conn: Any) -> list[tuple[str, str]]:
    """(symbol, timeframe) of every market with an account in the state."""
    return [tuple(r) for r in conn.execute(
        "SELECT symbol, timeframe FROM account ORDER BY symbol, timeframe").fetchall()]


class PgState(SqlState):
    """One market's view of a PostgreSQL state (several views may share one connection)."""

    placeholder = "%s"
    lock_suffix = " FOR UPDATE"

    def __init__(self, conn: Any, symbol: str, timeframe: str) -> None:
        super().__init__(conn, symbol, timeframe)
        self.folder = None

    def begin(self) -> None:
        """Start the candle's transaction (the account row is then locked ``FOR UPDATE``)."""
        self.conn.execute("BEGIN")

    def close(self) -> None:
        """Nothing to close: the connection belongs to whoever opened it (markets share it)."""
        pass  # the connection belongs to whoever opened it (several markets share it)
