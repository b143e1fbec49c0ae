"""A query's answer written out whole, chunk by chunk: Arrow IPC, Parquet, CSV and JSON.

The HTTP API streams these chunks as its response body (sharing.http) and the CLI writes them to a file or
stdout (``onesource sql --format ... --output FILE``). Each encoder is a generator of ``bytes`` that encodes
one Arrow batch (or one slice of rows) at a time, so a big answer never exists twice over as one encoded
document. Nothing is cut: every row of the :class:`~sharing.sql.QueryResult` is written.

* ``arrow``: the Arrow IPC *stream* format (``application/vnd.apache.arrow.stream``), read by
  ``pyarrow.ipc.open_stream(body).read_pandas()`` and ``polars.read_ipc_stream(body)`` (``pandas.read_feather``
  wants the IPC *file* format, which :func:`write` writes for a ``.arrow``/``.feather`` file).
* ``parquet``: one row group per batch (``application/vnd.apache.parquet``).
* ``csv``: a header line, then the rows (UTF-8).
* ``json``: ``{"columns": [...], "row_count": N, "rows": [[...], ...]}``, the HTTP API's JSON document; values
  that JSON has no type for (dates, decimals, ...) are given as text.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sharing.sql import QueryResult, python_rows

MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8",
               "arrow": "application/vnd.apache.arrow.stream", "parquet": "application/vnd.apache.parquet"}
FORMATS = tuple(MEDIA_TYPES)
SUFFIXES = {".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow", ".arrows": "arrow",
            ".csv": "csv", ".json": "json"}
JSON_ROWS = 10_000
"""Rows per chunk of a JSON or CSV body."""


class _Drain:
    """A write-only sink that hands over what was written since the last :meth:`take`, while ``tell`` keeps
    counting from the start (Parquet's footer records absolute offsets)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data) -> int:
        data = bytes(data)
        self._chunks.append(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def chunks(result: QueryResult, fmt: str) -> Iterator[bytes]:
    """``result`` encoded as ``fmt`` (one of :data:`FORMATS`), a chunk at a time."""
    return {"arrow": arrow_stream, "parquet": parquet, "csv": csv_text, "json": json_document}[fmt](result)


def arrow_stream(result: QueryResult) -> Iterator[bytes]:
    import pyarrow as pa

    sink = _Drain()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), result.schema) as writer:
        yield sink.take()
        for batch in result.batches():
            writer.write_batch(batch)
            yield sink.take()
    yield sink.take()


def parquet(result: QueryResult) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = _Drain()
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), result.schema) as writer:
        for batch in result.batches():
            if batch.num_rows:
                writer.write_batch(batch)
                yield sink.take()
    yield sink.take()


def _slices(result: QueryResult) -> Iterator[list[tuple[Any, ...]]]:
    """The rows as Python values, a slice at a time: from Arrow batch by batch (not all at once), or from
    the rows a result was built with."""
    rows = result.held_rows
    if rows is not None:
        for start in range(0, len(rows), JSON_ROWS):
            yield rows[start:start + JSON_ROWS]
        return
    for batch in result.batches():
        for start in range(0, batch.num_rows, JSON_ROWS):
            yield python_rows(batch.slice(start, JSON_ROWS), result.types)


def csv_text(result: QueryResult) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")  # LF, as psql and DuckDB write it; quoting stays RFC 4180
    writer.writerow(result.columns)
    for rows in _slices(result):
        writer.writerows(rows)
        yield buf.getvalue().encode("utf-8")
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue().encode("utf-8")


def json_value(value: Any) -> Any:
    """A value as JSON has it: null, booleans, numbers and text as they are; anything else (dates,
    decimals, lists, NaN) as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


def json_document(result: QueryResult) -> Iterator[bytes]:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    yield (f'{{"columns":{dumps(result.columns)},"row_count":{result.row_count},"rows":[').encode()
    first = True
    for rows in _slices(result):
        text = ",".join(dumps([json_value(v) for v in row]) for row in rows)
        if text:
            yield (text if first else "," + text).encode("utf-8")
            first = False
    yield b"]}"


def write(result: QueryResult, path: Path, fmt: str) -> None:
    """``result`` into the file ``path`` (written beside it, then renamed: a failed export leaves no half file).
    ``arrow`` is the IPC file format here (random access; ``pandas.read_feather``, ``polars.read_ipc``)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "wb") as out:
            if fmt == "arrow":
                import pyarrow as pa

                with pa.ipc.new_file(out, result.schema) as writer:
                    for batch in result.batches():
                        writer.write_batch(batch)
            else:
                for chunk in chunks(result, fmt):
                    out.write(chunk)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
