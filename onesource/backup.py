"""Backup and restore of a home with the embedded lake: ``onesource backup DEST`` / ``onesource restore SRC``.

A backup is a folder that holds, consistently and while the platform runs (loads publishing, servers
answering queries):

* ``lake/catalog.sqlite``: the DuckLake catalog, copied with SQLite's online backup API in one step, so it
  is one committed state of the lake (a snapshot), whatever commits meanwhile;
* ``lake/data/``: the Parquet files the copied catalog references (data and delete files of every snapshot it
  keeps), copied after it, each whole (its size as the catalog records it). A file deleted meanwhile
  (maintenance) is a failed backup, never a silently incomplete one; a file written after the catalog was
  copied (a later commit) is not in the backup, where it would only be an orphan;
* ``landing/``: every raw extract as delivered (the system of record of what departments sent), and
  ``quarantine/``, ``registry/``, the match-quota ledger ``sharing/`` and the rest of the home's own files;
* ``audit/``: the audit log, copied after its anchor (``lake/catalog.audit-anchor.sqlite``, online backup),
  so the copy holds every entry the anchor records; cut at its last whole line;
* ``keys/audit.key``: the audit log's HMAC key, which lives **outside** the home
  (``Settings.audit_key_file``): without it the restored log cannot be verified or appended to. Keep the
  backup as private as the key (it is written 0600 in 0700 folders, like the home);
* ``MANIFEST.json``, written last: the sha256, size and mode of every file, the lake's snapshot id, where
  the home and key were.

Left out: ``staging/`` (a running load's scratch files), ``cache/`` (rebuilt), ``sources/`` (the departments'
side; what they delivered is in ``landing/``), ``airflow/`` (Airflow's own metadata database and logs: back it
up with Airflow's tools; a deployment keeps it in PostgreSQL), ``bench/``, GX's ``gx/uncommitted/`` (Data
Docs and validation files, rebuilt; every run's results are in ``ops.quality_*``).

``restore`` verifies every file against the manifest before anything is written and refuses a damaged
backup naming the first bad file; then writes into an empty home, at any path and on any machine (the
embedded lake takes its data path from where the catalog is), puts the key where the new home's settings
want it (``ONESOURCE_AUDIT_KEY`` or the default for the new path), and checks that the lake opens and the
audit log verifies.

A PostgreSQL catalog with object storage is backed up by their own means (PostgreSQL point-in-time recovery,
the bucket's versioning): see docs/deploy.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Settings
from core.duck import connect, literal
from lakehouse import guard
from lakehouse.exceptions import BackupError

MANIFEST = "MANIFEST.json"
FORMAT = 1
KEY = "keys/audit.key"
KEYRING = "keys/audit.keyring"
"""The keys the audit log was signed with before its key's rotations (sharing.audit.keyring_file)."""
CATALOG = "lake/catalog.sqlite"
ANCHOR = "lake/catalog.audit-anchor.sqlite"
DATA = "lake/data"
SKIPPED = {"staging", "cache", "sources", "airflow", "bench", "lake", "audit"}
"""Top-level entries of the home not copied as plain files (``lake`` and ``audit`` are copied on their own)."""
SKIPPED_PATHS = ("gx/uncommitted",)
SCRATCH = (".landing-", ".stat-cache-", ".restore-")
"""Prefixes of files being written (landing's temporary copies), never part of a backup."""
SIDE_FILES = ("-wal", "-shm", "-journal", ".lock")


@dataclass
class Report:
    folder: Path
    files: int = 0
    bytes: int = 0
    snapshot: int | None = None
    seconds: float = 0.0
    key: str | None = None
    notes: list[str] = field(default_factory=list)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def _copy(src: Path, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` (0600, fsync-ed); return its sha256 and size as copied."""
    _private_dir(dst.parent)
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        os.fchmod(fout.fileno(), 0o600)
        while chunk := fin.read(1 << 20):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest(), size


def _hash(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API, in one step: one read transaction,
    which in WAL mode holds no writer up), journalled as a plain file (no -wal beside it)."""
    _private_dir(dst.parent)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=60)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
    finally:
        source.close()
    os.chmod(dst, 0o600)
    with open(dst, "rb+") as fh:
        os.fsync(fh.fileno())


def _files(root: Path) -> list[Path]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            if name.startswith(SCRATCH) or name.endswith(SIDE_FILES):
                continue
            out.append(Path(folder) / name)
    return out


def _referenced(catalog: Path, data: Path) -> list[tuple[Path, int]]:
    """Every data and delete file the catalog at ``catalog`` references (any snapshot kept, not the files
    scheduled for deletion), with the size it records, resolved under the data folder ``data``."""
    con = connect(extensions=("sqlite_scanner",))
    try:
        con.execute(f"ATTACH {literal(str(catalog))} AS c (TYPE sqlite, READ_ONLY)")
        out = []
        for kind in ("data", "delete"):
            rows = con.execute(
                "SELECT s.path, s.path_is_relative, t.path, t.path_is_relative, f.path, f.path_is_relative, "
                f"f.file_size_bytes FROM c.ducklake_{kind}_file f JOIN c.ducklake_table t USING (table_id) "
                "JOIN c.ducklake_schema s ON s.schema_id = t.schema_id "
                # a table and a schema have a row per version: the file's path is under the latest one's
                f"QUALIFY row_number() OVER (PARTITION BY f.{kind}_file_id "
                "ORDER BY t.begin_snapshot DESC, s.begin_snapshot DESC) = 1").fetchall()
            out += [(guard.data_file_path(data, r[:6]), r[6]) for r in rows]
        return out
    finally:
        con.close()


def _snapshot(catalog: Path) -> int | None:
    with contextlib.closing(sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT max(snapshot_id) FROM ducklake_snapshot").fetchone()
    return row[0] if row else None


def _embedded(settings: Settings) -> None:
    if not guard.embedded(settings.lake):
        raise BackupError(
            f"`onesource backup` copies a home with the embedded lake (catalog and data folder under the home); this "
            f"one's catalog is {settings.lake.catalog.split('password=')[0]} with data at {settings.lake.data_path}. "
            "Back up a PostgreSQL catalog with PostgreSQL's point-in-time recovery (pg_basebackup and WAL "
            "archiving; the audit chain, its anchor, portal sessions and sign-in lockouts are tables of that "
            "database and come with it) and object storage with the bucket's versioning, the landing zone and the "
            "audit key with the home's volume (docs/deploy.md, \"Backup and restore\")")


def backup(settings: Settings, dest: Path, *, log=lambda text: None) -> Report:
    """Copy the home (catalog, data, landing, audit log and key, the rest of its own files) into ``dest``, a
    folder that must not exist yet (or be empty), while the platform runs."""
    _embedded(settings)
    started = time.perf_counter()
    home, dest = settings.home, Path(dest).expanduser().resolve()
    catalog = guard.sqlite_path(settings.lake)
    data = guard.local_data(settings.lake)
    if catalog is None or data is None or not catalog.exists() or catalog.stat().st_size == 0:
        raise BackupError(f"there is no lake to back up at {catalog}")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: back up into a new folder")
    if dest.is_relative_to(home):
        raise BackupError(f"{dest} is inside the home {home}: keep backups elsewhere (another disk, another machine)")
    work = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    _private_dir(work)
    files: dict[str, dict] = {}
    report = Report(dest)

    def add(rel: str, sha: str, size: int, mode: int = 0o600) -> None:
        files[rel] = {"sha256": sha, "bytes": size, "mode": oct(mode)}

    try:
        # 1. the catalog: one consistent snapshot of the lake
        _sqlite_copy(catalog, work / CATALOG)
        add(CATALOG, *_hash(work / CATALOG))
        report.snapshot = _snapshot(work / CATALOG)
        log(f"catalog: snapshot {report.snapshot}")
        # 2. the audit anchor, then the log (so the log copy holds every entry the anchor records). The audit
        #    key (outside the home) is copied before the log and its keyring after it: a rotation meanwhile
        #    (keyring, then the entry naming the new key, then the key file) leaves the copy either wholly before
        #    it or with its entry and both keys; _settle_key then installs the key the entry names, as the next
        #    append would. (Copied log first, key last, the restored log ended before the rotation with the new
        #    key in place: it did not verify, and the next append broke the chain for good.)
        from sharing.audit import keyring_file

        key = settings.audit_key_file
        if key.exists():
            add(KEY, *_copy(key, work / KEY))
            report.key = str(key)
        anchor = catalog.with_name(catalog.stem + ".audit-anchor.sqlite")
        if anchor.exists() and anchor.stat().st_size:
            _sqlite_copy(anchor, work / ANCHOR)
            add(ANCHOR, *_hash(work / ANCHOR))
        for path in _files(home / "audit"):
            rel = path.relative_to(home).as_posix()
            if path.name == "audit.log":
                add(rel, *_copy_log(path, work / rel))
            else:
                add(rel, *_copy(path, work / rel))
        if keyring_file(key).exists():  # after a rotation: without it the entries before cannot be checked
            add(KEYRING, *_copy(keyring_file(key), work / KEYRING))
        if report.key and (work / "audit" / "audit.log").exists():
            _settle_key(work, add)
        # 3. the data files the copied catalog references (every snapshot it keeps), each whole: a file written
        #    after the catalog was copied is not in it (it would be an orphan of the restored lake)
        missing = []
        for path, size in _referenced(work / CATALOG, data):
            if not path.is_relative_to(data):
                raise BackupError(f"the catalog references {path}, outside the data folder {data}: it cannot be "
                                  "backed up with the home")
            rel = f"{DATA}/{path.relative_to(data).as_posix()}"
            if rel in files:
                continue
            try:
                add(rel, *_copy(path, work / rel))
            except FileNotFoundError:
                missing.append(path)
                continue
            if files[rel]["bytes"] != size:
                missing.append(path)
        if missing:
            raise BackupError(f"the lake changed while it was copied: {len(missing)} file(s) the catalog's snapshot "
                              f"{report.snapshot} references are gone or changed (e.g. {missing[0]}), probably removed "
                              "by maintenance; nothing was written to the backup. Run the backup again")
        # 4. the rest of the home's own files (landing zone, quarantine, registry, ...)
        for entry in sorted(home.iterdir()):
            if entry.name in SKIPPED or entry.name.startswith("."):
                continue
            for path in _files(entry) if entry.is_dir() else [entry]:
                rel = path.relative_to(home).as_posix()
                if any(rel.startswith(p + "/") for p in SKIPPED_PATHS):
                    continue
                try:
                    if path.suffix == ".sqlite":
                        _sqlite_copy(path, work / rel)
                        add(rel, *_hash(work / rel))
                    else:
                        add(rel, *_copy(path, work / rel), mode=stat.S_IMODE(path.stat().st_mode))
                except FileNotFoundError:
                    continue
        # 5. the audit key, which lives outside the home: copied with the log (step 2)
        if not report.key and "audit/audit.log" in files:
            report.notes.append(f"the audit key {key} does not exist: the backed-up audit log cannot be verified")
        manifest = {"format": FORMAT, "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "host": socket.gethostname(), "home": str(home), "snapshot_id": report.snapshot,
                    "audit_key": {"file": KEY, "was": str(key)} if report.key else None,
                    "files": dict(sorted(files.items()))}
        with open(work / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(work / MANIFEST, 0o600)
        if dest.exists():
            dest.rmdir()
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    report.files = len(files)
    report.bytes = sum(f["bytes"] for f in files.values())
    report.seconds = time.perf_counter() - started
    return report


def _settle_key(work: Path, add) -> None:
    """The copied key is the one the copied log's last rotation names (a rotation that ran while the log was
    copied): else that key, from the copied keyring, replaces it, as the next append would do
    (sharing.audit.AuditLog._follow). Without a rotation in the log, or with the key already right, nothing."""
    from sharing.audit import ROTATION, fingerprint, read_key, read_keyring

    wanted = None
    with open(work / "audit" / "audit.log", "rb") as fh:
        for line in fh:
            if ROTATION.encode() in line:  # cheap test first; the entry itself says
                entry = json.loads(line)
                if entry.get("action") == ROTATION:
                    wanted = entry.get("next_key")
    have = read_key(work / KEY)
    if wanted is None or have is None or fingerprint(have) == wanted:
        return
    ring = read_keyring((work / KEYRING).with_suffix(""))  # the file whose keyring is KEYRING; {} if none
    if wanted in ring:  # (not there: the restored log says so when verified; nothing to guess)
        (work / KEY).write_text(ring[wanted].hex() + "\n")  # the format sharing.audit writes
        os.chmod(work / KEY, 0o600)
        add(KEY, *_hash(work / KEY))


def _copy_log(src: Path, dst: Path) -> tuple[str, int]:
    """The audit log up to its last whole line (appends only ever add to the end; a line being written is
    left for the next backup)."""
    _private_dir(dst.parent)
    digest = hashlib.sha256()
    with open(src, "rb") as fin:
        data = fin.read(os.fstat(fin.fileno()).st_size)
    data = data[: data.rfind(b"\n") + 1]
    with open(dst, "wb") as fout:
        os.fchmod(fout.fileno(), 0o600)
        fout.write(data)
        fout.flush()
        os.fsync(fout.fileno())
    digest.update(data)
    return digest.hexdigest(), len(data)


def read_manifest(src: Path) -> dict:
    path = Path(src) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{src} is not a OneSource backup (no {MANIFEST}; an interrupted backup has none)") from None
    except ValueError as exc:
        raise BackupError(f"the backup's manifest {path} is damaged ({exc}): use another backup") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise BackupError(f"{path} is not a manifest this version reads (format {FORMAT}): use another backup")
    for rel in manifest["files"]:
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise BackupError(f"the backup's manifest names {rel!r}, outside the backup: it is not one this "
                              "command wrote; use another backup")
    return manifest


def verify(src: Path) -> dict:
    """Every file of the backup against its manifest (sha256 and size); the first bad one is named."""
    src = Path(src)
    manifest = read_manifest(src)
    for rel, meta in manifest["files"].items():
        path = src / rel
        if not path.is_file():
            raise BackupError(f"the backup is damaged: {path} is missing (the manifest lists it); use another backup")
        sha, size = _hash(path)
        if sha != meta["sha256"] or size != meta["bytes"]:
            raise BackupError(f"the backup is damaged: {path} does not match its manifest (sha256 {sha[:16]}..., "
                              f"{size:,} bytes; expected {meta['sha256'][:16]}..., {meta['bytes']:,} bytes); use "
                              "another backup")
    return manifest


def _occupied(home: Path, manifest: dict) -> list[str]:
    """What in ``home`` a restore would overwrite or mix with."""
    found = []
    for name in ("lake", "landing", "audit", "quarantine"):
        if (home / name).exists() and any((home / name).iterdir()):
            found.append(str(home / name))
    found += [str(home / rel) for rel in manifest["files"] if rel != KEY and (home / rel).exists()]
    return found[:5]


def restore(src: Path, settings: Settings, *, log=lambda text: None) -> Report:
    """Restore the backup ``src`` into ``settings.home`` (empty, or not there yet), its key to
    ``settings.audit_key_file``; verify every file first, then that the lake opens and the audit log verifies."""
    _embedded(settings)
    started = time.perf_counter()
    src, home = Path(src).expanduser().resolve(), settings.home
    manifest = verify(src)
    log(f"verified {len(manifest['files'])} files against the manifest")
    if occupied := _occupied(home, manifest):
        raise BackupError(f"the home {home} is not empty ({', '.join(occupied)}): restore into an empty folder "
                          "(--home PATH), or move this one aside first; nothing was written")
    key_bytes = (src / KEY).read_bytes() if KEY in manifest["files"] else None
    key = settings.audit_key_file
    if key_bytes is not None and key.exists() and key.read_bytes() != key_bytes:
        raise BackupError(f"the audit key {key} exists and is not the backup's key: the restored log could not be "
                          "verified with it. Move it aside, or set ONESOURCE_AUDIT_KEY to another file; nothing was "
                          "written")
    _private_dir(home)
    work = home / f".restore-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        for rel, meta in manifest["files"].items():
            if rel in (KEY, KEYRING):
                continue
            sha, size = _copy(src / rel, work / rel)
            if sha != meta["sha256"] or size != meta["bytes"]:  # changed since it was verified
                raise BackupError(f"the backup is damaged: {src / rel} changed while it was restored; nothing was "
                                  "restored")
            os.chmod(work / rel, int(meta.get("mode", "0o600"), 8) & 0o700)
        for entry in sorted(work.iterdir()):
            target = home / entry.name
            if target.is_dir() and entry.is_dir():
                for sub in sorted(entry.rglob("*")):  # merge into folders the home already has (e.g. registry/)
                    dest = target / sub.relative_to(entry)
                    if sub.is_dir():
                        _private_dir(dest)
                    else:
                        sub.replace(dest)
            else:
                entry.replace(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = Report(home, files=len(manifest["files"]),
                    bytes=sum(m["bytes"] for m in manifest["files"].values()), snapshot=manifest.get("snapshot_id"))
    if key_bytes is not None:
        _private_dir(key.parent)
        os.chmod(key.parent, 0o700)
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key_bytes)
                fh.flush()
                os.fsync(fh.fileno())
        report.key = str(key)
    if KEYRING in manifest["files"]:
        from sharing.audit import keyring_file

        ring = keyring_file(key)
        if not ring.exists():
            fd = os.open(ring, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write((src / KEYRING).read_bytes())
                fh.flush()
                os.fsync(fh.fileno())
        elif ring.read_bytes() != (src / KEYRING).read_bytes():
            report.notes.append(f"the audit keyring {ring} exists and is not the backup's: kept as it was")
    _check_restored(settings, report)
    report.seconds = time.perf_counter() - started
    return report


def _check_restored(settings: Settings, report: Report) -> None:
    """The restored lake opens at its snapshot, and its audit log verifies."""
    from lakehouse.lake import Lake
    from sharing.audit import AuditLog
    from sharing.audit import verify as verify_audit

    with Lake(settings.lake, read_only=True) as lake:
        current = lake.con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]
    if report.snapshot is not None and current != report.snapshot:
        raise BackupError(f"the restored lake opens at snapshot {current}, not the backup's {report.snapshot}")
    if (settings.home / "audit" / "audit.log").exists():
        log = AuditLog.of(settings)
        try:
            verdict = verify_audit(log)
        finally:
            log.close()
        if not verdict.ok:
            report.notes.append(f"the restored audit log does not verify: {verdict.reason}")
        else:
            report.notes.append(f"audit log verified: {verdict.entries} entries")
