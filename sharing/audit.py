"""The audit log: every governed query, allowed or refused, appended to a hash chain.

One JSON object per line in ``$ONESOURCE_HOME/audit/audit.log``. Each entry carries ``seq`` and the
``prev`` hash, and its own ``hash`` = sha256 of its canonical JSON (without ``hash``). Editing an
entry breaks its hash; deleting or reordering entries breaks ``seq`` or ``prev``; truncating the
tail is caught against the head kept beside the log (``audit.head``). :func:`verify` names the
first bad entry. Appends from several processes are serialised with an exclusive file lock.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


class AuditLog:
    """``group_commit=None``: every append is fsync-ed before it returns (the CLI: one query, then exit).
    ``group_commit=0.2``: appends reach the file at once (a crash of the process loses nothing) and a
    background thread fsyncs them within 0.2 s. The servers use it: one fsync per query costs 0.5 to
    11 ms on this disk, more than the governance itself (as PostgreSQL's synchronous_commit=off)."""

    def __init__(self, folder: Path, group_commit: float | None = None):
        self.folder = Path(folder)
        self.path = self.folder / "audit.log"
        self.head = self.folder / "audit.head"
        self.group_commit = group_commit
        self._dirty = threading.Event()
        if group_commit:
            threading.Thread(target=self._flusher, name="audit-fsync", daemon=True).start()

    def _flusher(self) -> None:
        while True:
            self._dirty.wait()
            time.sleep(self.group_commit or 0)
            self._dirty.clear()
            self.sync()

    def sync(self) -> None:
        """fsync the log now (also called on shutdown)."""
        if self.path.exists():
            with open(self.path, "a", encoding="utf-8") as fh:
                os.fsync(fh.fileno())

    def _last(self) -> tuple[int, str]:
        if not self.head.exists():
            return 0, GENESIS
        seq, digest = self.head.read_text().split()
        return int(seq), digest

    def append(self, **fields: Any) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "audit.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            seq, prev = self._last()
            entry = {"seq": seq + 1, "at": dt.datetime.now(dt.UTC).isoformat(), **fields, "prev": prev}
            entry["hash"] = _digest(entry)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
                fh.flush()
                if self.group_commit:
                    self._dirty.set()
                else:
                    os.fsync(fh.fileno())
            tmp = self.head.with_suffix(".tmp")
            tmp.write_text(f"{entry['seq']} {entry['hash']}")
            os.replace(tmp, self.head)
        return entry

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    first_bad: int | None = None
    """1-based line of the first entry that does not verify."""
    reason: str = ""


def verify(log: AuditLog) -> Verdict:
    prev, expected_seq, n = GENESIS, 1, 0
    if log.path.exists():
        for n, line in enumerate(log.path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                entry = json.loads(line)
            except ValueError:
                return Verdict(False, n - 1, n, f"line {n} is not a JSON entry")
            if entry.get("hash") != _digest(entry):
                return Verdict(False, n - 1, n, f"entry seq {entry.get('seq')} (line {n}) was edited: its hash "
                                                "does not match its content")
            if entry.get("seq") != expected_seq:
                return Verdict(False, n - 1, n, f"line {n} holds entry seq {entry.get('seq')}, expected "
                                                f"{expected_seq}: entries were deleted or reordered")
            if entry.get("prev") != prev:
                return Verdict(False, n - 1, n, f"entry seq {entry.get('seq')} (line {n}) does not follow the "
                                                "entry before it: the chain was broken")
            prev, expected_seq = entry["hash"], expected_seq + 1
    seq, head = log._last()
    if (seq, head) != (expected_seq - 1, prev):
        return Verdict(False, n, n + 1, f"the log ends at entry {expected_seq - 1} but {seq} were written: "
                                        "entries were removed from the end")
    return Verdict(True, n)


def sync_to_lake(lake, log: AuditLog) -> int:
    """Copy the entries appended since the last sync into ``ops.audit_events`` (the usage KPIs read
    them there, as a table, instead of re-reading the whole log). Returns how many were copied.

    The byte offset reached is stored with the rows in one commit, so a crash copies nothing twice."""
    import pyarrow as pa

    from lakehouse.lake import CATALOG, OPS, retrying

    if not log.path.exists():
        return 0
    offset = lake.con.execute(f"SELECT coalesce(max(byte_offset), 0) FROM {CATALOG}.{OPS}.audit_sync").fetchone()[0]
    with open(log.path, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    chunk = chunk[: chunk.rfind(b"\n") + 1]  # whole lines only: a line being appended waits for the next sync
    if not chunk:
        return 0
    entries = [json.loads(line) for line in chunk.decode("utf-8").splitlines() if line.strip()]
    table = pa.table({
        "seq": pa.array([e["seq"] for e in entries], pa.int64()),
        "event_at": pa.array([dt.datetime.fromisoformat(e["at"]).replace(tzinfo=None) for e in entries], pa.timestamp("us")),
        "department": [e.get("department") for e in entries],
        "user_name": [e.get("user") for e in entries],
        "decision": [e.get("decision") for e in entries],
        "tables": pa.array([e.get("tables") or [] for e in entries], pa.list_(pa.string())),
        "rows": pa.array([e.get("rows") for e in entries], pa.int64()),
    })

    def write() -> None:
        with lake.transaction() as con:
            con.register("new_audit_events", table)
            con.execute(f"INSERT INTO {CATALOG}.{OPS}.audit_events SELECT * FROM new_audit_events")
            con.execute(f"INSERT INTO {CATALOG}.{OPS}.audit_sync VALUES (?, ?, ?)",
                        [offset + len(chunk), entries[-1]["seq"], dt.datetime.now(dt.UTC).replace(tzinfo=None)])
            con.unregister("new_audit_events")
            lake.commit_message("audit events", {"entries": len(entries)})

    retrying(write, lake.settings.commit_retries, "copying audit entries into the lake")
    return len(entries)
