"""The audit log: every query, allowed or refused, appended to a keyed hash chain.

One JSON object per line in ``$ONESOURCE_HOME/audit/audit.log``. Each entry carries ``seq``, the
``prev`` entry's hash and its own ``hash`` = HMAC-SHA256 of its canonical JSON (without ``hash``),
keyed with a secret kept outside the home (:attr:`Settings.audit_key_file`). So:

* editing an entry breaks its HMAC, and whoever edits cannot recompute it (nor any later one) without
  the key; deleting or reordering entries breaks ``seq`` or ``prev``;
* the chain head is anchored in a second place, the lake's catalog database (:class:`Anchor`): a row
  per log with the last seq and hash made durable, advanced after every fsync of the log (every
  append from the CLI, every group-commit flush on the servers). A truncated tail, a deleted log or a
  log replaced by another is caught against it, and so is a key that went missing;
* the key can be rotated (:meth:`AuditLog.rotate_key`, ``onesource security rotate-keys``): the old key
  signs an entry naming the new key's fingerprint (``next_key``), every later entry is signed with the new
  key, and each key ever used is kept in a keyring next to the key file (``<key file>.keyring``), so
  :func:`verify` follows the chain across rotations; a process still holding an old key sees the rotation
  (the log's tail, the key file replaced) before its next append;
* the log itself is the source of truth for the last seq and hash: an append reads the file's tail
  under the lock (``audit.lock``), so a process killed at any point never leaves a duplicate seq. A
  killed process may leave a torn last line (a partial write, without its newline): it is not an
  entry, the next append cuts it off, and :func:`verify` notes it without failing (a line in the
  middle that is not an entry is a failure).

:func:`verify` names the first bad entry, or the problem (missing key, truncated, deleted).
Appends from several processes (and threads) are serialised with an exclusive file lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import default_audit_key_file
from core.errors import TerminalError
from lakehouse import ledger
from sharing.shared_state import ChainStore, shared_catalog

if TYPE_CHECKING:
    from core.config import Settings

GENESIS = "0" * 64
ANCHOR_TABLE = "onesource_audit_anchor"
log = logging.getLogger(__name__)


class AuditError(TerminalError):
    """The audit log cannot be appended to (a missing key, a corrupt last line): the query is not let
    through unrecorded."""


def _canonical(entry: dict[str, Any]) -> bytes:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, ensure_ascii=False, default=str).encode()


def _mac(key: bytes, entry: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(entry), hashlib.sha256).hexdigest()


def _log_id(key: bytes) -> str:
    """The log's name in the anchor: derived from its key (each log has its own key)."""
    return hmac.new(key, b"onesource audit anchor", hashlib.sha256).hexdigest()[:32]


def _row_mac(key: bytes, log_id: str, first_hash: str, seq: int, digest: str) -> str:
    """An anchor row's own HMAC: whoever can write the anchor but lacks the key cannot move it."""
    return hmac.new(key, f"{log_id}\n{first_hash}\n{seq}\n{digest}".encode(), hashlib.sha256).hexdigest()


def read_key(path: Path) -> bytes | None:
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise AuditError(f"the audit key {path} is not a key (64 hex characters expected)")
    return key


def _create_key(path: Path) -> bytes:
    """A new random key, 0600 in a 0700 folder. Called under the log's lock, and only for a log that
    holds no entry yet."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process sharing the key (same home, another log lock) was first
        return read_key(path)  # type: ignore[return-value]
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


ROTATION = "rotate-audit-key"
"""The ``action`` of the entry that hands the chain over to a new key (its ``next_key``)."""


def fingerprint(key: bytes) -> str:
    """A key's public name (the rotation entry names the next key by it): not the key, nor its anchor id."""
    return hashlib.sha256(b"onesource audit key\n" + key).hexdigest()[:16]


def keyring_file(key_file: Path) -> Path:
    """Where the keys a log was ever signed with are kept: next to the key file, as private as it."""
    key_file = Path(key_file)
    return key_file.with_name(key_file.name + ".keyring")


def read_keyring(key_file: Path) -> dict[str, bytes]:
    """Fingerprint -> key, oldest first (empty: never rotated). A damaged line is an error, never skipped."""
    try:
        lines = keyring_file(key_file).read_text().splitlines()
    except FileNotFoundError:
        return {}
    ring: dict[str, bytes] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            name, hexkey = line.split()
            key = bytes.fromhex(hexkey)
        except ValueError:
            key, name = b"", ""
        if len(key) < 32 or fingerprint(key) != name:
            raise AuditError(f"line {n} of the audit keyring {keyring_file(key_file)} is not a key: restore the "
                             "keyring from a backup (without it entries signed before a rotation cannot be checked)")
        ring[name] = key
    return ring


def _add_to_keyring(key_file: Path, keys: list[bytes]) -> None:
    """Append the keys the ring lacks (fsync-ed before the rotation entry names them)."""
    ring = read_keyring(key_file)
    new = [k for k in dict.fromkeys(keys) if fingerprint(k) not in ring]
    if not new:
        return
    path = keyring_file(key_file)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(f"{fingerprint(k)} {k.hex()}\n" for k in new))
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)


def _install_key(path: Path, key: bytes) -> None:
    """Replace the key file with ``key`` at once (a new file renamed over it: readers see one or the other)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _file_id(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _unkeyed(entry: dict[str, Any]) -> bool:
    """An entry of the earlier format: a plain sha256 chain, which anyone can recompute."""
    return entry.get("hash") == hashlib.sha256(_canonical(entry)).hexdigest()


def _tail(fd: int) -> tuple[dict[str, Any] | None, int]:
    """The last committed entry of the open log (None: none yet) and ``end``, the byte length of the
    committed part (through the last newline); anything after it is a torn line."""
    size = os.fstat(fd).st_size
    block, pos, buf = 8192, size, b""
    while pos > 0:
        n = min(block, pos)
        pos -= n
        buf = os.pread(fd, n, pos) + buf
        last = buf.rfind(b"\n")
        if last == -1:
            if pos == 0:
                return None, 0  # nothing but a torn line
            block *= 2
            continue
        before = buf.rfind(b"\n", 0, last)
        if before == -1 and pos > 0:
            block *= 2
            continue
        line = buf[before + 1:last]
        try:
            entry = json.loads(line)
            int(entry["seq"]), str(entry["hash"])
            return entry, pos + last + 1
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError("the audit log's last line is not an entry: it was damaged or tampered with; "
                             "`onesource audit verify` says more") from exc
    return None, 0


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """A file's identity and state: another writer's append (or a truncation, a rewrite) changes it."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _first_hash(fd: int) -> str:
    """The hash of the open log's first entry (it names the log in the anchor, with the key)."""
    buf, size = b"", 4096
    while b"\n" not in buf:
        buf = os.pread(fd, size, 0)
        if len(buf) < size and b"\n" not in buf:
            raise AuditError("the audit log has no first entry")
        size *= 4
    return str(json.loads(buf[: buf.index(b"\n")])["hash"])


@dataclass(frozen=True)
class AnchorRow:
    log_id: str
    first_hash: str
    seq: int
    hash: str
    folder: str
    host: str
    at: str
    mac: str


class Anchor:
    """The chain head, kept in the lake catalog's database: one row per log (its key's id and its first
    entry's hash) with the last seq and hash known durable, only ever advanced, and the row's HMAC.

    * ``postgres:`` catalog: the table ``onesource_audit_anchor`` in the catalog's own database (DuckLake
      ignores tables it does not own; tested with a load after it was created).
    * ``sqlite:`` catalog (the embedded default): a sidecar SQLite database beside the catalog file
      (``catalog.audit-anchor.sqlite``), not a table inside it. DuckLake would tolerate the table, but
      the catalog file is open in the same processes through DuckDB's own copy of SQLite, and two
      SQLite libraries in one process on one file defeat each other's POSIX locks (SQLite's
      "multiple copies" corruption warning); every write would also change the catalog file's stat,
      which the governed engine uses as its grant-cache stamp.
    """

    def __init__(self, catalog: str):
        self.catalog = catalog
        self._lock = threading.Lock()
        self._conn: Any = None
        if catalog.startswith("sqlite:"):
            cat = Path(catalog.removeprefix("sqlite:"))
            self.kind, self.path = "sqlite", cat.with_name(cat.stem + ".audit-anchor.sqlite")
            self.where = str(self.path)
        elif catalog.startswith("postgres:"):
            self.kind, self.path = "postgres", None
            self.where = f"table {ANCHOR_TABLE} of the catalog database"
        else:
            raise AuditError(f"the audit anchor needs a sqlite: or postgres: catalog, not {catalog!r}")

    @classmethod
    def of(cls, catalog: str) -> Anchor | None:
        return cls(catalog) if catalog.startswith(("sqlite:", "postgres:")) else None

    _DDL = (f"CREATE TABLE IF NOT EXISTS {ANCHOR_TABLE} (log_id TEXT NOT NULL, first_hash TEXT NOT NULL, "
            "seq BIGINT NOT NULL, hash TEXT NOT NULL, folder TEXT, host TEXT, at TEXT, mac TEXT NOT NULL, "
            "PRIMARY KEY (log_id, first_hash))")
    _UPSERT = (f"INSERT INTO {ANCHOR_TABLE} VALUES ({{p}}, {{p}}, {{p}}, {{p}}, {{p}}, {{p}}, {{p}}, {{p}}) "
               "ON CONFLICT (log_id, first_hash) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
               "folder = excluded.folder, host = excluded.host, at = excluded.at, mac = excluded.mac "
               f"WHERE excluded.seq > {ANCHOR_TABLE}.seq")

    def _connect(self):
        if self.kind == "sqlite":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            # an anchor lost to a power cut only lags (never leads) the log, which is fsync-ed first
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(self._DDL)
            return conn
        import psycopg

        conn = psycopg.connect(self.catalog.removeprefix("postgres:"), autocommit=True, connect_timeout=10)
        try:
            conn.execute(self._DDL)
        except psycopg.errors.UniqueViolation:  # two processes creating it at once: the other one won
            pass
        return conn

    def advance(self, key: bytes, first_hash: str, seq: int, digest: str, folder: Path) -> None:
        """Record that the log ``(key, first_hash)`` durably holds ``seq`` entries ending with ``digest``
        (a lower seq than the one recorded changes nothing)."""
        log_id = _log_id(key)
        row = (log_id, first_hash, seq, digest, str(folder), socket.gethostname(),
               dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), _row_mac(key, log_id, first_hash, seq, digest))
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None:
                        self._conn = self._connect()
                    self._conn.execute(self._UPSERT.format(p="?" if self.kind == "sqlite" else "%s"), row)
                    return
                except Exception:
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise

    def rows(self) -> list[AnchorRow]:
        """Every anchored log (read-only: nothing is created)."""
        query = f"SELECT log_id, first_hash, seq, hash, folder, host, at, mac FROM {ANCHOR_TABLE}"
        if self.kind == "sqlite":
            if not self.path.exists():
                return []
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            try:
                return [AnchorRow(*r) for r in conn.execute(query).fetchall()]
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.catalog.removeprefix("postgres:"), connect_timeout=10) as conn:
            try:
                return [AnchorRow(*r) for r in conn.execute(query).fetchall()]
            except psycopg.errors.UndefinedTable:
                return []

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None


class AuditLog:
    """``group_commit=None``: every append is fsync-ed (and anchored) before it returns (the CLI: one
    query, then exit). ``group_commit=0.2``: appends reach the file at once (a crash of the process loses
    nothing) and a background thread fsyncs them, then advances the anchor, within 0.2 s. The servers use
    it: one fsync per query costs 0.5 to 11 ms on this disk, more than the governance itself (as
    PostgreSQL's synchronous_commit=off).

    ``key_file``: the HMAC key (default: the one :func:`default_audit_key_file` gives the folder's
    parent as home); ``anchor``: where the head is anchored (None: nowhere). :meth:`of` builds both
    from the settings."""

    def __init__(self, folder: Path, group_commit: float | None = None, *, key_file: Path | None = None,
                 anchor: Anchor | None = None, store: ChainStore | None = None):
        self.folder = Path(folder)
        self.path = self.folder / "audit.log"
        self.store = store
        """Where the chain lives when several servers share it (a PostgreSQL catalog); None: :attr:`path`."""
        self._store_guard = threading.Lock()
        self._store_mark: tuple[int, str] | None = None  # this process's last entry in the store: seq, hash
        self._pending: list[dict[str, Any]] = []  # appends waiting for the next turn to write (group commit)
        self._pending_lock = threading.Lock()
        self.key_file = Path(key_file) if key_file is not None else default_audit_key_file(self.folder.parent)
        self.anchor = anchor
        self.group_commit = group_commit
        self._key: bytes | None = None
        self._key_file_id: tuple[int, ...] | None = None
        """The key file's identity when ``_key`` was read: a rotation by another process replaces the file."""
        self._last: tuple[int, str, str] | None = None  # this process's last append: seq, hash, first hash
        self._first: tuple[tuple[int, int], str] | None = None  # (device, inode) of the log -> first hash
        self._anchored = ("", 0)  # (first hash, seq) this process last anchored
        self.anchor_error: str | None = None
        self._dirty = threading.Event()
        self._sync_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._lock_pid = 0
        self._lock_guard = threading.Lock()
        self._mark: tuple[tuple[int, ...], int, str] | None = None
        """After this process's last append: the log's (device, inode, size, mtime, ctime) and that entry's seq
        and hash. The same file, unchanged since, ends with that entry: its tail need not be read again."""
        if group_commit:
            threading.Thread(target=self._flusher, name="audit-fsync", daemon=True).start()

    @classmethod
    def of(cls, settings: Settings, group_commit: float | None = None) -> AuditLog:
        """The home's audit log, with its key and its anchor in the lake's catalog database."""
        dsn = shared_catalog(settings.lake.catalog)
        store = ChainStore(dsn, synchronous=not group_commit) if dsn is not None else None
        return cls(settings.home / "audit", group_commit, key_file=settings.audit_key_file,
                   anchor=Anchor.of(settings.lake.catalog), store=store)

    @property
    def shared(self) -> str | None:
        """The catalog database several servers share their state in (sessions, sign-ins); None: none."""
        return self.store.dsn if self.store is not None else None

    def _flusher(self) -> None:
        while True:
            self._dirty.wait()
            time.sleep(self.group_commit or 0)
            self._dirty.clear()
            try:
                self.sync()
            except Exception as exc:  # the next flush tries again; verify still checks the log itself
                log.warning("audit log flush failed: %s", exc)

    def sync(self) -> None:
        """fsync the log now, then anchor what this process appended (also called on shutdown)."""
        with self._sync_lock:
            last = self._last
            if self.store is not None:  # committed to the database already; the anchor's commit flushes its WAL
                if last is not None:
                    self._advance(*last)
                return
            if not self.path.exists():
                return
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if last is not None:
                self._advance(*last)

    def _advance(self, seq: int, digest: str, first: str) -> None:
        if self.anchor is None or self._key is None or not first or (
                first == self._anchored[0] and seq <= self._anchored[1]):
            return
        try:
            self.anchor.advance(self._key, first, seq, digest, self.folder.resolve())
            self._anchored, self.anchor_error = (first, seq), None
        except Exception as exc:  # the anchor lags; the query it records is not failed for that
            if self.anchor_error is None:
                log.warning("could not anchor the audit log in %s: %s", self.anchor.where, exc)
            self.anchor_error = str(exc)

    def _follow(self, last: dict[str, Any] | None) -> None:
        """Before appending after another writer: the key the chain now wants. After a rotation entry, the key
        it names (from the key file, or from the keyring when the rotation was cut short before the key file
        was replaced, which this completes); otherwise the key file's, read again when the file was replaced."""
        wanted = last.get("next_key") if last is not None and last.get("action") == ROTATION else None
        if wanted is None:
            if self._key is not None and _file_id(self.key_file) != self._key_file_id:
                self._key = None  # rotated by another process: read the new key
            return
        if self._key is not None and fingerprint(self._key) == wanted:
            return
        key = read_key(self.key_file)
        if key is None or fingerprint(key) != wanted:
            key = read_keyring(self.key_file).get(wanted)
            if key is None:
                raise AuditError(f"the audit log's last rotation names key {wanted}, which is neither the key "
                                 f"{self.key_file} nor in its keyring: restore them from a backup")
            _install_key(self.key_file, key)
        self._key, self._key_file_id = key, _file_id(self.key_file)

    def _signing_key(self, entries: int) -> bytes:
        if self._key is None:
            self._key_file_id = _file_id(self.key_file)
            key = read_key(self.key_file)
            if key is None:
                if entries:
                    raise AuditError(f"missing key: the audit key {self.key_file} is gone but the log holds "
                                     f"{entries} entries; restore it (a new key would re-sign history)")
                key = _create_key(self.key_file)
            self._key = key
        return self._key

    def _archive_unkeyed(self) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        os.rename(self.path, self.folder / f"audit.log.unkeyed-{stamp}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.folder / "audit.head", self.folder / f"audit.head.unkeyed-{stamp}")
        log.warning("the audit log in %s was of the earlier unkeyed format: archived as audit.log.unkeyed-%s; "
                    "a keyed log begins", self.folder, stamp)

    @contextlib.contextmanager
    def _locked(self):
        """The log's exclusive lock (``audit.lock``, shared by every process appending to the log), through a
        descriptor kept open between appends (opening the file for each one cost more than the rest of the
        append), and opened again when the file there is no longer the one it holds (a folder re-created)."""
        with self._lock_guard:  # the threads of this process take turns on the one descriptor
            if self._lock_pid != os.getpid():  # a forked child shares the parent's descriptor and its lock: its own
                self._lock_fd, self._lock_pid = None, os.getpid()
            while True:
                if self._lock_fd is None:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    self._lock_fd = os.open(self.folder / "audit.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                try:
                    same = os.path.samestat(os.fstat(self._lock_fd), os.stat(self.folder / "audit.lock"))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(self._lock_fd)  # (closing it releases its lock)
                self._lock_fd = None
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def append(self, **fields: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(fields, ensure_ascii=False, default=str))  # as verify will read it
        if self.store is not None:
            return self._append_to_store(body)
        with self._locked():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                mark, self._mark = self._mark, None
                st = os.fstat(fd)
                if mark is not None and mark[0] == _identity(st):  # nobody wrote since our own last entry
                    seq, prev = mark[1], mark[2]
                else:
                    last, end = _tail(fd)
                    if last is not None and self._key is None and _unkeyed(last) and read_key(self.key_file) is None:
                        os.close(fd)  # a log of the earlier, unkeyed format: kept as it is, and a keyed one begins
                        self._archive_unkeyed()
                        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
                        last, end = None, 0
                    seq, prev = (int(last["seq"]), str(last["hash"])) if last is not None else (0, GENESIS)
                    if end < os.fstat(fd).st_size:
                        os.ftruncate(fd, end)  # a torn line left by a killed writer: never an entry
                    self._follow(last)  # another writer may have rotated the key
                key = self._signing_key(seq)
                entry = {"seq": seq + 1, "at": dt.datetime.now(dt.UTC).isoformat(), **body, "prev": prev}
                entry["hash"] = _mac(key, entry)
                data = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
                while data:
                    data = data[os.write(fd, data):]
                if not self.group_commit:
                    os.fsync(fd)
                st = os.fstat(fd)
                if entry["seq"] == 1:
                    self._first = ((st.st_dev, st.st_ino), entry["hash"])
                elif self._first is None or self._first[0] != (st.st_dev, st.st_ino):
                    try:
                        self._first = ((st.st_dev, st.st_ino), _first_hash(fd))
                    except (AuditError, ValueError, KeyError, TypeError):  # verify names it; no anchoring
                        self._first = ((st.st_dev, st.st_ino), "")
                self._last = head = (entry["seq"], entry["hash"], self._first[1])
                self._mark = (_identity(st), entry["seq"], entry["hash"])
            finally:
                os.close(fd)
        if self.group_commit:
            if not self._dirty.is_set():  # (setting an Event takes its lock and wakes its waiters)
                self._dirty.set()
        else:
            with self._sync_lock:
                self._advance(*head)
        return entry

    def _adopt_file(self) -> None:
        """A home whose log began as the JSONL file (before its catalog moved to PostgreSQL, or before the
        chain did): its entries become the store's first ones, unchanged (their seqs, hashes and anchor row
        hold), once, by whichever server comes first; the file is renamed ``audit.log.in-catalog-<stamp>``."""
        if not self.path.exists():
            return
        with self._locked(), self.store.locked() as conn:  # type: ignore[union-attr]
            if not self.path.exists() or self.store.last(conn) is not None:  # type: ignore[union-attr]
                return
            data = self.path.read_bytes()
            for raw in data[: data.rfind(b"\n") + 1].decode("utf-8").splitlines():
                if raw.strip():
                    entry = json.loads(raw)
                    self.store.insert(int(entry["seq"]), str(entry["prev"]), str(entry["hash"]), raw, conn)  # type: ignore[union-attr]
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            os.rename(self.path, self.folder / f"audit.log.in-catalog-{stamp}")
            log.warning("the audit log %s now continues in %s (the file is kept as audit.log.in-catalog-%s)",
                        self.path, self.store.where, stamp)  # type: ignore[union-attr]

    def _append_to_store(self, body: dict[str, Any]) -> dict[str, Any]:
        """Append to the shared chain. Concurrent appends of this process are written together (group commit):
        whoever takes the turn writes every entry waiting, in one statement, so a server answering many queries
        at once pays one round trip to the database for all of them (each append still waits for its own to be
        committed: a crash of the server loses none)."""
        mine: dict[str, Any] = {"body": body}
        with self._pending_lock:
            self._pending.append(mine)
        with self._store_guard:
            if "entry" not in mine and "error" not in mine:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    entries = self._write_batch([b["body"] for b in batch])
                except Exception as exc:
                    for b in batch:
                        b["error"] = exc
                else:
                    for b, entry in zip(batch, entries, strict=True):
                        b["entry"] = entry
        if "error" in mine:
            raise mine["error"]
        return mine["entry"]

    def _write_batch(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Entries ``seq + 1 ...`` after the last one known (this process's own last, at first), written only if
        nobody wrote those seqs first (the primary key; one statement: all or none); otherwise the tail is read
        again, with the key it wants (another server may have rotated it), and the entries made anew."""
        store = self.store
        assert store is not None
        if self._store_mark is None:
            self._adopt_file()
        mark, self._store_mark = self._store_mark, None
        for attempt in range(200):
            if mark is not None and attempt == 0:
                # this process's key: a rotation since put its entry at mark + 1, so this insert fails and the
                # tail (read next) names the key to follow
                seq, prev = mark
            else:
                line = store.last()
                last = json.loads(line) if line is not None else None
                seq, prev = (int(last["seq"]), str(last["hash"])) if last is not None else (0, GENESIS)
                self._follow(last)
            key = self._signing_key(seq)
            entries, rows = [], []
            for body in bodies:
                entry = {"seq": seq + 1, "at": dt.datetime.now(dt.UTC).isoformat(), **body, "prev": prev}
                entry["hash"] = _mac(key, entry)
                entries.append(entry)
                rows.append((entry["seq"], prev, entry["hash"], json.dumps(entry, ensure_ascii=False)))
                seq, prev = entry["seq"], entry["hash"]
            if store.insert_many(rows):
                break
            if attempt >= 3:
                time.sleep(min(0.001 * attempt, 0.02))  # many servers at once: let the others through
        else:
            raise AuditError(f"could not append to the audit chain in {store.where}: 200 tries lost to other writers")
        if entries[0]["seq"] == 1:
            self._first = ((0, 0), entries[0]["hash"])
        elif self._first is None:
            self._first = ((0, 0), store.first_hash() or "")
        self._store_mark = (seq, prev)
        self._last = head = (seq, prev, self._first[1])
        if self.group_commit:
            if not self._dirty.is_set():
                self._dirty.set()
        else:
            with self._sync_lock:
                self._advance(*head)
        return entries

    def _rotate_in_store(self, body: dict[str, Any]) -> tuple[str, str]:
        """:meth:`rotate_key` for the shared chain: under the chain's advisory lock and this home's lock."""
        store = self.store
        assert store is not None
        with self._store_guard:
            self._store_mark = None
            self._adopt_file()
            with store.locked() as conn:
                line = store.last(conn)
                last = json.loads(line) if line is not None else None
                seq, prev = (int(last["seq"]), str(last["hash"])) if last is not None else (0, GENESIS)
                self._follow(last)
                old = self._signing_key(seq)
                new = secrets.token_bytes(32)
                _add_to_keyring(self.key_file, [old, new])
                entry = {"seq": seq + 1, "at": dt.datetime.now(dt.UTC).isoformat(), **body, "action": ROTATION,
                         "key": fingerprint(old), "next_key": fingerprint(new), "prev": prev}
                entry["hash"] = _mac(old, entry)
                if not store.insert(entry["seq"], prev, entry["hash"], json.dumps(entry, ensure_ascii=False), conn):
                    raise AuditError("the audit chain moved during the key rotation: run it again")
            first = entry["hash"] if entry["seq"] == 1 else (store.first_hash() or "")
            self._first = ((0, 0), first)
            self._last = (entry["seq"], entry["hash"], first)
            with self._sync_lock:  # anchored with the old key, which signed it
                self._advance(*self._last)
            _install_key(self.key_file, new)
            self._key, self._key_file_id = new, _file_id(self.key_file)
            self._store_mark = (entry["seq"], entry["hash"])
        return fingerprint(old), fingerprint(new)

    def committed(self) -> bytes:
        """The committed entries, one JSON line each (from the shared chain, or the file's whole lines)."""
        if self.store is not None:
            lines = self.store.lines()
            if lines or not self.path.exists():
                return "".join(f"{line}\n" for line in lines).encode()
        if not self.path.exists():
            return b""
        data = self.path.read_bytes()
        return data[: data.rfind(b"\n") + 1]

    def rotate_key(self, **fields: Any) -> tuple[str, str]:
        """A new key for the log; returns the (old, new) fingerprints. Under the log's lock: both keys are
        put in the keyring first, then the old key signs the entry naming the new one (with ``fields``: who,
        why), then the key file is replaced. A crash between the last two steps is completed by the next
        append (:meth:`_follow`); one before, leaves the old key in use and an unused key in the ring."""
        body = json.loads(json.dumps(fields, ensure_ascii=False, default=str))
        if self.store is not None:
            return self._rotate_in_store(body)
        with self._locked():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                self._mark = None
                last, end = _tail(fd)
                if end < os.fstat(fd).st_size:
                    os.ftruncate(fd, end)
                seq, prev = (int(last["seq"]), str(last["hash"])) if last is not None else (0, GENESIS)
                self._follow(last)
                old = self._signing_key(seq)
                new = secrets.token_bytes(32)
                _add_to_keyring(self.key_file, [old, new])
                entry = {"seq": seq + 1, "at": dt.datetime.now(dt.UTC).isoformat(), **body, "action": ROTATION,
                         "key": fingerprint(old), "next_key": fingerprint(new), "prev": prev}
                entry["hash"] = _mac(old, entry)
                data = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
                st = os.fstat(fd)
                first = entry["hash"] if entry["seq"] == 1 else _first_hash(fd)
                self._first = ((st.st_dev, st.st_ino), first)
                self._last = (entry["seq"], entry["hash"], first)
                with self._sync_lock:  # anchored with the old key, which signed it
                    self._advance(*self._last)
                _install_key(self.key_file, new)
                self._key, self._key_file_id = new, _file_id(self.key_file)
                self._mark = (_identity(st), entry["seq"], entry["hash"])
            finally:
                os.close(fd)
        return fingerprint(old), fingerprint(new)

    def entries(self) -> list[dict[str, Any]]:
        """The committed entries (a torn last line is not one)."""
        return [json.loads(line) for line in self.committed().decode("utf-8").splitlines() if line.strip()]

    def close(self) -> None:
        self.sync()
        if self.anchor is not None:
            self.anchor.close()
        if self.store is not None:
            self.store.close()
        with self._lock_guard:
            if self._lock_fd is not None and self._lock_pid == os.getpid():
                os.close(self._lock_fd)
            self._lock_fd = None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    first_bad: int | None = None
    """1-based line of the first entry that does not verify."""
    reason: str = ""
    notes: tuple[str, ...] = ()
    """What passed but deserves a look (a torn last line, no anchor, a lagging anchor)."""


ANCHOR_GRACE = dt.timedelta(seconds=60)
"""A log whose first entry is older than this must have an anchor row (servers anchor every 0.2 s)."""


def verify(log: AuditLog) -> Verdict:
    """Check every entry's HMAC, seq and link, then the log against its anchor. Never creates a key. Across a
    key rotation the chain goes on with the key its rotation entry names (from the keyring)."""
    notes: list[str] = []
    key = read_key(log.key_file)
    try:
        ring = read_keyring(log.key_file)
    except AuditError as exc:
        return Verdict(False, 0, None, str(exc))
    if key is not None and log.key_file.resolve().is_relative_to(log.folder.resolve().parent):
        notes.append(f"the key {log.key_file} lies inside the home: whoever can rewrite the log can re-sign it")
    where = log.anchor.where if log.anchor is not None else ""
    try:
        anchored = log.anchor.rows() if log.anchor is not None else []
    except Exception as exc:
        return Verdict(False, 0, None, f"cannot read the anchor in {where}: {exc}")
    folder, host = str(log.folder.resolve()), socket.gethostname()
    notes += [f"{p.name} is a log of the earlier unkeyed format, kept but not checked"
              for p in sorted(log.folder.glob("audit.log.unkeyed-*"))]
    if log.store is not None:
        try:
            data = committed = log.committed()
        except Exception as exc:
            return Verdict(False, 0, None, f"cannot read the audit chain in {log.store.where}: {exc}")
    else:
        data = log.path.read_bytes() if log.path.exists() else b""
        committed = data[: data.rfind(b"\n") + 1]
    if len(committed) < len(data):
        notes.append(f"the last {len(data) - len(committed)} bytes are a torn line (a writer killed mid-append): "
                     "not an entry; the next append cuts them off")
    lines = committed.split(b"\n")[:-1]
    here = [r for r in anchored if r.folder == folder and r.host == host and r.seq > 0]

    if key is None:
        with contextlib.suppress(ValueError, AttributeError):
            if lines and _unkeyed(json.loads(lines[-1])):
                return Verdict(False, 0, 1, f"the log holds {len(lines)} entries of the earlier unkeyed (sha256) "
                                            "format, which anyone can recompute; the next append archives it "
                                            f"and begins a log keyed with {log.key_file}")
        if lines:
            return Verdict(False, 0, 1, f"missing key: the audit key {log.key_file} does not exist but the log "
                                        f"holds {len(lines)} entries; restore it (it is never re-created while a "
                                        "log exists, so that nobody can re-sign history)")
        if here:
            r = max(here, key=lambda r: r.seq)
            return Verdict(False, 0, 1, f"missing key and log: the audit log and its key {log.key_file} are gone, "
                                        f"but the anchor in {where} records {r.seq} entries for {folder} "
                                        f"(anchored {r.at}): the log was deleted")
        return Verdict(True, 0, notes=tuple(notes))

    keys = {**ring, fingerprint(key): key}  # every key of the chain, the key file's last
    by_id = {_log_id(k): k for k in keys.values()}
    mine: dict[str, AnchorRow] = {}
    for r in anchored:
        if r.log_id not in by_id:
            continue
        if not hmac.compare_digest(r.mac or "", _row_mac(by_id[r.log_id], r.log_id, r.first_hash, r.seq, r.hash)):
            return Verdict(False, 0, None, f"the anchor row for this log in {where} (seq {r.seq}, {r.at}) was "
                                           "forged: its HMAC does not match")
        if r.first_hash not in mine or r.seq > mine[r.first_hash].seq:  # one row per key: the furthest counts
            mine[r.first_hash] = r
    signing = key
    prev, n, first, first_at = GENESIS, 0, None, None
    for n, raw in enumerate(lines, start=1):
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                raise ValueError
        except ValueError:
            return Verdict(False, n - 1, n, f"line {n} is not a JSON entry")
        if n == 1 and entry.get("hash") != _mac(signing, entry):  # a log begun before a rotation
            signing = next((k for k in keys.values() if entry.get("hash") == _mac(k, entry)), signing)
        if entry.get("hash") != _mac(signing, entry):
            if _unkeyed(entry):
                why = ("is an unkeyed (sha256) entry of the earlier format, which anyone can recompute "
                       "(the next append archives such a log when no key exists yet)")
            elif n == 1:
                why = f"was edited, or signed with another key than {log.key_file}: its HMAC does not match"
            else:
                why = "was edited: its HMAC does not match its content"
            return Verdict(False, n - 1, n, f"entry seq {entry.get('seq')} (line {n}) {why}")
        if entry.get("seq") != n:
            return Verdict(False, n - 1, n, f"line {n} holds entry seq {entry.get('seq')}, expected {n}: "
                                            "entries were deleted or reordered")
        if entry.get("prev") != prev:
            return Verdict(False, n - 1, n, f"entry seq {n} (line {n}) does not follow the entry before it: "
                                            "the chain was broken")
        if n == 1:
            first, first_at = entry["hash"], entry.get("at")
        if entry.get("action") == ROTATION and entry.get("next_key"):
            signing = keys.get(str(entry["next_key"]))  # type: ignore[assignment]
            if signing is None:
                return Verdict(False, n, n + 1, f"entry seq {n} (line {n}) hands the log over to key "
                                                f"{entry['next_key']}, which is neither {log.key_file} nor in its "
                                                f"keyring {keyring_file(log.key_file)}: restore them from a backup")
        r = mine.get(first or "")
        if r is not None and r.seq == n and r.hash != entry["hash"]:
            return Verdict(False, n - 1, n, f"entry seq {n} (line {n}) is not the one anchored in {where} "
                                            f"({r.at}): the log was rewritten")
        prev = entry["hash"]

    others = [r for h, r in mine.items() if h != first and r.seq > 0]
    if others:
        r = max(others, key=lambda r: r.seq)
        what = f"the log holds {n} entries" if n else "the audit log is gone (deleted)"
        return Verdict(False, n, 1, f"{what}, but the anchor in {where} records another log of {r.seq} entries "
                                    f"signed with this key (anchored {r.at}): the log was deleted or replaced")
    if n == 0:  # the key is only ever made by a first append: a keyed log was begun, and it is gone
        return Verdict(False, 0, 1, f"the audit log is gone (deleted): its key {log.key_file} exists, and a key is "
                                    "only made by the log's first entry; restore the log from a backup")
    current = mine.get(first or "")
    if current is not None and current.seq > n:
        return Verdict(False, n, n + 1, f"the log ends at entry {n} but the anchor in {where} records "
                                        f"{current.seq} (anchored {current.at}): entries were removed from the end")
    if n and signing != key:
        if not (lines and json.loads(lines[-1]).get("action") == ROTATION):
            return Verdict(False, n, None, f"the key {log.key_file} is not the key the log's last rotation named "
                                           f"({fingerprint(signing)}): it was replaced; restore it from a backup")
        notes.append(f"a key rotation was cut short before {log.key_file} was replaced: the next append completes "
                     "it (the new key is in the keyring)")
    foreign = [r for r in here if r.log_id not in by_id]
    if foreign:
        r = max(foreign, key=lambda r: r.seq)
        return Verdict(False, n, 1, f"the anchor in {where} records a log of {r.seq} entries for {folder} signed "
                                    f"with another key (anchored {r.at}): the key {log.key_file} was replaced "
                                    "and the log it signed is gone")
    if log.anchor is None:
        notes.append("no anchor: truncation and deletion are not checked against a second place")
    elif n and current is None:
        started = dt.datetime.fromisoformat(first_at) if first_at else None
        if started is None or dt.datetime.now(dt.UTC) - started > ANCHOR_GRACE:
            return Verdict(False, n, None, f"the anchor in {where} holds no row for this log of {n} entries "
                                           f"(begun {first_at}): it was removed, or anchoring fails")
        notes.append(f"not anchored yet in {where} (the log is new)")
    elif current is not None and current.seq < n:
        notes.append(f"anchored up to entry {current.seq} of {n} (the rest is newer than the last flush)")
    return Verdict(True, n, notes=tuple(notes))


def _resume_at(fh, offset: int, last_seq: int) -> int:
    """Where the last sync stopped, or 0 when the log found there is not the one synced (a new log
    began: an unkeyed one was archived)."""
    if offset == 0:
        return 0
    fh.seek(offset - 1)
    if fh.read(1) != b"\n":  # also: the log is now shorter than the offset
        return 0
    line = fh.readline()
    if not line.endswith(b"\n"):
        return offset  # nothing new yet (or a line being appended)
    try:
        return offset if json.loads(line)["seq"] == last_seq + 1 else 0
    except (ValueError, KeyError, TypeError):
        return 0


REASON_CHARS = 500
"""How much of a refusal's reason ops.audit_events keeps (the log keeps it whole)."""


def _text(value: Any, chars: int) -> str | None:
    return None if value is None else str(value)[:chars]


def _exposed(entry: dict[str, Any]) -> list[str]:
    """``dataset.column`` the query's policy relations exposed unmasked (its ``columns`` less ``masked``)."""
    masked = set(entry.get("masked") or ())
    return [c for c in entry.get("columns") or () if c not in masked]


def sync_to_lake(lake, log: AuditLog) -> int:
    """Copy the entries appended since the last sync into ``ops.audit_events`` (the usage KPIs read
    them there, as a table, instead of re-reading the whole log). Returns how many were copied.

    The byte offset (the seq, for the chain in a PostgreSQL catalog) reached is stored with the rows in one
    commit, so a crash copies nothing twice."""
    dsn = shared_catalog(lake.settings.catalog)
    if dsn is None and not log.path.exists():
        return 0
    offset, last_seq = lake.con.execute(
        f"SELECT coalesce(arg_max(byte_offset, synced_at), 0), coalesce(arg_max(seq, synced_at), 0) "
        f"FROM {ledger.ref('audit_sync')}"
    ).fetchone()
    if dsn is None:
        return _sync_file(lake, log, offset, last_seq)
    store = log.store or ChainStore(dsn)  # (the callers' logs need no key: built without the settings)
    try:
        entries = [json.loads(line) for line in store.lines(after=last_seq)]
    finally:
        if store is not log.store:
            store.close()
    if not entries and log.path.exists():  # not adopted by the store yet: the file is still the log
        return _sync_file(lake, log, offset, last_seq)
    return _write_events(lake, entries, 0) if entries else 0


def _sync_file(lake, log: AuditLog, offset: int, last_seq: int) -> int:
    with open(log.path, "rb") as fh:
        offset = _resume_at(fh, offset, last_seq)
        fh.seek(offset)
        chunk = fh.read()
    chunk = chunk[: chunk.rfind(b"\n") + 1]  # whole lines only: a line being appended waits for the next sync
    if not chunk:
        return 0
    entries = [json.loads(line) for line in chunk.decode("utf-8").splitlines() if line.strip()]
    return _write_events(lake, entries, offset + len(chunk))


def _write_events(lake, entries: list[dict[str, Any]], reached: int) -> int:
    """``entries`` into ``ops.audit_events``, with the offset (or 0 for the shared chain) and seq reached."""
    import pyarrow as pa

    from lakehouse.lake import retrying

    table = pa.table({
        "seq": pa.array([e["seq"] for e in entries], pa.int64()),
        "event_at": pa.array([dt.datetime.fromisoformat(e["at"]).replace(tzinfo=None) for e in entries], pa.timestamp("us")),
        "department": [e.get("department") for e in entries],
        "user_name": [e.get("user") for e in entries],
        "decision": [e.get("decision") for e in entries],
        "tables": pa.array([e.get("tables") or [] for e in entries], pa.list_(pa.string())),
        "rows": pa.array([e.get("rows") for e in entries], pa.int64()),
        # what the misuse alerts read (sharing.security.alerts): the entry's kind, why a query was refused,
        # which columns it exposed unmasked, where a sign-in came from (never a password: none is logged)
        "kind": [e.get("kind") for e in entries],
        "purpose": [_text(e.get("purpose"), 200) for e in entries],
        "reason": [_text(e.get("reason"), REASON_CHARS) for e in entries],
        "exposed": pa.array([_exposed(e) for e in entries], pa.list_(pa.string())),
        "address": [_text(e.get("address"), 200) for e in entries],
        "channel": [_text(e.get("channel"), 50) for e in entries],
        # how much one column of an allowed answer packed (a register as one row: sharing.security.alerts)
        "result_values": pa.array([e.get("values") for e in entries], pa.int64()),
        "result_text_bytes": pa.array([e.get("text_bytes") for e in entries], pa.int64()),
    })

    def write() -> None:
        with lake.transaction() as con:
            con.register("new_audit_events", table)
            ledger.insert_select(con, "audit_events", "SELECT * FROM new_audit_events")
            ledger.append(con, "audit_sync", {"byte_offset": reached, "seq": entries[-1]["seq"],
                                              "synced_at": dt.datetime.now(dt.UTC).replace(tzinfo=None)})
            con.unregister("new_audit_events")
            lake.commit_message("audit events", {"entries": len(entries)})

    retrying(write, lake.settings.commit_retries, "copying audit entries into the lake")
    return len(entries)
