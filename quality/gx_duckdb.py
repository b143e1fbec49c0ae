"""Great Expectations on DuckDB: validation runs as SQL inside DuckDB, next to the staged batch.

GX's SQL datasource fails on DuckDB with ``IndexError`` in every metric (GX issue #10738). The
cause: ``SqlAlchemyExecutionEngine.execute_query`` returns the cursor result *after* its ``with``
block has handed the connection back to the pool, and only then do callers ``fetchall()`` it.
Drivers that buffer rows client-side hide this; DuckDB discards a cursor's pending rows when the
connection is released, so GX reads zero rows. :func:`patch_gx_for_duckdb` fetches inside the
block (``Result.freeze()``), which is what every other dialect gets implicitly.

The batch is a GX query asset over ``read_parquet(<staged batch>)`` on an in-memory DuckDB; a
``__row`` column (1-based file row) lets GX name failing rows.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, cast

from quality import scratch

if TYPE_CHECKING:  # GX is imported where it is used (this module is on the validation's light top level)
    import sqlalchemy as sa
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.data_context.data_context.abstract_data_context import AbstractDataContext
    from great_expectations.datasource.fluent.sql_datasource import SQLDatasource
    from great_expectations.execution_engine.sqlalchemy_execution_engine import SqlAlchemyExecutionEngine

ROW = "__row"


def _replace(owner: object, name: str, value: object) -> None:
    """Monkeypatch ``owner.name`` with ``value``: GX's fixes below replace what its own declarations call
    a method or a module's private import, on purpose."""
    setattr(owner, name, value)


@functools.cache
def patch_gx_for_duckdb() -> None:
    from great_expectations.execution_engine.sqlalchemy_execution_engine import SqlAlchemyExecutionEngine

    def execute_query(self: SqlAlchemyExecutionEngine, query: sa.Selectable | sa.TextClause) -> sa.Result[Any]:
        with self.get_connection() as connection:
            scratch.install(connection)  # the key of an encrypted lake's scratch files (quality.scratch)
            result = self._execute_query_with_recovery(connection, query)
            rows: sa.Result[Any] = result.freeze()()  # rows fetched while the connection is still ours
            return rows

    _replace(SqlAlchemyExecutionEngine, "execute_query", execute_query)
    _literal_index_queries()


def _literal_index_queries() -> None:
    """GX's *unexpected index query* (every failing row of a check, quality.marks) as runnable SQL.
    GX renders its parameters by recognising the driver's placeholder style; DuckDB's (``$1``) it does
    not know, so a bound value (the duplicate count of the uniqueness query) was left as ``$1``. DuckDB
    takes every literal SQLAlchemy renders, so the query is compiled with ``literal_binds``."""
    from great_expectations.expectations.metrics.column_map_metrics import column_values_unique
    from great_expectations.expectations.metrics.map_metric_provider import map_condition_auxilliary_methods
    from great_expectations.expectations.metrics.util import sqlalchemy_select_to_sql_string as original

    # both modules import GX's function from metrics.util: their copies are replaced, the original kept

    def to_sql(engine: SqlAlchemyExecutionEngine, select_statement: sa.Select[Any]) -> str:
        try:
            return str(select_statement.compile(engine.engine, compile_kwargs={"literal_binds": True})) + ";"
        except Exception:  # noqa: BLE001 - a value SQLAlchemy cannot render literally: GX's own way
            return original(engine, select_statement)

    for module in (map_condition_auxilliary_methods, column_values_unique):
        _replace(module, "sqlalchemy_select_to_sql_string", to_sql)


def batch_query(path: str) -> str:
    quoted = path.replace("'", "''")
    return (f"SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS {ROW} "
            f"FROM read_parquet('{quoted}', file_row_number = true)")


def duckdb_source(context: AbstractDataContext, name: str = "onesource_duckdb") -> SQLDatasource:
    """The context's DuckDB SQL datasource (created once; GX's duckdb:// URL needs duckdb-engine)."""
    try:
        return cast("SQLDatasource", context.data_sources.get(name))  # the one add_sql made below
    except (KeyError, ValueError, LookupError):
        return context.data_sources.add_sql(name, connection_string="duckdb:///:memory:")


def forget_assets(source: SQLDatasource, names: list[str]) -> None:
    """Remove these query assets from the datasource. Each load adds its dataset's asset (pointing at its
    staged batch) and must remove it after its run: a file context writes every asset into its
    ``great_expectations.yml`` and GX re-reads that file dozens of times a validation, so with one asset
    kept per dataset each load got slower than the one before (at 2,000 datasets: a small load's median
    1.8 s over the first 100 loads of a city's day, 3.6 s by the 300th; bench/cityday.py)."""
    for name in names:
        try:
            source.delete_asset(name)
        except (KeyError, ValueError, LookupError):
            pass


def batch_definition(source: SQLDatasource, asset_name: str, path: str) -> BatchDefinition[Any]:
    """A whole-table batch of the staged Parquet file, re-pointed at this batch on every load."""
    try:
        source.delete_asset(asset_name)
    except (KeyError, ValueError, LookupError):
        pass
    asset = source.add_query_asset(asset_name, query=batch_query(path))
    return asset.add_batch_definition_whole_table("staged_batch")
