"""Output column names as PostgreSQL gives them (``FigureColname`` in parse_target.c).

A department's client expects PostgreSQL's names: ``count(*)`` is ``count``, ``1 + 1`` is ``?column?``,
``t.x`` is ``x``, ``CAST(1 AS bigint)`` is ``int8``, ``EXISTS (...)`` is ``exists``. DuckDB names an
expression by its text (``count_star()``, ``(x + 1)``), and a policy relation's text would show up in the
name of an expression over it. The planner therefore names every unnamed output column of the outermost
query with an explicit alias (``name_outputs``), so every endpoint gets PostgreSQL's names and duplicates
stay duplicates (``SELECT a, a``), as PostgreSQL sends them.

PostgreSQL's rules, with their strength (2: a name of the expression itself; 1: a fallback that an
outer node may replace; 0: none, ``?column?``):

* a column reference: its last field (2); a field selection ``(r).f``: the field (2); a subscript
  ``a[1]``: the name of ``a``
* a function call: the function's name as written (2): ``ceiling`` stays ``ceiling``, ``now()`` is ``now``;
  an aggregate with FILTER or OVER: its function's name; SQL-syntax functions by their catalog
  name: ``trim(...)`` is ``btrim``, ``position(a IN b)`` is ``position``
* a cast: the operand's name if it has a strong one, else the target type's name (1): ``x::text`` is
  ``x``, ``'1'::int`` is ``int4``, ``DATE '2020-01-01'`` is ``date``
* CASE: the ELSE result's strong name, else ``case`` (1)
* ``EXISTS (...)``: ``exists``; ``ARRAY[...]``: ``array``; ``ROW(...)``/``(a, b)``: ``row``; a scalar
  subquery: its single output column's name; ``COALESCE``/``GREATEST``/``LEAST``/``NULLIF``: their names
* SQL value keywords (``current_user``, ``current_date``, ...): the keyword (2)
* anything else (operators, literals, ``IN``, ``IS NULL``, ``NOT``, ...): ``?column?``

sqlglot normalises many function spellings (``ceiling`` -> CEIL, ``now()`` -> CURRENT_TIMESTAMP), so the name
as written is read back from the query text at the offsets sqlglot records for a call written
``name(...)``; a node without such offsets was written in SQL syntax (``EXTRACT(... FROM ...)``) or as an
operator (``a -> 'k'``, ``x ^ 2``), and is named by its class or ``?column?``.
"""

from __future__ import annotations

import re

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import TokenType

UNNAMED = "?column?"

_KEYWORDS: dict[type, str] = {
    exp.CurrentUser: "current_user", exp.SessionUser: "session_user", exp.CurrentCatalog: "current_catalog",
    exp.CurrentSchema: "current_schema", exp.CurrentTimestamp: "current_timestamp",
    exp.CurrentDate: "current_date", exp.CurrentTime: "current_time", exp.Localtimestamp: "localtimestamp",
    exp.Localtime: "localtime", exp.CurrentDatabase: "current_database", exp.CurrentVersion: "version",
}
"""Nodes for SQL value keywords (``current_date``) or calls sqlglot parses into them (``version()``)."""

_SPELLED: dict[type, tuple[str, ...]] = {
    exp.Extract: ("date_part", "datepart"),
    exp.GroupConcat: ("string_agg", "group_concat", "listagg"),
    exp.StrPosition: ("position", "strpos", "instr"),
    exp.CurrentTimestamp: ("now",),
}
"""Spellings of a call that sqlglot parses into a node whose ``sql_names()`` do not list them."""

_FIXED: dict[type, str] = {exp.Exists: "exists", exp.Array: "array", exp.Tuple: "row", exp.Coalesce: "coalesce",
                           exp.Greatest: "greatest", exp.Least: "least", exp.Nullif: "nullif",
                           exp.Interval: "interval"}
_FIXED_STRENGTH = {exp.Interval: 1}
"""``INTERVAL '1 day'`` is a cast of a literal to interval: the type's name, weak."""

_TYPES: dict[exp.DataType.Type, str] = {
    exp.DataType.Type.BIGINT: "int8", exp.DataType.Type.INT: "int4", exp.DataType.Type.SMALLINT: "int2",
    exp.DataType.Type.TINYINT: "int2", exp.DataType.Type.DOUBLE: "float8", exp.DataType.Type.FLOAT: "float4",
    exp.DataType.Type.DECIMAL: "numeric", exp.DataType.Type.VARCHAR: "varchar", exp.DataType.Type.NVARCHAR: "varchar",
    exp.DataType.Type.CHAR: "bpchar", exp.DataType.Type.NCHAR: "bpchar", exp.DataType.Type.TEXT: "text",
    exp.DataType.Type.BOOLEAN: "bool", exp.DataType.Type.DATE: "date", exp.DataType.Type.TIMESTAMP: "timestamp",
    exp.DataType.Type.TIMESTAMPTZ: "timestamptz", exp.DataType.Type.TIME: "time", exp.DataType.Type.TIMETZ: "timetz",
    exp.DataType.Type.INTERVAL: "interval", exp.DataType.Type.JSON: "json", exp.DataType.Type.JSONB: "jsonb",
    exp.DataType.Type.UUID: "uuid", exp.DataType.Type.VARBINARY: "bytea", exp.DataType.Type.BINARY: "bytea",
}
"""sqlglot type -> PostgreSQL's type name (``pg_type.typname``), what a cast of a literal is named."""


class Namer:
    """Names the output columns of queries parsed from ``sql`` (offsets refer to that text)."""

    def __init__(self, sql: str, dialect: str, root: exp.Expression):
        self.sql = sql
        self.dialect = dialect
        self.root = root
        self._calls: list[tuple[int, str]] | None = None
        self._spans: list[tuple[int, int, exp.Expression]] | None = None

    def name(self, node: exp.Expression) -> str:
        return self._figure(node)[0] or UNNAMED

    def _figure(self, node: exp.Expression) -> tuple[str | None, int]:
        if isinstance(node, exp.Alias):
            return node.alias, 2
        if isinstance(node, exp.Column):
            return (None, 0) if isinstance(node.this, exp.Star) else (node.name, 2)
        if isinstance(node, exp.Dot):
            return self._figure(node.expression)
        if isinstance(node, exp.Paren | exp.Collate | exp.Bracket):
            return self._figure(node.this)
        if isinstance(node, exp.Cast):  # TryCast too
            name, strength = self._figure(node.this)
            if strength > 1:
                return name, strength
            return _type_name(node.to), 1
        if isinstance(node, exp.Case):
            name, strength = self._figure(node.args["default"]) if node.args.get("default") else (None, 0)
            return (name, strength) if strength > 1 else ("case", 1)
        if isinstance(node, exp.Subquery):
            return self._subquery(node.this)
        if isinstance(node, exp.Window | exp.Filter | exp.WithinGroup | exp.IgnoreNulls | exp.RespectNulls):
            return self._figure(node.this)
        for kind, name in _KEYWORDS.items():
            if type(node) is kind:
                return self._written(node) or name, 2
        for kind, name in _FIXED.items():
            if type(node) is kind:
                return self._written(node) or name, _FIXED_STRENGTH.get(kind, 2)
        if isinstance(node, exp.Func | exp.Binary) and not isinstance(node, exp.Connector):
            written = self._written(node)  # mod(a, b) is a Binary node, as a % b is
            if written:
                return written, 2
            spelled = self._spelled(node) if isinstance(node, exp.Func) else None
            if spelled:
                return spelled, 2
        return None, 0

    def _subquery(self, query: exp.Expression) -> tuple[str | None, int]:
        """A scalar subquery is named by its (first) output column; a set operation by its left side."""
        while isinstance(query, exp.SetOperation):
            query = query.this
        if isinstance(query, exp.Subquery):
            return self._subquery(query.this)
        if isinstance(query, exp.Select) and query.expressions:
            return self._figure(query.expressions[0])[0] or UNNAMED, 2
        return UNNAMED, 2

    def _written(self, node: exp.Expression) -> str | None:
        """The function's name as the query wrote it, where sqlglot kept the offsets of ``name(``."""
        start, end = node.meta.get("start"), node.meta.get("end")
        if start is None or end is None:
            return None
        text = self.sql[start:end + 1]
        if not self.sql[end + 1:].lstrip().startswith("("):
            return None
        if text.startswith('"') and text.endswith('"'):
            return text[1:-1].replace('""', '"')
        return text.lower() if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", text) else None

    def _spelled(self, node: exp.Func) -> str | None:
        """A call sqlglot parsed without the name's offsets (its own parser for the function): the
        nearest ``name(`` before its first argument, among the spellings of its kind, and after
        everything of the query that precedes the call; None for an operator (``x ^ 2`` is a POW node)."""
        spellings = {n.lower() for n in type(node).sql_names()} | set(_SPELLED.get(type(node), ()))
        starts = [n.meta["start"] for n in node.walk() if n is not node and "start" in n.meta]
        if starts:
            inside = {id(n) for n in node.walk()}
            before = min(starts)
            after = max((end for _, end, n in self.spans() if end < before and id(n) not in inside), default=-1)
            # the nearest spelling of this kind: a call inside it may come first and have no offsets of its
            # own (substring((trim(s)) from 1 for 2): trim( lies between substring( and s)
            name = next((text for at, text in reversed(self.calls()) if after < at < before and text in spellings),
                        None)
        else:  # nothing inside has offsets (EXTRACT(year FROM current_date)): the query's one spelling of it
            written = {text for _, text in self.calls() if text in spellings}
            name = written.pop() if len(written) == 1 else None
        if name not in spellings:
            return None
        if isinstance(node, exp.Trim) and name == "trim":  # PostgreSQL's catalog names TRIM(...) so
            position = str(node.args.get("position") or "").upper()
            return {"LEADING": "ltrim", "TRAILING": "rtrim"}.get(position, "btrim")
        return name

    def calls(self) -> list[tuple[int, str]]:
        """(offset, lower-cased name) of every ``name(`` in the query text, from its tokens."""
        if self._calls is None:
            tokens = Dialect.get_or_raise(self.dialect).tokenize(self.sql)
            # a word before "(": an opening parenthesis before another, string_agg((s), ','), names nothing
            self._calls = [(a.start, a.text.lower()) for a, b in zip(tokens, tokens[1:], strict=False)
                           if b.token_type == TokenType.L_PAREN and a.token_type != TokenType.L_PAREN]
        return self._calls

    def spans(self) -> list[tuple[int, int, exp.Expression]]:
        """(start, end, node) of every node of the query with offsets in the text."""
        if self._spans is None:
            self._spans = [(n.meta["start"], n.meta["end"], n) for n in self.root.walk()
                           if "start" in n.meta and "end" in n.meta]
        return self._spans


def _type_name(to: exp.DataType) -> str:
    while to.this == exp.DataType.Type.ARRAY and to.expressions:  # int[] is named by its element type
        to = to.expressions[0]
    return _TYPES.get(to.this) or to.sql(dialect="postgres").split("(")[0].lower()


def _expands(node: exp.Expression) -> bool:
    """``*``, ``t.*``, ``* EXCLUDE (...)``, ``COLUMNS(...)``: DuckDB expands these into columns named
    after the relation's own; an alias would be refused or would rename them all alike."""
    if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
        return True
    return any(isinstance(n, exp.Columns) for n in node.walk(prune=lambda n: isinstance(n, exp.Query)))


def name_outputs(root: exp.Query, namer: Namer) -> list[str | None]:
    """Give every unnamed output column its PostgreSQL name as an alias: of the query, and of each query
    whose columns are read by name (a derived table, a CTE: ``SELECT s.count FROM (SELECT count(*) FROM t) s``
    works as in PostgreSQL, and ``SELECT * FROM (<query>) d`` is named as ``<query>`` is). Returns the query's
    names (``None`` for a star, whose columns keep the relation's names). A set operation's columns are
    named by its leftmost query, in PostgreSQL as in DuckDB."""
    for alias in root.find_all(exp.Alias, exp.TableAlias):  # PostgreSQL folds an unquoted name to lower case
        for ident in [alias.args.get("alias"), *(alias.args.get("columns") or [])]:
            if isinstance(ident, exp.Identifier) and not ident.quoted:
                ident.set("this", ident.this.lower())
    for select in [s for s in root.find_all(exp.Select) if _read_by_name(s, root)]:
        _name(select, namer)
    query: exp.Expression = root
    while isinstance(query, exp.SetOperation | exp.Subquery):
        query = query.this
    if not isinstance(query, exp.Select):
        return []
    return [None if _expands(node) else node.alias_or_name for node in query.expressions]


def _read_by_name(node: exp.Expression, root: exp.Expression) -> bool:
    """Whether the output names of ``node`` are seen: the query's own, a CTE's or a derived table's (not a
    scalar, EXISTS, IN or LATERAL subquery: those may be correlated, and an alias there could capture a
    reference to an outer column of that name)."""
    while node is not root:
        parent = node.parent
        if isinstance(parent, exp.CTE) or (isinstance(parent, exp.Subquery)
                                           and isinstance(parent.parent, exp.From | exp.Join)):
            return True  # a CTE, a derived table
        if not isinstance(parent, exp.SetOperation | exp.Subquery):
            return False
        node = parent  # a branch of a set operation, or parentheses: as the enclosing query
    return True


def _name(query: exp.Select, namer: Namer) -> None:
    named: list[exp.Expression] = []
    for node in query.expressions:
        if isinstance(node, exp.Alias | exp.Column) or _expands(node):  # DuckDB names t.x "x" too
            named.append(node)
        else:
            named.append(exp.alias_(node, exp.to_identifier(namer.name(node), quoted=True)))
    query.set("expressions", named)
