"""``onesource doctor``: the home checked end to end, one line per check; and the server's ``/healthz``.

The checks, in order (:data:`CHECKS`), each a short function returning one :class:`Finding`:

* ``home``      the home exists, is this user's and 0700; nothing in it is open to group or others;
* ``catalog``   the catalog file is a sound SQLite database (``PRAGMA quick_check``), the lake opens, and the
                catalog is not empty (or newer than its data) next to a data folder that holds files;
* ``tables``    every table's current snapshot has all its data files;
* ``landing``   raw files still match their sha256 names (a random sample; every file with ``--full``);
* ``audit``     the audit log verifies (keyed chain, anchor, key);
* ``registry``  the registry passes its checks;
* ``staging``   no batches of killed loads are left in ``staging/``.

Doctor only reads: it neither fixes permissions nor creates anything (it runs before the CLI secures the
home, so it sees the home as it is). :func:`health` is the quick part for a running server: the home and
the catalog usable, in milliseconds, without opening the catalog file a second time in the process (two
SQLite libraries on one file in one process defeat each other's locks).
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Settings
from onesource.damage import RESTORE, catalog_path, missing_home

OK, WARN, FAIL = "ok", "warn", "FAIL"
SAMPLE = 20
"""Raw files hashed by a doctor run without ``--full``."""
_RAW = re.compile(r"^[0-9a-f]{64}\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Finding:
    check: str
    level: str
    message: str

    def line(self) -> str:
        return f"{self.level:4}  {self.check:9} {self.message}"


@dataclass
class Doctor:
    """What the checks share: the settings, options, and the lake once opened (or why it did not open)."""

    settings: Settings
    full: bool = False
    lake: Any = None
    lake_error: str | None = None
    stopped: str | None = None
    """Set when the home itself is unusable: the later checks are skipped with this reason."""

    def close(self) -> None:
        if self.lake is not None:
            self.lake.close()
            self.lake = None


def _rel(settings: Settings, path: Path | str) -> str:
    try:
        return str(Path(path).relative_to(settings.home))
    except ValueError:
        return str(path)


def check_home(doc: Doctor) -> Finding:
    s = doc.settings
    if reason := missing_home(s):
        doc.stopped = "the home is missing"
        return Finding("home", FAIL, reason)
    info = s.home.stat()
    if info.st_uid != os.getuid():
        return Finding("home", FAIL, f"{s.home} belongs to uid {info.st_uid}, not this user ({os.getuid()}): run "
                                     "OneSource as the home's owner")
    problems = []
    if stat.S_IMODE(info.st_mode) != 0o700:
        problems.append(f"the home is {oct(stat.S_IMODE(info.st_mode))}, not 0700")
    open_to_others, writable_raw = [], []
    for root, dirs, files in os.walk(s.home):
        for name in dirs + files:
            path = Path(root) / name
            try:
                mode = path.lstat().st_mode
            except OSError:
                continue
            if stat.S_ISLNK(mode):
                continue
            if mode & 0o077:
                open_to_others.append(path)
            if (Path(root).parent == s.landing_dir and stat.S_ISREG(mode) and _RAW.match(name)
                    and mode & 0o222):
                writable_raw.append(path)
    if open_to_others:
        problems.append(f"{len(open_to_others)} entries are open to group or others (e.g. "
                        f"{_rel(s, open_to_others[0])})")
    if writable_raw:
        problems.append(f"{len(writable_raw)} raw files are writable, not 0400 (e.g. {_rel(s, writable_raw[0])})")
    if problems:
        return Finding("home", WARN, f"{s.home}: " + "; ".join(problems) + ". Any `onesource` command makes the home "
                       "0700; `chmod -R go-rwx` the home for the rest")
    return Finding("home", OK, f"{s.home} is this user's, 0700, nothing open to others")


def _sqlite_problem(path: Path) -> str | None:
    """Why the SQLite catalog file is not a sound database, or None. (Python's sqlite3, before this process
    opens the catalog through DuckDB.)"""
    if not path.exists():
        return "does not exist"
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            return "is not an SQLite database (its first bytes are not SQLite's header)"
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            verdict = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"cannot be read as a database ({exc})"
    if verdict != ["ok"]:
        return f"fails SQLite's integrity check ({'; '.join(verdict[:2])})"
    return None


def _data_files(settings: Settings) -> int | None:
    data = settings.lake.data_path
    if "://" in data or not Path(data).is_dir():
        return None
    return sum(1 for _, _, files in os.walk(data) for f in files if f.endswith(".parquet"))


def check_catalog(doc: Doctor) -> Finding:
    from core.errors import OneSourceError
    from lakehouse import Lake
    from lakehouse.maintenance import orphan_refusal
    from onesource.damage import explain

    s = doc.settings
    path = catalog_path(s)
    shown = _rel(s, path) if path else s.lake.catalog.split(" password")[0]
    if path is not None and not path.exists() and not _data_files(s) and not any(s.landing_dir.glob("*/*")):
        doc.lake_error = "no lake yet"
        return Finding("catalog", WARN, f"no lake yet: {shown} does not exist and nothing was loaded (the first load "
                                        "creates it)")
    if path is not None and (problem := _sqlite_problem(path)):
        doc.lake_error = f"the catalog {shown} {problem}"
        return Finding("catalog", FAIL, f"the lake catalog {path} {problem}. {RESTORE}; the data files, landing "
                                        "zone and audit log are left as they are")
    try:
        doc.lake = Lake(s.lake, read_only=True)
        snapshots, tables = doc.lake.con.execute(
            "SELECT (SELECT count(*) FROM ducklake_snapshots('lake')), (SELECT count(*) FROM "
            "information_schema.tables WHERE table_catalog = 'lake' AND table_schema = 'shared')").fetchone()
        refusal = orphan_refusal(doc.lake)
    except Exception as exc:  # noqa: BLE001 - every way of failing is a finding here
        doc.close()
        message = str(exc) if isinstance(exc, OneSourceError) else (explain(exc, s) or f"{type(exc).__name__}: {exc}")
        doc.lake_error = f"the lake does not open ({message.splitlines()[0][:120]})"
        return Finding("catalog", FAIL, message)
    if refusal:
        return Finding("catalog", FAIL, f"the catalog does not match the data folder: {refusal}")
    files = _data_files(s)
    return Finding("catalog", OK, f"{shown} opens: {snapshots} snapshots, {tables} shared tables"
                                  + (f", {files} data files on disk" if files is not None else ""))


def check_tables(doc: Doctor) -> Finding:
    from lakehouse.integrity import REMEDY, all_schemas, checks_files, missing_files

    if doc.lake is None:
        if doc.lake_error == "no lake yet":
            return Finding("tables", OK, "no tables yet")
        return Finding("tables", FAIL, f"not checked: {doc.lake_error or 'the lake did not open'}")
    if not checks_files(doc.lake):
        return Finding("tables", OK, "not checked: the data files are on object storage")
    schemas = all_schemas(doc.lake.con)
    missing = missing_files(doc.lake, schemas)
    if missing:
        named = ", ".join(f"{t} ({len(f)})" for t, f in sorted(missing.items()))
        first = next(iter(missing.values()))[0]
        return Finding("tables", FAIL, f"{len(missing)} table(s) have missing data files: {named}; e.g. {first}. "
                                       f"They are damaged, not published as they stand. {REMEDY}")
    from lakehouse.lake import list_tables

    n = sum(len(list_tables(doc.lake.con, schema)) for schema in schemas)
    return Finding("tables", OK, f"every data file of {n} tables exists")


def check_landing(doc: Doctor) -> Finding:
    from connectors.landing import sha256_file

    s = doc.settings
    raw, aside = [], []
    if s.landing_dir.is_dir():
        for folder in sorted(p for p in s.landing_dir.iterdir() if p.is_dir()):
            for f in folder.iterdir():
                if _RAW.match(f.name):
                    raw.append(f)
                elif ".changed-" in f.name:
                    aside.append(f)
    chosen = raw if doc.full or len(raw) <= SAMPLE else random.sample(raw, SAMPLE)
    bad = []
    for f in chosen:
        try:
            if sha256_file(f) != f.name.split(".")[0]:
                bad.append(f)
        except OSError:
            bad.append(f)
    if bad:
        return Finding("landing", FAIL, f"{len(bad)} of {len(chosen)} raw files checked no longer match their sha256 "
                                        f"names (e.g. {_rel(s, bad[0])}): they were changed after they were delivered. "
                                        "A load refuses such a file and sets it aside; ask the department to deliver it "
                                        "again, and find out who changed the landing zone")
    how = "all of them" if len(chosen) == len(raw) else f"{len(chosen)} sampled (--full checks all)"
    note = (f"; {len(aside)} changed file(s) were set aside by loads (e.g. {_rel(s, aside[0])})" if aside else "")
    return Finding("landing", WARN if aside else OK, f"{len(raw)} raw files, {how} match their sha256 names{note}")


def check_audit(doc: Doctor) -> Finding:
    from sharing.audit import AuditLog, verify

    try:
        verdict = verify(AuditLog.of(doc.settings))
    except Exception as exc:  # noqa: BLE001
        return Finding("audit", FAIL, f"the audit log cannot be checked: {type(exc).__name__}: {exc}")
    if not verdict.ok:
        return Finding("audit", FAIL, f"{verdict.reason} (`onesource audit verify`)")
    return Finding("audit", OK, f"the audit log verifies: {verdict.entries} entries"
                                + (f" ({len(verdict.notes)} note(s): `onesource audit verify`)" if verdict.notes else ""))


def check_registry(doc: Doctor) -> Finding:
    from schemas import check_registry as registry_issues

    registry, issues = registry_issues(doc.settings.registry_dir)
    if issues:
        return Finding("registry", FAIL, f"{len(issues)} error(s), e.g. {issues[0]} (`onesource registry check`)")
    return Finding("registry", OK, f"{len(registry.datasets)} datasets, {len(registry.elements)} elements, version "
                                   f"{registry.version}")


def check_staging(doc: Doctor) -> Finding:
    from lakehouse.staging import leftovers

    s = doc.settings
    left = leftovers(s.staging_dir)
    if left:
        first = left[0]
        return Finding("staging", WARN, f"{len(left)} batch(es) of killed or failed loads are left in staging/ (e.g. "
                                        f"{first.dataset} load {first.load_id}, {first.age.days} day(s) old); the next "
                                        "load or maintenance run removes them")
    return Finding("staging", OK, "no batches of killed loads are left")


CHECKS: tuple[Callable[[Doctor], Finding], ...] = (check_home, check_catalog, check_tables, check_landing,
                                                   check_audit, check_registry, check_staging)


def run(settings: Settings, full: bool = False) -> list[Finding]:
    doc = Doctor(settings, full=full)
    out = []
    try:
        for check in CHECKS:
            name = check.__name__.removeprefix("check_")
            if doc.stopped:
                out.append(Finding(name, FAIL, f"not checked: {doc.stopped}"))
                continue
            try:
                out.append(check(doc))
            except Exception as exc:  # noqa: BLE001 - a check that breaks is a failed check, never a traceback
                out.append(Finding(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}"))
    finally:
        doc.close()
    return out


PAGE = 4096
"""SQLite's page size, which the catalogs DuckDB creates use: a sound catalog file is a multiple of it."""
_first_seen: dict[str, tuple[int, int]] = {}
"""Catalog path -> (device, inode) when this process first checked it: a file replaced under a running
server is not the database the server has open."""


def health(settings: Settings, probe: Callable[[], Any] | None = None) -> tuple[bool, dict[str, Any]]:
    """Whether a running server's home and catalog are usable: (ok, a small JSON body). ``probe`` runs a
    catalog query on the server's own connection and returns the current snapshot id.

    The catalog file is looked at with ``stat`` only: opening it in this process, even to read its header,
    would release the locks DuckDB's SQLite holds on it (POSIX locks belong to the process). So a truncated
    catalog is caught by its size (no longer a whole number of pages, or empty), a replaced one by its inode,
    and the probe catches what SQLite itself finds."""
    s = settings
    if missing_home(s):
        return False, {"status": "unavailable", "reason": "the home is missing"}
    path = catalog_path(s)
    if path is not None:
        try:
            st = path.stat()
        except OSError:
            return False, {"status": "unavailable", "reason": f"the catalog {_rel(s, path)} is missing"}
        if st.st_size == 0 or st.st_size % PAGE:
            return False, {"status": "unavailable", "reason": f"the catalog {_rel(s, path)} is truncated or damaged"}
        if _first_seen.setdefault(str(path), (st.st_dev, st.st_ino)) != (st.st_dev, st.st_ino):
            return False, {"status": "unavailable", "reason": f"the catalog {_rel(s, path)} was replaced while the "
                                                              "server runs; restart the server"}
    data = s.lake.data_path
    if "://" not in data and not Path(data).is_dir():
        return False, {"status": "unavailable", "reason": f"the data folder {_rel(s, data)} is missing"}
    snapshot = None
    if probe is not None:
        try:
            snapshot = probe()
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            return False, {"status": "unavailable", "reason": f"the catalog cannot be read: {first}"}
    return True, {"status": "ok", "snapshot": snapshot}
