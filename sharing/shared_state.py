"""What several ``onesource serve`` instances on one lake share, kept in the lake catalog's PostgreSQL database.

With a ``postgres:`` catalog every instance behind a load balancer reads and writes the same rows, so they act
as one server:

* :class:`ChainStore`: the audit chain (``onesource_audit_chain``: one row per entry, ``seq`` its primary
  key), instead of the home's ``audit/audit.log``. The primary key on ``seq`` is what keeps the chain one:
  an entry is written as ``seq = last + 1`` with ``prev`` = the hash of the entry it read as the last, and a
  second writer of the same seq fails on the key and reads the tail again (:meth:`sharing.audit.AuditLog.append`);
* :class:`SessionStore`: the portal's sessions (``onesource_portal_sessions``, the token's SHA-256 only:
  whoever reads the table cannot sign in with it), with their expiry;
* :class:`SignInStore`: sign-in failures and lockouts (``onesource_signin_failures``, ``onesource_signin_locks``),
  counted with the database's clock, so instances on several machines agree on windows and expiries.

With a SQLite catalog (one machine, one server) none of this is used: the JSONL log and the process's memory
hold the same state. DuckLake ignores tables it does not own in its catalog database (as the audit anchor's).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import threading
from collections.abc import Iterator
from typing import Any

from core.errors import TerminalError

CHAIN_TABLE = "onesource_audit_chain"
SESSIONS_TABLE = "onesource_portal_sessions"
FAILURES_TABLE = "onesource_signin_failures"
LOCKS_TABLE = "onesource_signin_locks"
CHAIN_LOCK = 0x0A5D17C4A1
"""The advisory lock taken to adopt a home's JSONL log and to rotate the key (never on the per-query path)."""


class SharedStateError(TerminalError):
    """The shared store in the catalog database cannot be reached or holds something unexpected."""


def shared_catalog(catalog: str | None) -> str | None:
    """The PostgreSQL connection string of a ``postgres:`` catalog (None: state stays in this process's home)."""
    return catalog.removeprefix("postgres:") if catalog and catalog.startswith("postgres:") else None


class _Database:
    """One connection to the catalog database for one store, taken in turn by this process's threads, opened
    (with the store's tables) at first use and again after a failure."""

    def __init__(self, dsn: str, ddl: tuple[str, ...], *, synchronous: bool = True):
        self.dsn, self.ddl, self.synchronous = dsn, ddl, synchronous
        self._lock = threading.Lock()
        self._conn: Any = None

    def _connect(self):
        import psycopg

        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        if not self.synchronous:
            # the servers' group commit: a commit is visible to every instance at once (the chain cannot fork)
            # and reaches the disk within PostgreSQL's wal_writer_delay (0.2 s), as the JSONL log's fsync thread
            conn.execute("SET synchronous_commit = off")
        for statement in self.ddl:
            try:
                conn.execute(statement)
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                pass  # two processes creating it at once: the other one won
        return conn

    @contextlib.contextmanager
    def conn(self) -> Iterator[Any]:
        with self._lock:
            if self._conn is None:
                try:
                    self._conn = self._connect()
                except Exception as exc:
                    raise SharedStateError(f"cannot reach the catalog database for the servers' shared state: {exc}; "
                                           "check the catalog's connection (ONESOURCE_CATALOG)") from exc
            try:
                yield self._conn
            except Exception:
                if self._conn.closed or self._conn.broken:
                    self._conn = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None


class ChainStore:
    """The audit chain's entries, in order, each the exact JSON line the JSONL log would hold."""

    DDL = (f"CREATE TABLE IF NOT EXISTS {CHAIN_TABLE} (seq BIGINT PRIMARY KEY, prev TEXT NOT NULL, "
           "hash TEXT NOT NULL, entry TEXT NOT NULL)",)

    def __init__(self, dsn: str, *, synchronous: bool = True):
        self.dsn = dsn
        self.where = f"table {CHAIN_TABLE} of the catalog database"
        self._db = _Database(dsn, self.DDL, synchronous=synchronous)

    def last(self, conn: Any = None) -> str | None:
        """The last entry's line (None: the chain is empty)."""
        with self._use(conn) as c:
            row = c.execute(f"SELECT entry FROM {CHAIN_TABLE} ORDER BY seq DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def first_hash(self) -> str | None:
        with self._db.conn() as c:
            row = c.execute(f"SELECT hash FROM {CHAIN_TABLE} WHERE seq = 1").fetchone()
        return row[0] if row else None

    def insert(self, seq: int, prev: str, digest: str, line: str, conn: Any = None) -> bool:
        """Write entry ``seq``; False when another writer wrote that seq first (read the tail again)."""
        import psycopg

        with self._use(conn) as c:
            try:
                c.execute(f"INSERT INTO {CHAIN_TABLE} (seq, prev, hash, entry) VALUES (%s, %s, %s, %s)",
                          (seq, prev, digest, line))
            except psycopg.errors.UniqueViolation:
                return False
        return True

    def insert_many(self, rows: list[tuple[int, str, str, str]]) -> bool:
        """Write consecutive entries (seq, prev, hash, line) in one statement: all, or none when another writer
        wrote one of those seqs first."""
        import psycopg

        values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
        with self._db.conn() as c:
            try:
                c.execute(f"INSERT INTO {CHAIN_TABLE} (seq, prev, hash, entry) VALUES {values}",
                          [v for row in rows for v in row])
            except psycopg.errors.UniqueViolation:
                return False
        return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[Any]:
        """A transaction holding the chain's advisory lock (adopting a JSONL log, rotating the key)."""
        with self._db.conn() as c, c.transaction():
            c.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
            yield c

    @contextlib.contextmanager
    def _use(self, conn: Any) -> Iterator[Any]:
        if conn is not None:
            yield conn
        else:
            with self._db.conn() as c:
                yield c

    def count(self) -> int:
        with self._db.conn() as c:
            return int(c.execute(f"SELECT count(*) FROM {CHAIN_TABLE}").fetchone()[0])

    def lines(self, after: int = 0) -> list[str]:
        """The entries after seq ``after``, in order."""
        with self._db.conn() as c:
            return [r[0] for r in c.execute(f"SELECT entry FROM {CHAIN_TABLE} WHERE seq > %s ORDER BY seq",
                                            (after,))]

    def close(self) -> None:
        self._db.close()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Portal sessions: the token's hash, the user it signs in, its CSRF token, its expiry."""

    DDL = (f"CREATE TABLE IF NOT EXISTS {SESSIONS_TABLE} (token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL, "
           "department TEXT NOT NULL, role TEXT NOT NULL, since TEXT, csrf TEXT NOT NULL, "
           "expires_at TIMESTAMPTZ NOT NULL)",
           f"CREATE INDEX IF NOT EXISTS {SESSIONS_TABLE}_expiry ON {SESSIONS_TABLE} (expires_at)")

    def __init__(self, dsn: str):
        self._db = _Database(dsn, self.DDL)
        self._pruned = 0.0

    def put(self, token: str, user: Any, csrf: str, ttl: dt.timedelta) -> None:
        since = user.since.isoformat() if user.since is not None else None
        with self._db.conn() as c:
            c.execute(f"INSERT INTO {SESSIONS_TABLE} VALUES (%s, %s, %s, %s, %s, %s, now() + %s)",
                      (_token_hash(token), user.name, user.department, user.role, since, csrf, ttl))
            self._prune(c)

    def get(self, token: str) -> tuple[Any, dt.datetime, str] | None:
        """(user, expiry, CSRF token) of a live session; None: no such session, or it expired."""
        from sharing.users import User

        with self._db.conn() as c:
            row = c.execute(f"SELECT user_name, department, role, since, csrf, expires_at FROM {SESSIONS_TABLE} "
                            "WHERE token_hash = %s AND expires_at > now()", (_token_hash(token),)).fetchone()
        if row is None:
            return None
        since = dt.datetime.fromisoformat(row[3]) if row[3] is not None else None
        return User(row[0], row[1], row[2], since), row[5], row[4]

    def end(self, token: str) -> None:
        with self._db.conn() as c:
            c.execute(f"DELETE FROM {SESSIONS_TABLE} WHERE token_hash = %s", (_token_hash(token),))

    def _prune(self, c: Any) -> None:
        """Expired sessions are deleted at a sign-in, at most once a minute."""
        import time

        if time.monotonic() - self._pruned >= 60:
            self._pruned = time.monotonic()
            c.execute(f"DELETE FROM {SESSIONS_TABLE} WHERE expires_at <= now()")

    def close(self) -> None:
        self._db.close()


class SignInStore:
    """Failed sign-ins per user name and per address, and the lockouts they earned, with the database's clock.

    The same rules as :class:`sharing.signin.SignInGuard`'s memory: failures within the window count, a key
    reaching its limit is locked until ``until``, a lock served is forgotten with its key's failures, and a
    right password forgets the user name's failures."""

    DDL = (f"CREATE TABLE IF NOT EXISTS {FAILURES_TABLE} (kind TEXT NOT NULL, subject TEXT NOT NULL, "
           "user_name TEXT NOT NULL, address TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
           f"CREATE INDEX IF NOT EXISTS {FAILURES_TABLE}_key ON {FAILURES_TABLE} (kind, subject, at)",
           f"CREATE TABLE IF NOT EXISTS {LOCKS_TABLE} (kind TEXT NOT NULL, subject TEXT NOT NULL, "
           "until TIMESTAMPTZ NOT NULL, PRIMARY KEY (kind, subject))")

    def __init__(self, dsn: str):
        self._db = _Database(dsn, self.DDL)
        self._pruned = 0.0

    @contextlib.contextmanager
    def turn(self, user: str) -> Iterator[None]:
        """The user name's turn across every server: an advisory lock on a connection of its own, held while
        the password is checked and the outcome recorded (ended with the connection, also by a crash)."""
        import psycopg

        try:
            conn = psycopg.connect(self._db.dsn, autocommit=True, connect_timeout=10)
        except Exception as exc:
            raise SharedStateError(f"cannot reach the catalog database for sign-in throttling: {exc}") from exc
        try:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", ("onesource signin " + user,))
            yield
        finally:
            conn.close()

    def locked(self, keys: list[tuple[str, str]]) -> tuple[tuple[str, str], float] | None:
        """The first of ``keys`` locked now and the seconds left; locks served are dropped with their failures."""
        with self._db.conn() as c, c.transaction():
            served = c.execute(f"DELETE FROM {LOCKS_TABLE} WHERE (kind, subject) IN ((%s, %s), (%s, %s)) "
                               "AND until <= clock_timestamp() RETURNING kind, subject",
                               [v for k in keys for v in k]).fetchall()
            for kind, subject in served:
                c.execute(f"DELETE FROM {FAILURES_TABLE} WHERE kind = %s AND subject = %s", (kind, subject))
            rows = dict(((k, s), float(left)) for k, s, left in c.execute(
                f"SELECT kind, subject, extract(epoch FROM until - clock_timestamp()) FROM {LOCKS_TABLE} "
                "WHERE (kind, subject) IN ((%s, %s), (%s, %s))", [v for k in keys for v in k]))
        for key in keys:
            if key in rows:
                return key, rows[key]
        return None

    def failed(self, user: str, address: str, limits: dict[str, int], window: float,
               lockout: float) -> tuple[dict[str, int], bool]:
        """Record one failure for the user name and the address; their counts within the window, and whether
        a key reached its limit (and is locked for ``lockout`` seconds)."""
        keys = {"user": user, "address": address}
        self._prune(window)
        with self._db.conn() as c, c.transaction():
            c.execute(f"INSERT INTO {FAILURES_TABLE} (kind, subject, user_name, address) VALUES "
                      "('user', %s, %s, %s), ('address', %s, %s, %s)", (user, user, address, address, user, address))
            counts = {kind: int(c.execute(
                f"SELECT count(*) FROM {FAILURES_TABLE} WHERE kind = %s AND subject = %s "
                "AND at > clock_timestamp() - make_interval(secs => %s)", (kind, subject, window)).fetchone()[0])
                for kind, subject in keys.items()}
            over = [kind for kind, n in counts.items() if n >= limits[kind]]
            for kind in over:
                c.execute(f"INSERT INTO {LOCKS_TABLE} VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s)) "
                          "ON CONFLICT (kind, subject) DO UPDATE SET until = excluded.until",
                          (kind, keys[kind], lockout))
            # failures past the window go at the key's next failure (and all of them in prune)
            c.execute(f"DELETE FROM {FAILURES_TABLE} WHERE (kind, subject) IN (('user', %s), ('address', %s)) "
                      "AND at <= clock_timestamp() - make_interval(secs => %s)", (user, address, window))
        return counts, bool(over)

    def succeeded(self, user: str, address: str) -> None:
        with self._db.conn() as c, c.transaction():
            c.execute(f"DELETE FROM {FAILURES_TABLE} WHERE kind = 'user' AND subject = %s", (user,))
            c.execute(f"DELETE FROM {FAILURES_TABLE} WHERE kind = 'address' AND subject = %s AND user_name = %s",
                      (address, user))

    def _prune(self, window: float) -> None:
        """Every key's failures past the window and locks served are deleted, at most once a minute per server."""
        import time

        if time.monotonic() - self._pruned >= 60:
            self._pruned = time.monotonic()
            self.prune(window)

    def prune(self, window: float) -> None:
        with self._db.conn() as c:
            c.execute(f"DELETE FROM {FAILURES_TABLE} WHERE at <= clock_timestamp() - make_interval(secs => %s)",
                      (window,))
            c.execute(f"DELETE FROM {LOCKS_TABLE} WHERE until <= clock_timestamp()")

    def close(self) -> None:
        self._db.close()
