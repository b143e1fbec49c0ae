"""Bound parameters: their types (declared by the client, or inferred from the query as PostgreSQL
does), and the literals they become so that the governed engine plans, and the audit records, one
complete statement. sqlglot writes every literal, quoting and all: a value cannot become SQL."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable
from typing import Any

import sqlglot
from sqlglot import exp

from sharing.exceptions import QueryRefused
from sharing.pgwire import types as t

MAX_PARAMETERS = 65_535
"""PostgreSQL's limit on a statement's parameters (Bind counts them in 16 bits)."""


class NoSuchParameter(QueryRefused):
    """``$n`` beyond what a statement can be bound with."""

    sqlstate = "42P02"  # undefined_parameter

_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.Is, exp.NullSafeEQ,
                exp.NullSafeNEQ)


def parse(sql: str) -> exp.Expression | None:
    try:
        return sqlglot.parse_one(sql, read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return None


def _index(node: exp.Expression) -> int | None:
    """``$n``'s n - 1, or None for a node that is no positional parameter."""
    if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return int(node.this.this) - 1
    return None


def bind(sql: str, params: list) -> str:
    """``sql`` with ``$1, $2, ...`` replaced by ``params`` as literals (sharing.engine binds with it)."""
    tree = parse(sql)
    if tree is None:
        return sql  # the engine refuses it with the parse error

    def put(node: exp.Expression) -> exp.Expression:
        index = _index(node)
        if index is None:
            return node
        if not 0 <= index < len(params):
            raise ValueError(f"the query uses ${index + 1} but {len(params)} parameter(s) were bound")
        return literal(params[index])

    return tree.transform(put).sql(dialect="postgres")


def _cast(text: str, duck_type: str) -> exp.Expression:
    return exp.Cast(this=exp.Literal.string(text), to=exp.DataType.build(duck_type, dialect="duckdb"))


def literal(value: Any) -> exp.Expression:
    """The SQL literal of one parameter value (its Python type says its SQL type)."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, t.Json):
        return _cast(str(value), "JSON")
    if isinstance(value, t.Typed):
        return _cast(str(value), value.duck_type)
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):
        return _cast(repr(value), "DOUBLE")  # a bare 0.1 would be a DECIMAL in DuckDB (and PostgreSQL)
    if isinstance(value, decimal.Decimal):
        if value.is_finite() and -1000 <= value.as_tuple().exponent and value.adjusted() < 1000:
            return exp.Literal.number(format(value, "f"))
        # written out in full, 1e999999999 would be a billion digits: DuckDB reads so long a number as a
        # DOUBLE anyway (its DECIMAL holds 38 digits), so the short form is cast to one
        return _cast(str(value), "DOUBLE")
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return _cast(value.astimezone(dt.UTC).isoformat(sep=" "), "TIMESTAMPTZ")
        return _cast(value.isoformat(sep=" "), "TIMESTAMP")
    if isinstance(value, dt.date):
        return _cast(value.isoformat(), "DATE")
    if isinstance(value, dt.time):
        return _cast(value.isoformat(), "TIME")
    if isinstance(value, dt.timedelta):
        return _cast(f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds", "INTERVAL")
    if isinstance(value, uuid.UUID):
        return _cast(str(value), "UUID")
    if isinstance(value, bytes | bytearray | memoryview):
        return _cast("".join(f"\\x{b:02x}" for b in bytes(value)), "BLOB")
    if isinstance(value, list | tuple):
        return exp.Array(expressions=[literal(v) for v in value])
    return exp.Literal.string(str(value))


def null_of(oid: int) -> exp.Expression:
    """A NULL of parameter type ``oid``: what a parameter stands for when a statement is only described."""
    element = t.ELEMENT_OF.get(oid)
    duck = (t.DUCK_TYPE.get(element, "VARCHAR") + "[]") if element else t.DUCK_TYPE.get(oid, "VARCHAR")
    return exp.Cast(this=exp.Null(), to=exp.DataType.build(duck, dialect="duckdb"))


def with_nulls(sql: str, oids: list[int]) -> str:
    """``sql`` with each parameter a NULL of its type (to learn the result's columns without values)."""
    tree = parse(sql)
    if tree is None:
        return sql

    def put(node: exp.Expression) -> exp.Expression:
        index = _index(node)
        if index is None:
            return node
        return null_of(oids[index] if 0 <= index < len(oids) else t.TEXT)

    return tree.transform(put).sql(dialect="postgres")


def no_rows(sql: str) -> str:
    """``sql`` asking for no row (``LIMIT 0``): its columns without running it through (a SELECT's own
    limit replaced; another query wrapped); anything else (EXPLAIN, SHOW) as it is."""
    if sql.lstrip()[:7].upper() in ("EXPLAIN", "SHOW ") or sql.lstrip()[:4].upper() == "SHOW":
        return sql
    tree = parse(sql)
    if isinstance(tree, exp.Select):
        return tree.limit(0).sql(dialect="postgres")
    if isinstance(tree, exp.Query):
        return f"SELECT * FROM ({tree.sql(dialect='postgres')}) AS described LIMIT 0"
    return sql


def parameter_types(sql: str, declared: list[int], column_type: Callable[[str | None, str], int | None]) -> list[int]:
    """The type of each parameter: as declared in Parse, else inferred as PostgreSQL would from where it
    stands (a cast, LIMIT, a comparison with a column, ``= ANY``), else text. ``column_type(table, column)``
    answers a column's type oid, or None when the department cannot see it."""
    tree = parse(sql)
    count = len(declared)
    inferred: dict[int, int] = {}
    if tree is not None:
        tables = [tb.name for tb in tree.find_all(exp.Table) if tb.name]
        for node in tree.find_all(exp.Parameter):
            index = _index(node)
            if index is None:
                continue
            if not 0 <= index < MAX_PARAMETERS:  # the list of types below has $n entries: $2000000000 was 16 GB
                raise NoSuchParameter(f"there is no parameter ${index + 1} (at most ${MAX_PARAMETERS})")
            count = max(count, index + 1)
            guess = _infer(node, tables, column_type)
            if guess is not None:
                inferred.setdefault(index, guess)
    return [declared[i] if i < len(declared) and declared[i] else inferred.get(i, t.TEXT) for i in range(count)]


def _infer(node: exp.Expression, tables: list[str], column_type: Callable[[str | None, str], int | None]) -> int | None:
    parent = node.parent
    array = False
    while isinstance(parent, exp.Paren):
        parent = parent.parent
    if isinstance(parent, exp.Cast):
        return t.oid_of_sqlglot(parent.to)
    if isinstance(parent, exp.Limit | exp.Offset):
        return t.INT8
    if isinstance(parent, exp.Any | exp.All):
        array, parent = True, parent.parent
    if isinstance(parent, (*_COMPARISONS, exp.In, exp.Between)):
        for side in parent.iter_expressions():
            if isinstance(side, exp.Column):
                found = _column(side, tables, column_type)
                if found is not None:
                    return t.ARRAY_OF.get(found, 1009) if array else found
    return 1009 if array else None


def _column(col: exp.Column, tables: list[str], column_type: Callable[[str | None, str], int | None]) -> int | None:
    for table in ([col.table] if col.table and col.table in tables else tables):
        found = column_type(table, col.name)
        if found is not None:
            return found
    return None
