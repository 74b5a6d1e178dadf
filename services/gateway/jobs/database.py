"""One small SQL layer over SQLite and PostgreSQL: connections, transactions, placeholders.

Statements are written once with `?` placeholders; the PostgreSQL side rewrites them to `%s`.
Booleans are stored as integers and times as epoch seconds (DOUBLE PRECISION / REAL) so the same
statements and row shapes work on both engines.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_MAX_IDLE = 8


class DatabaseError(RuntimeError):
    """The database URL is unusable or the engine refused to start."""


class Transaction:
    """A cursor inside one open transaction; rows come back as dicts."""

    def __init__(self, cursor: Any, dialect: str) -> None:
        self._cursor = cursor
        self._dialect = dialect

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self._dialect == "postgresql" else text

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a statement that returns rows (SELECT or ... RETURNING)."""
        self._cursor.execute(self._sql(sql), tuple(params))
        if self._cursor.description is None:
            return []
        names = [col[0] for col in self._cursor.description]
        return [dict(zip(names, row)) for row in self._cursor.fetchall()]

    def columns(self, table: str) -> list[str]:
        """Column names of `table` (a trusted identifier)."""
        self._cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")
        names = [col[0] for col in self._cursor.description]
        self._cursor.fetchall()
        return names

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement and return the number of rows it changed."""
        self._cursor.execute(self._sql(sql), tuple(params))
        return self._cursor.rowcount


class Database:
    """A pool of connections to `sqlite:///PATH` or `postgresql://...`."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self._path = url[len("sqlite:///") :]
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self._url = url
        else:
            raise DatabaseError(f"unsupported DATABASE_URL scheme in {url.split(':', 1)[0]!r}")
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self.transactions = 0  # opened by this process (a metric; approximate under threads)

    @property
    def integrity_errors(self) -> tuple[type[BaseException], ...]:
        """Exception types raised on a UNIQUE violation."""
        if self.dialect == "sqlite":
            return (sqlite3.IntegrityError,)
        import psycopg

        return (psycopg.errors.IntegrityError,)

    def _connect(self) -> Any:
        if self.dialect == "sqlite":
            conn = sqlite3.connect(
                self._path, timeout=30.0, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        import psycopg

        try:
            return psycopg.connect(self._url, autocommit=False, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc

    def _acquire(self) -> Any:
        with self._lock:
            if self._closed:
                raise DatabaseError("database is closed")
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, conn: Any, healthy: bool) -> None:
        with self._lock:
            if healthy and not self._closed and len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Transaction]:
        """Open a transaction; commit when the block ends, roll back if it raises.

        SQLite write transactions start with BEGIN IMMEDIATE, so the write lock is taken up
        front and read-then-write sequences cannot interleave between connections; read-only
        ones (`write=False`) use a deferred BEGIN and never wait for writers under WAL.
        """
        conn = self._acquire()
        self.transactions += 1
        healthy = True
        try:
            cursor = conn.cursor()
            if self.dialect == "sqlite":
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield Transaction(cursor, self.dialect)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        except Exception as exc:
            healthy = self._still_usable(conn, exc)
            raise
        finally:
            self._release(conn, healthy)

    def _still_usable(self, conn: Any, exc: Exception) -> bool:
        if self.dialect == "sqlite":
            return True
        import psycopg

        return not isinstance(exc, psycopg.OperationalError) and not conn.closed

    def listen_connection(self) -> Any:
        """PostgreSQL: a new autocommit connection of its own, for LISTEN (not pooled)."""
        if self.dialect != "postgresql":
            raise DatabaseError("LISTEN needs PostgreSQL")
        import psycopg

        try:
            return psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc

    def ping(self) -> bool:
        """True when a trivial query succeeds."""
        try:
            with self.transaction(write=False) as tx:
                tx.query("SELECT 1 AS ok")
            return True
        except Exception:
            logger.warning("database ping failed", exc_info=True)
            return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
