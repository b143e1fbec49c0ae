"""PostgreSQL's catalogue as clients expect it, laid over DuckDB's in a department's sandbox.

DuckDB ships a ``pg_catalog`` good enough for simple tools, but clients that reflect tables (psql's
``\\d``, SQLAlchemy for Superset, PgJDBC for DBeaver) need more: PostgreSQL's own type OIDs (DuckDB
gives its internal type ids, so a client's type cache maps ``varchar`` to ``int2``), tables DuckDB
lacks (pg_opclass, pg_policy, ...), and functions (pg_get_userbyid, ...). These objects live in
schema :data:`SHIM`, on the search path right after ``shared``: unqualified names find them first,
and everything else falls through to DuckDB's own pg_catalog. All the shim tables are empty: shared
tables have no sequences, indexes, policies or inheritance to show.
"""

from __future__ import annotations

SHIM = "pg_shim"
SEARCH_PATH = f"SET search_path = 'shared,{SHIM}'"

# (DuckDB type prefix, PostgreSQL oid, typname, format_type name, typlen, typcategory, array oid)
PG_TYPES = (
    ("BOOLEAN", 16, "bool", "boolean", 1, "B", 1000),
    ("SMALLINT", 21, "int2", "smallint", 2, "N", 1005),
    ("TINYINT", 21, "int2", "smallint", 2, "N", 1005),
    ("INTEGER", 23, "int4", "integer", 4, "N", 1007),
    ("BIGINT", 20, "int8", "bigint", 8, "N", 1016),
    ("HUGEINT", 1700, "numeric", "numeric", -1, "N", 1231),
    ("FLOAT", 700, "float4", "real", 4, "N", 1021),
    ("DOUBLE", 701, "float8", "double precision", 8, "N", 1022),
    ("DECIMAL", 1700, "numeric", "numeric", -1, "N", 1231),
    ("VARCHAR", 1043, "varchar", "character varying", -1, "S", 1015),
    ("BLOB", 17, "bytea", "bytea", -1, "U", 1001),
    ("DATE", 1082, "date", "date", 4, "D", 1182),
    ("TIMESTAMP WITH TIME ZONE", 1184, "timestamptz", "timestamp with time zone", 8, "D", 1185),
    ("TIMESTAMP", 1114, "timestamp", "timestamp without time zone", 8, "D", 1115),
    ("TIME", 1083, "time", "time without time zone", 8, "D", 1183),
    ("INTERVAL", 1186, "interval", "interval", 16, "T", 1187),
    ("JSON", 114, "json", "json", -1, "U", 199),
)
TEXT_OID = 25


def _type_oid_case(column: str) -> str:
    """SQL mapping a DuckDB ``data_type`` string to PostgreSQL's type oid (lists: text[]; else text)."""
    arms = " ".join(f"WHEN {column} LIKE '{prefix}%' THEN {oid}" for prefix, oid, *_ in PG_TYPES)
    return f"CASE WHEN {column} LIKE '%[]' THEN 1009 {arms} ELSE {TEXT_OID} END"


def _pg_type_rows() -> str:
    seen, rows = set(), []
    for _, oid, name, _, length, category, array in PG_TYPES + (("", TEXT_OID, "text", "text", -1, "S", 1009),):
        if oid in seen:
            continue
        seen.add(oid)
        rows.append(f"({oid}, '{name}', 11, 10, {length}, {str(length > 0).lower()}, 'b', '{category}', false, "
                    f"true, 44, 0, 0, 0, {array}, 0, 0, 0, 0, 0, 0, 0, 'i', 'p', 0, 0, -1, 0, 0, NULL, NULL, NULL)")
    rows.append(f"(1009, '_text', 11, 10, -1, false, 'b', 'A', false, true, 44, 0, 0, {TEXT_OID}, 0, 0, 0, 0, 0, "
                "0, 0, 0, 'i', 'x', 0, 0, -1, 0, 0, NULL, NULL, NULL)")
    return ", ".join(rows)


def _format_type_macro() -> str:
    seen, arms = set(), []
    for _, oid, _, display, *_ in PG_TYPES:
        if oid not in seen and oid != 1700:
            seen.add(oid)
            arms.append(f"WHEN {oid} THEN '{display}'")
    numeric = ("WHEN 1700 THEN CASE WHEN mod > 4 THEN 'numeric(' || ((mod - 4) >> 16) || ',' || ((mod - 4) & 65535)"
               " || ')' ELSE 'numeric' END")
    return (f"CREATE MACRO pg_format_type(oid, mod) AS CASE oid {' '.join(arms)} {numeric} WHEN 25 THEN 'text' "
            "WHEN 1009 THEN 'text[]' ELSE NULL END")


# pg_attribute as DuckDB defines it, with PostgreSQL's type oids and typmods
_PG_ATTRIBUTE = f"""CREATE VIEW {SHIM}.pg_attribute AS SELECT table_oid AS attrelid, column_name AS attname,
    {_type_oid_case('data_type')} AS atttypid, 0 AS attstattarget, -1 AS attlen, column_index AS attnum,
    0 AS attndims, -1 AS attcacheoff,
    CASE WHEN data_type LIKE 'DECIMAL%' THEN ((numeric_precision << 16) | numeric_scale) + 4 ELSE -1 END AS atttypmod,
    false AS attbyval, 'x' AS attstorage, 'i' AS attalign, NOT is_nullable AS attnotnull,
    column_default IS NOT NULL AS atthasdef, false AS atthasmissing, '' AS attidentity, '' AS attgenerated,
    false AS attisdropped, true AS attislocal, 0 AS attinhcount, 0 AS attcollation, NULL AS attcompression,
    NULL AS attacl, NULL AS attoptions, NULL AS attfdwoptions, NULL AS attmissingval FROM duckdb_columns()"""

STATEMENTS = (
    f"CREATE SCHEMA {SHIM}",
    _PG_ATTRIBUTE,
    f"CREATE TABLE {SHIM}.pg_type AS SELECT * FROM pg_catalog.pg_type LIMIT 0",
    f"INSERT INTO {SHIM}.pg_type VALUES {_pg_type_rows()}",
    _format_type_macro(),
    "CREATE MACRO to_regtype(name) AS NULL::INTEGER",  # psycopg looks up optional types (hstore)
    "CREATE MACRO to_regclass(name) AS NULL::INTEGER",
    "CREATE MACRO pg_get_serial_sequence(tbl, col) AS NULL::VARCHAR",
    "CREATE MACRO pg_get_indexdef(idx, col, pretty) AS NULL::VARCHAR",
    "CREATE MACRO pg_get_userbyid(oid) AS 'onesource'",
    "CREATE MACRO pg_relation_is_publishable(rel) AS false",
    "CREATE MACRO pg_get_expr3(expr, rel, pretty) AS NULL::VARCHAR",
    "CREATE MACRO pg_get_statisticsobjdef_columns(oid) AS NULL::VARCHAR",
    # PgJDBC's getPrimaryKeys: information_schema._pg_expandarray(indkey) -> rows (x, n)
    "CREATE MACRO _pg_expandarray(a) AS unnest(list_transform(range(1, len(a) + 1), i -> {'x': a[i], 'n': i}))",
    f"CREATE VIEW {SHIM}.pg_class AS SELECT *, false AS relforcerowsecurity FROM pg_catalog.pg_class",
    f"CREATE TABLE {SHIM}.pg_opclass (oid BIGINT, opcname VARCHAR, opcdefault BOOLEAN, opcmethod BIGINT)",
    f"CREATE TABLE {SHIM}.pg_inherits (inhrelid BIGINT, inhparent BIGINT, inhseqno INTEGER, inhdetachpending BOOLEAN)",
    f"CREATE TABLE {SHIM}.pg_range (rngtypid BIGINT, rngsubtype BIGINT)",
    f"CREATE TABLE {SHIM}.pg_collation (oid BIGINT, collname VARCHAR, collnamespace BIGINT)",
    f"CREATE TABLE {SHIM}.pg_policy (oid BIGINT, polname VARCHAR, polrelid BIGINT, polcmd VARCHAR, "
    "polpermissive BOOLEAN, polroles BIGINT[], polqual VARCHAR, polwithcheck VARCHAR)",
    f"CREATE TABLE {SHIM}.pg_statistic_ext (oid BIGINT, stxrelid BIGINT, stxname VARCHAR, stxnamespace BIGINT, "
    "stxkeys INTEGER[], stxkind VARCHAR[], stxstattarget INTEGER)",
    f"CREATE TABLE {SHIM}.pg_publication (oid BIGINT, pubname VARCHAR, puballtables BOOLEAN, pubinsert BOOLEAN, "
    "pubupdate BOOLEAN, pubdelete BOOLEAN, pubtruncate BOOLEAN, pubviaroot BOOLEAN)",
    f"CREATE TABLE {SHIM}.pg_publication_rel (oid BIGINT, prpubid BIGINT, prrelid BIGINT, prqual VARCHAR, "
    "prattrs INTEGER[])",
    f"CREATE TABLE {SHIM}.pg_publication_namespace (oid BIGINT, pnpubid BIGINT, pnnspid BIGINT)",
    f"CREATE TABLE {SHIM}.pg_trigger (oid BIGINT, tgrelid BIGINT, tgname VARCHAR, tgenabled VARCHAR, "
    "tgisinternal BOOLEAN, tgparentid BIGINT)",
    f"CREATE TABLE {SHIM}.pg_roles (oid BIGINT, rolname VARCHAR, rolsuper BOOLEAN)",
)
