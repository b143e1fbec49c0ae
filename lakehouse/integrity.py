"""Whether the lake's tables still have their data files.

DuckLake answers ``count(*)`` from the catalog alone, so a table whose Parquet files were deleted (by hand,
a bad restore, a disk fault) still looks published until a query reads it. :func:`missing_files` asks the
catalog which files each table's current snapshot reads (``ducklake_list_files``: data files and delete
files) and checks that each exists. Local data paths only: on object storage the files are the bucket's
(versioning is its safety net), and listing it is not this check's business.

>>> missing_files(lake)            # {"firms": ["/home/lake/data/shared/firms/ducklake-....parquet"]}
"""

from __future__ import annotations

import os

import duckdb

from core.duck import literal
from lakehouse.lake import CATALOG, SHARED, Lake, list_tables

REMEDY = ("Restore the home from its last backup (`onesource restore BACKUP --home NEW_FOLDER`, then point "
          "ONESOURCE_HOME at it; docs/deploy.md, \"Backup and restore\"); without one, ask the owning department to "
          "deliver the dataset again (its raw files are in the landing zone, but a file already published is not "
          "loaded twice)")
"""What to do about a table whose files are gone (one sentence, for every message that names such a table)."""


def all_schemas(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    """Every schema of the lake, as its catalog lists them: the zones (``shared``, ``quarantine``) and the
    ledger's (lakehouse.ledger)."""
    rows = con.execute("SELECT schema_name FROM information_schema.schemata WHERE catalog_name = ? ORDER BY 1",
                       [CATALOG]).fetchall()
    return tuple(name for (name,) in rows)


def checks_files(lake: Lake) -> bool:
    """Whether :func:`missing_files` can look at this lake's files (a local data path)."""
    return "://" not in lake.settings.data_path


def table_files(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[str]:
    """Every file the table's current snapshot reads: data files and delete files."""
    rows = con.execute(f"SELECT data_file, delete_file FROM ducklake_list_files({literal(CATALOG)}, "
                       f"{literal(table)}, schema => {literal(schema)})").fetchall()
    return [f for row in rows for f in row if f]


def missing_files(lake: Lake, schemas: tuple[str, ...] = (SHARED,),
                  tables: list[str] | None = None) -> dict[str, list[str]]:
    """Table -> its files that do not exist (only tables with some missing; ``schema.table`` outside
    ``shared``). Empty on object storage (see :func:`checks_files`)."""
    if not checks_files(lake):
        return {}
    out: dict[str, list[str]] = {}
    for schema in schemas:
        names = list_tables(lake.con, schema) if tables is None or schema != SHARED else tables
        for table in names:
            gone = [f for f in table_files(lake.con, schema, table) if not os.path.exists(f)]
            if gone:
                out[table if schema == SHARED else f"{schema}.{table}"] = gone
    return out


def damage_message(table: str, gone: list[str]) -> str:
    """One paragraph: which table, which file(s), and what to do."""
    more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
    return (f"table {table} is damaged: {len(gone)} of its data file(s) are missing ({gone[0]}{more}), so queries "
            f"of it fail and it is not published as it stands. {REMEDY}")
