"""``onesource security rotate-keys``: a new audit key, and new encryption keys for an encrypted lake's files.

* **The audit key** (:attr:`Settings.audit_key_file`, outside the home): :meth:`sharing.audit.AuditLog.rotate_key`.
  The old key signs an entry naming the new key's fingerprint; later entries are signed with the new key;
  every key ever used stays in the keyring next to the key file (``<key file>.keyring``), so ``onesource
  audit verify`` checks the whole chain across rotations, and a backup (onesource.backup) carries the keyring
  with the key. Running servers take the new key on their next append (they see the rotation in the log).
  Rotating does not make a leaked old key harmless for the entries it signed (whoever holds it could re-sign
  them), but any rewrite of them breaks the link to the first entry signed with the new key.
* **The lake's keys** (``ONESOURCE_ENCRYPT``: DuckLake writes each data file with its own key, kept in the
  catalog): every table holding data files is rewritten, one commit per table (its rows copied, all deleted,
  inserted again), so that no *current* file is one written under an old key. The files of older snapshots
  stay as they are for time travel, with their old keys, until the lake's maintenance expires those snapshots
  (``ONESOURCE_SNAPSHOT_RETENTION_DAYS``, 180 by default, the ``onesource_maintenance`` DAG) and deletes the
  files. A lake that is not encrypted has no file keys: only the audit key is rotated, and the command says so.

Both are audited (kind ``security``): the audit key's rotation is its own entry; the lake's is an entry
before the rewrite (what will be rewritten) and one after (what was).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings
    from lakehouse.lake import Lake
    from sharing.audit import AuditLog


@dataclass
class LakeRotation:
    """What a rotation of the lake's keys did (``encrypted`` False: nothing, the lake has no file keys)."""

    encrypted: bool
    tables: list[str] = field(default_factory=list)
    files_before: int = 0
    files_after: int = 0
    rows: int = 0


def _current_files(lake: Lake) -> dict[str, int]:
    """``schema.table`` -> its current (not ended) data files, for every live table that has any."""
    from lakehouse.lake import CATALOG

    meta = f"__ducklake_metadata_{CATALOG}"
    rows = lake.con.execute(
        f"SELECT s.schema_name, t.table_name, count(*) FROM {meta}.ducklake_data_file f "
        f"JOIN {meta}.ducklake_table t ON t.table_id = f.table_id AND t.end_snapshot IS NULL "
        f"JOIN {meta}.ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL "
        "WHERE f.end_snapshot IS NULL GROUP BY ALL ORDER BY 1, 2").fetchall()
    return {f"{schema}.{table}": n for schema, table, n in rows}


def current_file_keys(lake: Lake) -> set[str]:
    """The encryption keys of every current data and delete file (what a rotation must leave none of)."""
    from lakehouse.lake import CATALOG

    meta = f"__ducklake_metadata_{CATALOG}"
    return {r[0] for r in lake.con.execute(
        f"SELECT encryption_key FROM {meta}.ducklake_data_file WHERE end_snapshot IS NULL AND encryption_key IS NOT NULL "
        f"UNION SELECT encryption_key FROM {meta}.ducklake_delete_file WHERE end_snapshot IS NULL "
        "AND encryption_key IS NOT NULL").fetchall()}


def rotate_lake_keys(lake: Lake, *, by: str, audit: AuditLog | None) -> LakeRotation:
    """Rewrite every table with data files, one commit each, so that each current file has a new key."""
    from lakehouse.lake import CATALOG, retrying

    if not lake.encrypted:
        return LakeRotation(encrypted=False)
    before = _current_files(lake)
    done = LakeRotation(encrypted=True, tables=sorted(before), files_before=sum(before.values()))
    if audit is not None:
        audit.append(kind="security", action="rotate-lake-keys", user=by, decision="admin", tables=done.tables,
                     files=done.files_before)
    for name in done.tables:
        schema, table = name.split(".", 1)
        target = f"{CATALOG}.{_quoted(schema)}.{_quoted(table)}"

        def rewrite(target: str = target, name: str = name) -> int:
            with lake.transaction() as con:
                # held in DuckDB's memory (spilling to its temp folder beyond the memory limit) for the commit
                con.execute(f"CREATE OR REPLACE TEMP TABLE onesource_rekey AS FROM {target}")
                con.execute(f"DELETE FROM {target}")
                con.execute(f"INSERT INTO {target} FROM onesource_rekey")
                n = con.execute("SELECT count(*) FROM onesource_rekey").fetchone()[0]
                con.execute("DROP TABLE onesource_rekey")
                lake.commit_message(f"rotate the file keys of {name}", {"by": by})
            return n

        done.rows += retrying(rewrite, lake.settings.commit_retries, f"rewriting {name} under new keys")
    done.files_after = sum(_current_files(lake).values())
    if audit is not None:
        audit.append(kind="security", action="rotated-lake-keys", user=by, decision="admin", tables=done.tables,
                     files=done.files_after, rows=done.rows)
    return done


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def add_commands(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("rotate-keys", help="rotate the audit key (the chain stays verifiable) and, when the lake "
                                               "is encrypted, rewrite its tables' files under new keys")
    p.add_argument("--reason", default="", help="why (kept in the audit log)")
    p.add_argument("--by", help="who acts (default: $USER)")
    p.add_argument("--audit-only", action="store_true", help="rotate the audit key only (the lake's files are "
                                                             "rewritten whole: on a large lake, plan for it)")
    p.set_defaults(security_fn=cmd_rotate_keys)


def cmd_rotate_keys(args: argparse.Namespace, settings: Settings) -> int:
    from contextlib import closing

    from lakehouse.lake import Lake
    from sharing.audit import AuditLog

    by = args.by or os.environ.get("USER") or "cli"
    with closing(AuditLog.of(settings)) as audit:
        old, new = audit.rotate_key(kind="security", user=by, decision="admin", reason=args.reason or None)
        print(f"audit key rotated: {old} -> {new} (the old key signed the entry naming the new one; both are in "
              f"the keyring {settings.audit_key_file}.keyring, which backups carry: keep it as private as the key)")
        if args.audit_only:
            return 0
        with Lake(settings.lake) as lake:
            done = rotate_lake_keys(lake, by=by, audit=audit)
    if not done.encrypted:
        print("the lake is not encrypted (ONESOURCE_ENCRYPT is off): its files have no keys to rotate; only the audit "
              "key was rotated")
        return 0
    print(f"lake keys rotated: {len(done.tables)} table(s) rewritten ({done.rows:,} rows; {done.files_before} current "
          f"file(s) before, {done.files_after} now, each under a new key). Older snapshots keep their files and old "
          "keys for time travel until maintenance expires them (ONESOURCE_SNAPSHOT_RETENTION_DAYS)")
    return 0
