"""Scratch Parquet files of a validation that hold sensitive values, encrypted when the lake is.

A reference check reads the authority's published keys (resident IDs, credit codes) from a Parquet
file that the load writes under its staging folder and removes when the load ends. In an encrypted
lake that file is encrypted too (DuckDB's Parquet modular encryption, AES-GCM, footer and columns),
with a key made for this process and held only in its memory: nothing on disk can read it, and a
file left behind by a crash is noise. The writer (the load's lake connection, which has httpfs's
crypto module loaded in an encrypted lake) and the readers (GX's SQL on its own DuckDB connections,
which get the key from :func:`install`) are this one process.

Encrypted files end in :data:`ENCRYPTED_SUFFIX`; :func:`reader` reads either kind.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any


def literal(text: str) -> str:
    """A SQL string literal (core.duck's, without importing DuckDB: the DAG files import quality)."""
    return "'" + text.replace("'", "''") + "'"


KEY_NAME = "onesource_scratch"
ENCRYPTED_SUFFIX = ".enc.parquet"

_key: str | None = None


def _process_key() -> str:
    global _key
    if _key is None:
        _key = base64.b64encode(secrets.token_bytes(32)).decode()  # AES-256, never written anywhere
    return _key


def has_key() -> bool:
    """Whether this process made a scratch key (so some scratch file may be encrypted with it)."""
    return _key is not None


def add_key(con: Any) -> None:
    """Give a DuckDB connection (or cursor) the process's scratch key."""
    con.execute(f"PRAGMA add_parquet_key({literal(KEY_NAME)}, {literal(_process_key())})")


def write_options(encrypted: bool) -> str:
    """COPY options for a scratch file (after :func:`add_key` on the writing connection when encrypted)."""
    return "FORMAT parquet" + (f", ENCRYPTION_CONFIG {{footer_key: {literal(KEY_NAME)}}}" if encrypted else "")


def path_for(folder: Any, stem: str, encrypted: bool) -> Any:
    return folder / f"{stem}{ENCRYPTED_SUFFIX if encrypted else '.parquet'}"


def is_encrypted(path: str) -> bool:
    return str(path).endswith(ENCRYPTED_SUFFIX)


def reader(path: str) -> str:
    """The table expression that reads a scratch file (the key comes from the connection: :func:`install`)."""
    options = f", encryption_config = {{footer_key: {literal(KEY_NAME)}}}" if is_encrypted(path) else ""
    return f"read_parquet({literal(str(path))}{options})"


def install(connection: Any) -> None:
    """On a SQLAlchemy connection to DuckDB (GX's): add the scratch key once per DBAPI connection, if this
    process has made one (GX's SQL engine keeps one in-memory DuckDB per thread)."""
    if _key is None or connection.info.get(KEY_NAME) == _key:
        return
    connection.exec_driver_sql(f"PRAGMA add_parquet_key({literal(KEY_NAME)}, {literal(_key)})")
    connection.info[KEY_NAME] = _key


def first_column(path: str) -> list[Any]:
    """The first column's values of a scratch file (the pandas engine's path)."""
    if not is_encrypted(path):
        import pyarrow.parquet as pq

        values: list[Any] = pq.read_table(path).column(0).to_pylist()
        return values
    import duckdb

    con = duckdb.connect()
    try:
        add_key(con)
        return [r[0] for r in con.execute(f"SELECT * FROM {reader(path)}").fetchall()]
    finally:
        con.close()
