"""Shared tables read straight from their Parquet files, where that reads exactly what DuckLake would.

A scan of a DuckLake table asks the catalog database for the table's files on every query: on a small
table that metadata read is most of a governed query's cost (about 7 ms of CPU against 1 ms for
``read_parquet`` of the same file, a 4,400-row table). The servers therefore resolve each table's files once
per catalog commit (the engine's stamp) and plan ``read_parquet([...])`` in the policy relation instead of
``lake.shared.<table>``. The planner's relation wraps it exactly as it wraps the table (columns, masks, row
filter), and :func:`sharing.policy.verify` admits a file scan only when its list is, value for value, the
one resolved here for a dataset the query reads.

Resolved only when the files alone are the table, else ``None`` (DuckLake's own scan is used):

* no delete files, no encrypted files, a local data folder, every file under it;
* every file's columns (names, types, order) are the table's (a renamed or added column maps by field id
  in DuckLake, by name in ``read_parquet``);
* every file's Parquet field ids are the table's column ids (a column dropped and added again by the same
  name and type: DuckLake reads NULL from the older files, ``read_parquet`` the dropped values);
* the files' row count is the table's (rows inlined in the catalog database are in no file).

Data files are never rewritten in place (each has a unique name), so a file's schema is cached by path.
Maintenance deletes a file only after a grace period past the commit that stopped referencing it, longer
than a stamp lives.
"""

from __future__ import annotations

import os
import threading

import duckdb

CATALOG, SCHEMA = "lake", "shared"


class FileScans:
    """Per stamp, each shared table's Parquet files (or ``None``: read it through DuckLake)."""

    def __init__(self, data_path: str):
        self.data_path = data_path
        self._lock = threading.Lock()
        self._tables: dict[str, tuple[object, tuple[str, ...] | None]] = {}
        self._schemas: dict[str, tuple] = {}

    def resolver(self, con: duckdb.DuckDBPyConnection, stamp: object):
        """``files(dataset)`` as of ``stamp``, read on ``con`` (the slot, in its pinned snapshot)."""
        def files(dataset: str) -> tuple[str, ...] | None:
            hit = self._tables.get(dataset)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            found = self._resolve(con, dataset)
            with self._lock:
                self._tables[dataset] = (stamp, found)
            return found
        return files

    def _resolve(self, con: duckdb.DuckDBPyConnection, dataset: str) -> tuple[str, ...] | None:
        if "://" in self.data_path or not os.path.isabs(self.data_path):
            return None  # object storage: DuckLake holds the credentials and knows the layout
        try:
            rows = con.execute(f"SELECT data_file, delete_file, data_file_encryption_key FROM "
                               f"ducklake_list_files('{CATALOG}', ?, schema => '{SCHEMA}')", [dataset]).fetchall()
            if not rows or any(delete or key for _, delete, key in rows):
                return None
            files = tuple(sorted(data for data, _, _ in rows))
            root = os.path.join(os.path.realpath(self.data_path), "")
            if any(not os.path.realpath(f).startswith(root) for f in files):
                return None
            table = tuple((r[0], r[1]) for r in con.execute(
                f'DESCRIBE "{CATALOG}"."{SCHEMA}"."{dataset}"').fetchall())
            ids = _column_ids(con, dataset)
            if ids is None or any(self._schema(con, f) != (table, ids) for f in files):
                return None
            expected = con.execute(f'SELECT count(*) FROM "{CATALOG}"."{SCHEMA}"."{dataset}"').fetchone()[0]
            counted = con.execute("SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata(?)",
                                  [list(files)]).fetchone()[0]
        except duckdb.Error:
            return None  # whatever DuckLake can read, it reads itself
        return files if counted == expected else None

    def _schema(self, con: duckdb.DuckDBPyConnection, path: str):
        """A file's columns (names and types, in order) and their Parquet field ids."""
        hit = self._schemas.get(path)
        if hit is None:
            columns = tuple((r[0], r[1]) for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [path]).fetchall())
            ids = tuple((r[0], r[1]) for r in con.execute(
                "SELECT name, field_id FROM parquet_schema(?) WHERE field_id IS NOT NULL", [path]).fetchall())
            hit = (columns, ids)
            with self._lock:
                if len(self._schemas) > 65536:
                    self._schemas.clear()
                self._schemas[path] = hit
        return hit


def _column_ids(con: duckdb.DuckDBPyConnection, dataset: str) -> tuple[tuple[str, int], ...] | None:
    """The table's columns by name with DuckLake's column ids, in order (the Parquet field ids DuckLake maps a
    file's columns by); None where a column is nested (its fields' ids are not compared here). A column
    dropped and added again under the same name and type has a new id: DuckLake reads it as NULL from the
    files written before, ``read_parquet`` by name would read the dropped column's values."""
    meta = f"__ducklake_metadata_{CATALOG}"
    [snapshot] = con.execute(f"SELECT id FROM {CATALOG}.current_snapshot()").fetchone()  # the one ``con`` reads
    live = " AND ".join(f"{x}.begin_snapshot <= $s AND ({x}.end_snapshot IS NULL OR {x}.end_snapshot > $s)"
                        for x in ("c", "t", "s"))
    rows = con.execute(
        f"SELECT c.column_name, c.column_id, c.parent_column FROM {meta}.ducklake_column c "
        f"JOIN {meta}.ducklake_table t USING (table_id) JOIN {meta}.ducklake_schema s USING (schema_id) "
        f"WHERE s.schema_name = $schema AND t.table_name = $table AND {live} ORDER BY c.column_order",
        {"schema": SCHEMA, "table": dataset, "s": snapshot}).fetchall()
    if not rows or any(parent is not None for _, _, parent in rows):
        return None
    return tuple((name, column_id) for name, column_id, _ in rows)
