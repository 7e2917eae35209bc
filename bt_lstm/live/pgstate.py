"""PostgreSQL state of live runs, shared by several decide processes (``--state
postgresql://...``): the schema and statements of ``state.py``; the market's account row is
locked (``SELECT ... FOR UPDATE``) for the whole transaction of a candle, so one market's
candles are decided one at a time, in candle order, whichever process holds them.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

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


class PgBatch:
    """One transaction around a batch of candles of several markets (the decide role's): while
    it is open the markets' states on its connection skip their own BEGIN, COMMIT and ROLLBACK,
    so a burst of N markets is one commit (one WAL flush) instead of N, all or nothing. The
    soak found the decide role waiting on PostgreSQL most of its time: a commit, and six
    statements each waited for, per candle."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.open = False

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN; COMMIT at the end (returned only once the server has committed), ROLLBACK on
        any error (then raised). In psycopg's pipeline mode: the writes of a candle go without
        waiting for each answer; a read (the account row under its lock) waits for all before
        it, so one round trip per candle instead of six."""
        try:
            with self.conn.pipeline():
                self.conn.execute("BEGIN")
                self.open = True
                yield
                self.open = False
                self.conn.execute("COMMIT")
        except BaseException:
            self.open = False
            if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")
            raise


class PgState(SqlState):
    """One market's view of a PostgreSQL state (several views may share one connection, and
    one ``PgBatch``)."""

    placeholder = "%s"
    lock_suffix = " FOR UPDATE"

    def __init__(self, conn: Any, symbol: str, timeframe: str,
                 batch: PgBatch | None = None) -> None:
        super().__init__(conn, symbol, timeframe)
        self.folder = None
        self.batch = batch

    def _in_batch(self) -> bool:
        return self.batch is not None and self.batch.open

    def begin(self) -> None:
        """Start the candle's transaction (the account row is then locked ``FOR UPDATE``);
        inside a batch's transaction, nothing."""
        if not self._in_batch():
            self.conn.execute("BEGIN")

    def commit(self) -> None:
        """Commit the candle's transaction; inside a batch, the batch commits at its end."""
        if not self._in_batch():
            self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """Roll the candle's transaction back; inside a batch nothing (a skipped candle wrote
        nothing; an error reaches the batch, which rolls everything back)."""
        if not self._in_batch():
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        """Nothing to close: the connection belongs to whoever opened it (markets share it)."""
        pass  # the connection belongs to whoever opened it (several markets share it)
