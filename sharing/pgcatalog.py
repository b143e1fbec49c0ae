"""PostgreSQL 15's catalog as a department sees it: built from what it may read, and nothing else.

psql's ``\\d`` family, PgJDBC's DatabaseMetaData (DBeaver), SQLAlchemy's inspector (Superset, pandas) and
``information_schema`` queries all ask ``pg_catalog``. In a department's sandbox (sharing.visible_catalog) every
relation of PostgreSQL 15's ``pg_catalog`` and ``information_schema`` exists with PostgreSQL's own columns
(sharing.pgcatalog_pg15), in schemas of their own (:data:`PG`, :data:`INFO`) that the catalog rewriter
points every catalog table to. Most are empty: shared tables have no indexes, sequences, policies or
triggers to show. The ones with rows are views over two small fact tables (:data:`FACTS`) holding the
department's granted tables and columns with the registry's Chinese titles as comments, plus constant rows
(PostgreSQL's type oids, the one database ``onesource``, the schemas ``shared``, ``pg_catalog`` and
``information_schema``). The signed-in user is a per-cursor variable (``SET VARIABLE``), so one sandbox
serves every user of a department while ``\\du`` and ``current_user`` show each their own name.

DuckDB's own catalog (its ``pg_catalog``, ``information_schema``, ``duckdb_*``) is never what answers:
a name the rewriter does not map is an error, as an unknown relation is in PostgreSQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sharing.pgcatalog_pg15 import RELATIONS

PG = "os_pg_catalog"
"""Schema of the ``pg_catalog`` shims and of the functions clients call (first on the search path)."""
INFO = "os_information_schema"
FACTS = "os_facts"
SEARCH_PATH = f"SET search_path = 'shared,{PG}'"
USER_VARIABLE = "onesource_user"
"""The sandbox cursor's variable holding the signed-in user's name."""

DATABASE = "onesource"
SCHEMA = "shared"
PLATFORM_ROLE = "onesource"
"""Owner of the database, the schemas and the shared tables (the platform publishes them)."""
SERVER_VERSION = "15.0"
"""The PostgreSQL version the catalog is shaped like (its relations and columns are PostgreSQL 15's)."""
VERSION = (f"PostgreSQL {SERVER_VERSION} (OneSource governed endpoint) on x86_64-pc-linux-gnu, "
           "compiled by OneSource on DuckDB, 64-bit")

# oids as PostgreSQL gives them to its bootstrap objects; the department's own start at FIRST_OID
NS_PG_CATALOG, NS_SHARED, NS_INFORMATION_SCHEMA = 11, 2200, 13000
PLATFORM_OID, DATABASE_OID, USER_OID = 10, 16384, 16385
FIRST_OID = 16400
CLASS_OID = 1259  # pg_class: the classoid of a table's comment in pg_description
SYSTEM_RELATIONS = {
    "pg_type": 1247, "pg_attribute": 1249, "pg_proc": 1255, "pg_class": 1259, "pg_authid": 1260,
    "pg_database": 1262, "pg_tablespace": 1213, "pg_am": 2601, "pg_attrdef": 2604, "pg_cast": 2605,
    "pg_constraint": 2606, "pg_description": 2609, "pg_index": 2610, "pg_inherits": 2611, "pg_language": 2612,
    "pg_namespace": 2615, "pg_opclass": 2616, "pg_operator": 2617, "pg_rewrite": 2618, "pg_trigger": 2620,
    "pg_sequence": 2224, "pg_extension": 3079, "pg_policy": 3256, "pg_collation": 3456, "pg_enum": 3501,
}

# PostgreSQL 15's types (oid, typname, typlen, typbyval, typcategory, typelem, typarray, typinput,
# typcollation, typalign, typstorage): what clients cache and what format_type names
PG_TYPES = (
    (16, "bool", 1, True, "B", 0, 1000, "boolin", 0, "c", "p"),
    (17, "bytea", -1, False, "U", 0, 1001, "byteain", 0, "i", "x"),
    (18, "char", 1, True, "Z", 0, 1002, "charin", 0, "c", "p"),
    (19, "name", 64, False, "S", 18, 1003, "namein", 950, "c", "p"),
    (20, "int8", 8, True, "N", 0, 1016, "int8in", 0, "d", "p"),
    (21, "int2", 2, True, "N", 0, 1005, "int2in", 0, "s", "p"),
    (22, "int2vector", -1, False, "A", 21, 1006, "int2vectorin", 0, "i", "p"),
    (23, "int4", 4, True, "N", 0, 1007, "int4in", 0, "i", "p"),
    (24, "regproc", 4, True, "N", 0, 1008, "regprocin", 0, "i", "p"),
    (25, "text", -1, False, "S", 0, 1009, "textin", 100, "i", "x"),
    (26, "oid", 4, True, "N", 0, 1028, "oidin", 0, "i", "p"),
    (28, "xid", 4, True, "U", 0, 1011, "xidin", 0, "i", "p"),
    (30, "oidvector", -1, False, "A", 26, 1013, "oidvectorin", 0, "i", "p"),
    (114, "json", -1, False, "U", 0, 199, "json_in", 0, "i", "x"),
    (142, "xml", -1, False, "U", 0, 143, "xml_in", 0, "i", "x"),
    (199, "_json", -1, False, "A", 114, 0, "array_in", 0, "i", "x"),
    (700, "float4", 4, True, "N", 0, 1021, "float4in", 0, "i", "p"),
    (701, "float8", 8, True, "N", 0, 1022, "float8in", 0, "d", "p"),
    (790, "money", 8, True, "N", 0, 791, "cash_in", 0, "d", "p"),
    (869, "inet", -1, False, "I", 0, 1041, "inet_in", 0, "i", "m"),
    (1000, "_bool", -1, False, "A", 16, 0, "array_in", 0, "i", "x"),
    (1001, "_bytea", -1, False, "A", 17, 0, "array_in", 0, "i", "x"),
    (1002, "_char", -1, False, "A", 18, 0, "array_in", 0, "i", "x"),
    (1003, "_name", -1, False, "A", 19, 0, "array_in", 950, "i", "x"),
    (1005, "_int2", -1, False, "A", 21, 0, "array_in", 0, "i", "x"),
    (1007, "_int4", -1, False, "A", 23, 0, "array_in", 0, "i", "x"),
    (1009, "_text", -1, False, "A", 25, 0, "array_in", 100, "i", "x"),
    (1014, "_bpchar", -1, False, "A", 1042, 0, "array_in", 100, "i", "x"),
    (1015, "_varchar", -1, False, "A", 1043, 0, "array_in", 100, "i", "x"),
    (1016, "_int8", -1, False, "A", 20, 0, "array_in", 0, "d", "x"),
    (1021, "_float4", -1, False, "A", 700, 0, "array_in", 0, "i", "x"),
    (1022, "_float8", -1, False, "A", 701, 0, "array_in", 0, "d", "x"),
    (1028, "_oid", -1, False, "A", 26, 0, "array_in", 0, "i", "x"),
    (1042, "bpchar", -1, False, "S", 0, 1014, "bpcharin", 100, "i", "x"),
    (1043, "varchar", -1, False, "S", 0, 1015, "varcharin", 100, "i", "x"),
    (1082, "date", 4, True, "D", 0, 1182, "date_in", 0, "i", "p"),
    (1083, "time", 8, True, "D", 0, 1183, "time_in", 0, "d", "p"),
    (1114, "timestamp", 8, True, "D", 0, 1115, "timestamp_in", 0, "d", "p"),
    (1115, "_timestamp", -1, False, "A", 1114, 0, "array_in", 0, "d", "x"),
    (1182, "_date", -1, False, "A", 1082, 0, "array_in", 0, "i", "x"),
    (1183, "_time", -1, False, "A", 1083, 0, "array_in", 0, "d", "x"),
    (1184, "timestamptz", 8, True, "D", 0, 1185, "timestamptz_in", 0, "d", "p"),
    (1185, "_timestamptz", -1, False, "A", 1184, 0, "array_in", 0, "d", "x"),
    (1186, "interval", 16, False, "T", 0, 1187, "interval_in", 0, "d", "p"),
    (1187, "_interval", -1, False, "A", 1186, 0, "array_in", 0, "d", "x"),
    (1231, "_numeric", -1, False, "A", 1700, 0, "array_in", 0, "i", "x"),
    (1266, "timetz", 12, False, "D", 0, 1270, "timetz_in", 0, "d", "p"),
    (1560, "bit", -1, False, "V", 0, 1561, "bit_in", 0, "i", "x"),
    (1562, "varbit", -1, False, "V", 0, 1563, "varbit_in", 0, "i", "x"),
    (1700, "numeric", -1, False, "N", 0, 1231, "numeric_in", 0, "i", "m"),
    (2205, "regclass", 4, True, "N", 0, 2210, "regclassin", 0, "i", "p"),
    (2206, "regtype", 4, True, "N", 0, 2211, "regtypein", 0, "i", "p"),
    (2950, "uuid", 16, False, "U", 0, 2951, "uuid_in", 0, "c", "p"),
    (2951, "_uuid", -1, False, "A", 2950, 0, "array_in", 0, "i", "x"),
    (3802, "jsonb", -1, False, "U", 0, 3807, "jsonb_in", 0, "i", "x"),
    (3807, "_jsonb", -1, False, "A", 3802, 0, "array_in", 0, "i", "x"),
)
# format_type's names (PostgreSQL's SQL-standard spellings), also information_schema.columns.data_type
TYPE_DISPLAY = {
    16: "boolean", 18: '"char"', 20: "bigint", 21: "smallint", 23: "integer", 700: "real", 701: "double precision",
    1042: "character", 1043: "character varying", 1083: "time without time zone",
    1114: "timestamp without time zone", 1184: "timestamp with time zone", 1266: "time with time zone",
    1560: "bit", 1562: "bit varying",
}


@dataclass(frozen=True)
class ColumnFact:
    """A column the department may read: its DuckDB type and the registry's Chinese title (its comment)."""

    name: str
    duck_type: str
    comment: str | None = None


@dataclass(frozen=True)
class TableFact:
    """A shared table the department may read: the dataset's Chinese title and its granted columns."""

    name: str
    comment: str | None
    columns: tuple[ColumnFact, ...]


def pg_type(duck_type: str) -> tuple[int, int]:
    """PostgreSQL's (type oid, typmod) for a DuckDB column type; a type with no counterpart is text."""
    t = duck_type.upper().strip()
    if t.endswith("[]"):
        element = pg_type(t[:-2])[0]
        return next((row[6] for row in PG_TYPES if row[0] == element and row[6]), 1009), -1
    if t.startswith(("DECIMAL", "NUMERIC")):
        digits = t[t.find("(") + 1:t.find(")")].split(",") if "(" in t else []
        if len(digits) == 2:
            return 1700, ((int(digits[0]) << 16) | int(digits[1])) + 4
        return 1700, -1
    simple = {"BOOLEAN": 16, "TINYINT": 21, "SMALLINT": 21, "INTEGER": 23, "BIGINT": 20, "HUGEINT": 1700,
              "UTINYINT": 21, "USMALLINT": 23, "UINTEGER": 20, "UBIGINT": 1700, "FLOAT": 700, "REAL": 700,
              "DOUBLE": 701, "VARCHAR": 1043, "BLOB": 17, "DATE": 1082, "TIME": 1083, "TIMESTAMP": 1114,
              "TIMESTAMP WITH TIME ZONE": 1184, "TIMESTAMPTZ": 1184, "INTERVAL": 1186, "UUID": 2950, "JSON": 114}
    return simple.get(t, 25), -1


def _q(text: str | None) -> str:
    return "NULL" if text is None else "'" + text.replace("'", "''") + "'"


def facts_statements(tables: list[TableFact]) -> list[str]:
    """The fact tables every catalog view reads: the department's tables (oids in name order) and columns."""
    statements = [
        f"CREATE SCHEMA {FACTS}",
        f"CREATE TABLE {FACTS}.tables (oid BIGINT, name VARCHAR, comment VARCHAR, columns SMALLINT)",
        f"CREATE TABLE {FACTS}.columns (attrelid BIGINT, relname VARCHAR, attnum SMALLINT, name VARCHAR, "
        "duck_type VARCHAR, typid BIGINT, typmod INTEGER, comment VARCHAR)",
        f"CREATE TABLE {FACTS}.relations (oid BIGINT, name VARCHAR)",
        f"INSERT INTO {FACTS}.relations VALUES " + ", ".join(f"({o}, '{n}')" for n, o in SYSTEM_RELATIONS.items()),
    ]
    table_rows, column_rows = [], []
    for i, table in enumerate(sorted(tables, key=lambda t: t.name)):
        oid = FIRST_OID + i
        table_rows.append(f"({oid}, {_q(table.name)}, {_q(table.comment)}, {len(table.columns)})")
        for number, column in enumerate(table.columns, start=1):
            typid, typmod = pg_type(column.duck_type)
            column_rows.append(f"({oid}, {_q(table.name)}, {number}, {_q(column.name)}, {_q(column.duck_type)}, "
                               f"{typid}, {typmod}, {_q(column.comment)})")
    if table_rows:
        statements.append(f"INSERT INTO {FACTS}.tables VALUES {', '.join(table_rows)}")
        statements.append(f"INSERT INTO {FACTS}.relations SELECT oid, name FROM {FACTS}.tables")
    if column_rows:
        statements.append(f"INSERT INTO {FACTS}.columns VALUES {', '.join(column_rows)}")
    return statements


def _values(rows: list[tuple], names: str) -> str:
    body = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)
    return f"(VALUES {body}) v({names})"


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return _q(str(value))


_USER = f"getvariable('{USER_VARIABLE}')"
_NAMESPACES = [(NS_PG_CATALOG, "pg_catalog"), (NS_SHARED, SCHEMA), (NS_INFORMATION_SCHEMA, "information_schema")]
_TEXT_TYPES = "(1043, 25, 1042, 19)"
_SELECT_PRIVILEGE = "upper(p) SIMILAR TO '.*(SELECT|USAGE|CONNECT|MEMBER).*'"
_RELATION_MATCH = ("(x.{oid} = TRY_CAST(o AS BIGINT) OR x.{name} = regexp_replace(replace(CAST(o AS VARCHAR), '\"', ''), "
                   "'^(pg_catalog|shared)\\.', ''))")
_COLUMN_PRIVILEGE = (
    f"CASE WHEN NOT ({_SELECT_PRIVILEGE}) THEN false "
    f"WHEN EXISTS (SELECT 1 FROM {FACTS}.columns x WHERE {_RELATION_MATCH.format(oid='attrelid', name='relname')} "
    "AND (x.name = CAST(c AS VARCHAR) OR CAST(x.attnum AS VARCHAR) = CAST(c AS VARCHAR))) THEN true "
    f"WHEN EXISTS (SELECT 1 FROM {FACTS}.tables x WHERE {_RELATION_MATCH.format(oid='oid', name='name')}) THEN false "
    f"ELSE EXISTS (SELECT 1 FROM {FACTS}.relations x WHERE {_RELATION_MATCH.format(oid='oid', name='name')}) END")
"""has_column_privilege: true for a granted column (the catalog holds no other) or a system relation's."""

# The relations with rows: (FROM clause, column -> expression); a column not named is NULL, false or 0
# as its type suggests (see _default). Everything here is derived from FACTS or constants.
FILLED: dict[str, tuple[str, dict[str, str]]] = {
    "pg_catalog.pg_namespace": (_values(_NAMESPACES, "oid, nspname"),
                                {"oid": "oid", "nspname": "nspname", "nspowner": str(PLATFORM_OID)}),
    "pg_catalog.pg_class": (f"{FACTS}.tables t", {
        "oid": "t.oid", "relname": "t.name", "relnamespace": str(NS_SHARED), "relowner": str(PLATFORM_OID),
        "relam": "2", "reltuples": "-1", "relpersistence": "'p'", "relkind": "'r'", "relnatts": "t.columns",
        "relispopulated": "true", "relreplident": "'d'", "reltype": "0",
        "relacl": f"['=r/{PLATFORM_ROLE}']",  # SELECT for every user of the sandbox's department (PUBLIC)
        # PostgreSQL's NULL || array is the array (psql's \d+ appends the toast options); DuckDB's is NULL
        "reloptions": "[]"}),
    "pg_catalog.pg_attribute": (f"{FACTS}.columns c", {
        "attrelid": "c.attrelid", "attname": "c.name", "atttypid": "c.typid", "attstattarget": "-1",
        "attlen": f"(SELECT typlen FROM {PG}.pg_type WHERE oid = c.typid)", "attnum": "c.attnum",
        "attndims": "0", "attcacheoff": "-1", "atttypmod": "c.typmod",
        "attbyval": f"coalesce((SELECT typbyval FROM {PG}.pg_type WHERE oid = c.typid), false)",
        "attalign": f"(SELECT typalign FROM {PG}.pg_type WHERE oid = c.typid)",
        "attstorage": f"(SELECT typstorage FROM {PG}.pg_type WHERE oid = c.typid)",
        "attcompression": "''", "attidentity": "''",
        "attgenerated": "''", "attislocal": "true", "attcollation": f"CASE WHEN c.typid IN {_TEXT_TYPES} "
        "THEN 100 ELSE 0 END"}),
    "pg_catalog.pg_description": (
        f"(SELECT oid AS objoid, 0 AS objsubid, comment FROM {FACTS}.tables UNION ALL "
        f"SELECT attrelid, attnum, comment FROM {FACTS}.columns) d WHERE d.comment IS NOT NULL",
        {"objoid": "d.objoid", "classoid": str(CLASS_OID), "objsubid": "d.objsubid", "description": "d.comment"}),
    "pg_catalog.pg_type": (_values([r[:11] for r in PG_TYPES], "oid, typname, typlen, typbyval, typcategory, typelem, "
                                   "typarray, typinput, typcollation, typalign, typstorage"), {
        "oid": "oid", "typname": "typname", "typnamespace": str(NS_PG_CATALOG), "typowner": str(PLATFORM_OID),
        "typlen": "typlen", "typbyval": "typbyval", "typtype": "'b'", "typcategory": "typcategory",
        "typispreferred": "typname IN ('bool', 'text', 'float8', 'oid', 'timestamptz', 'interval')",
        "typisdefined": "true", "typdelim": "','", "typelem": "typelem", "typarray": "typarray",
        "typinput": "typinput", "typoutput": "replace(typinput, 'in', 'out')", "typreceive": "'-'",
        "typsend": "'-'", "typmodin": "'-'", "typmodout": "'-'", "typanalyze": "'-'", "typalign": "typalign",
        "typstorage": "typstorage", "typtypmod": "-1", "typcollation": "typcollation"}),
    "pg_catalog.pg_database": (_values([(DATABASE_OID, DATABASE)], "oid, datname"), {
        "oid": "oid", "datname": "datname", "datdba": str(PLATFORM_OID), "encoding": "6",
        "datlocprovider": "'c'", "datallowconn": "true", "datconnlimit": "-1", "dattablespace": "1663",
        "datcollate": "'C.UTF-8'", "datctype": "'C.UTF-8'"}),
    "pg_catalog.pg_roles": ("(SELECT 1)", {
        "rolname": _USER, "rolinherit": "true", "rolcanlogin": "true", "rolconnlimit": "-1",
        "rolpassword": "'********'", "oid": str(USER_OID)}),
    "pg_catalog.pg_authid": ("(SELECT 1)", {
        "oid": str(USER_OID), "rolname": _USER, "rolinherit": "true", "rolcanlogin": "true", "rolconnlimit": "-1"}),
    "pg_catalog.pg_user": ("(SELECT 1)", {"usename": _USER, "usesysid": str(USER_OID), "passwd": "'********'"}),
    "pg_catalog.pg_shadow": ("(SELECT 1)", {"usename": _USER, "usesysid": str(USER_OID)}),
    "pg_catalog.pg_am": (_values([(2, "heap", "t"), (403, "btree", "i"), (405, "hash", "i")], "oid, amname, amtype"),
                         {"oid": "oid", "amname": "amname", "amtype": "amtype"}),
    "pg_catalog.pg_tablespace": (_values([(1663, "pg_default"), (1664, "pg_global")], "oid, spcname"),
                                 {"oid": "oid", "spcname": "spcname", "spcowner": str(PLATFORM_OID)}),
    "pg_catalog.pg_collation": (_values([(100, "default", "d"), (950, "C", "c"), (951, "POSIX", "c")],
                                        "oid, collname, collprovider"), {
        "oid": "oid", "collname": "collname", "collnamespace": str(NS_PG_CATALOG), "collowner": str(PLATFORM_OID),
        "collprovider": "collprovider", "collisdeterministic": "true", "collencoding": "-1"}),
    "pg_catalog.pg_language": (_values([(12, "internal"), (13, "c"), (14, "sql")], "oid, lanname"),
                               {"oid": "oid", "lanname": "lanname", "lanowner": str(PLATFORM_OID)}),
    "pg_catalog.pg_tables": (f"{FACTS}.tables t", {
        "schemaname": f"'{SCHEMA}'", "tablename": "t.name", "tableowner": f"'{PLATFORM_ROLE}'"}),
    "information_schema.information_schema_catalog_name": ("(SELECT 1)", {"catalog_name": f"'{DATABASE}'"}),
    "information_schema.schemata": (_values(_NAMESPACES, "oid, nspname"), {
        "catalog_name": f"'{DATABASE}'", "schema_name": "nspname", "schema_owner": f"'{PLATFORM_ROLE}'"}),
    "information_schema.tables": (f"{FACTS}.tables t", {
        "table_catalog": f"'{DATABASE}'", "table_schema": f"'{SCHEMA}'", "table_name": "t.name",
        "table_type": "'BASE TABLE'", "is_insertable_into": "'NO'", "is_typed": "'NO'"}),
    "information_schema.columns": (f"{FACTS}.columns c", {
        "table_catalog": f"'{DATABASE}'", "table_schema": f"'{SCHEMA}'", "table_name": "c.relname",
        "column_name": "c.name", "ordinal_position": "c.attnum", "is_nullable": "'YES'",
        "data_type": f"{PG}.pg_info_type(c.typid)",
        "numeric_precision": "CASE c.typid WHEN 21 THEN 16 WHEN 23 THEN 32 WHEN 20 THEN 64 WHEN 700 THEN 24 "
                             "WHEN 701 THEN 53 WHEN 1700 THEN CASE WHEN c.typmod > 4 THEN (c.typmod - 4) >> 16 END END",
        "numeric_precision_radix": "CASE WHEN c.typid IN (21, 23, 20, 700, 701) THEN 2 WHEN c.typid = 1700 THEN 10 END",
        "numeric_scale": "CASE WHEN c.typid IN (21, 23, 20) THEN 0 WHEN c.typid = 1700 AND c.typmod > 4 "
                         "THEN (c.typmod - 4) & 65535 END",
        "udt_catalog": f"'{DATABASE}'", "udt_schema": "'pg_catalog'",
        "udt_name": f"(SELECT typname FROM {PG}.pg_type WHERE oid = c.typid)", "dtd_identifier": "c.attnum::VARCHAR",
        "is_self_referencing": "'NO'", "is_identity": "'NO'", "identity_cycle": "'NO'", "is_generated": "'NEVER'",
        "is_updatable": "'NO'"}),
    "information_schema.table_privileges": (f"{FACTS}.tables t", {
        "grantor": f"'{PLATFORM_ROLE}'", "grantee": _USER, "table_catalog": f"'{DATABASE}'",
        "table_schema": f"'{SCHEMA}'", "table_name": "t.name", "privilege_type": "'SELECT'",
        "is_grantable": "'NO'", "with_hierarchy": "'YES'"}),
    "information_schema.role_table_grants": (f"{FACTS}.tables t", {
        "grantor": f"'{PLATFORM_ROLE}'", "grantee": _USER, "table_catalog": f"'{DATABASE}'",
        "table_schema": f"'{SCHEMA}'", "table_name": "t.name", "privilege_type": "'SELECT'",
        "is_grantable": "'NO'", "with_hierarchy": "'YES'"}),
    "information_schema.column_privileges": (f"{FACTS}.columns c", {
        "grantor": f"'{PLATFORM_ROLE}'", "grantee": _USER, "table_catalog": f"'{DATABASE}'",
        "table_schema": f"'{SCHEMA}'", "table_name": "c.relname", "column_name": "c.name",
        "privilege_type": "'SELECT'", "is_grantable": "'NO'"}),
    "information_schema.enabled_roles": ("(SELECT 1)", {"role_name": _USER}),
}
FILLED["information_schema.role_column_grants"] = FILLED["information_schema.column_privileges"]


def _settings_relation(settings: dict[str, str]) -> tuple[str, dict[str, str]]:
    rows = [(name, value) for name, value in sorted(settings.items()) if " " not in name]
    return _values(rows, "name, setting"), {
        "name": "name", "setting": "setting", "category": "'Client Connection Defaults'", "context": "'user'",
        "vartype": "'string'", "source": "'default'", "boot_val": "setting", "reset_val": "setting",
        "pending_restart": "false"}


def _default(duck_type: str) -> str:
    if duck_type == "BOOLEAN":
        return "false"
    if duck_type in ("SMALLINT", "INTEGER", "BIGINT", "FLOAT", "DOUBLE"):
        return "0"
    return "NULL"


def columns_of(relation: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a PostgreSQL 15 catalog relation (``pg_catalog.pg_class``)."""
    return [tuple(part.rsplit(" ", 1)) for part in RELATIONS[relation].split(", ")]


def definition(relation: str, settings: dict[str, str]) -> str:
    """The statement that makes ``relation`` (``pg_catalog.x`` or ``information_schema.x``) in a sandbox:
    a view over the facts when it has rows for the department, else an empty table with its columns."""
    schema, name = relation.split(".", 1)
    target = f'{PG if schema == "pg_catalog" else INFO}."{name}"'
    filled = _settings_relation(settings) if relation == "pg_catalog.pg_settings" else FILLED.get(relation)
    columns = columns_of(relation)
    if filled is None:
        return f"CREATE TABLE IF NOT EXISTS {target} ({', '.join(f'{n} {t}' for n, t in columns)})"
    source, exprs = filled
    select = ", ".join(f"CAST({exprs.get(n, _default(t))} AS {t}) AS {n}" for n, t in columns)
    # rows that name the signed-in user are a view (the user is the cursor's); the others are computed
    # once: a table is planned and read far faster than a view over VALUES and subqueries (10x for the
    # questions PgJDBC and SQLAlchemy ask about columns)
    kind = "VIEW" if _USER in select else "TABLE"
    return f"CREATE {kind} IF NOT EXISTS {target} AS SELECT {select} FROM {source}"


def _format_type_macro() -> str:
    seen, arms = set(), []
    for oid, name, *_ in PG_TYPES:
        if oid not in seen and oid != 1700:
            seen.add(oid)
            shown = TYPE_DISPLAY.get(oid) or (f"{TYPE_DISPLAY.get(_element(oid), _name(_element(oid)))}[]"
                                              if name.startswith("_") else name)
            arms.append(f"WHEN {oid} THEN {_q(shown)}")
    numeric = ("WHEN 1700 THEN CASE WHEN typmod > 4 THEN 'numeric(' || ((typmod - 4) >> 16) || ',' || "
               "((typmod - 4) & 65535) || ')' ELSE 'numeric' END")
    return (f"CREATE MACRO {PG}.format_type(oid, typmod) AS CASE oid {' '.join(arms)} {numeric} "
            "ELSE CASE WHEN oid IS NULL THEN NULL ELSE '???' END END")


def _element(array_oid: int) -> int:
    return next(row[5] for row in PG_TYPES if row[0] == array_oid)


def _name(oid: int) -> str:
    return next(row[1] for row in PG_TYPES if row[0] == oid)


def _info_type_macro() -> str:
    """information_schema.columns.data_type: the SQL name, 'ARRAY' for arrays, the udt name otherwise."""
    arms = " ".join(f"WHEN {oid} THEN {_q(shown)}" for oid, shown in TYPE_DISPLAY.items())
    return (f"CREATE MACRO {PG}.pg_info_type(a_oid) AS CASE a_oid {arms} WHEN 1700 THEN 'numeric' ELSE CASE WHEN "
            f"(SELECT typcategory FROM {PG}.pg_type t WHERE t.oid = a_oid) = 'A' THEN 'ARRAY' ELSE "
            f"(SELECT typname FROM {PG}.pg_type t WHERE t.oid = a_oid) END END")


def macros(settings: dict[str, str]) -> dict[str, str]:
    """PostgreSQL's catalog functions, answered from the facts: name -> its CREATE MACRO (in schema
    :data:`PG`, on the search path before DuckDB's own functions of the same names)."""
    made = {}
    for statement in _macro_statements(settings):
        name = re.match(rf"CREATE MACRO {PG}\.(\w+)", statement).group(1)
        made[name] = statement
    return made


_REFERENCE = re.compile(rf"\b({PG}|{INFO})\.\"?(\w+)")


def requirements(statement: str, functions: set[str]) -> set[str]:
    """What a view or macro statement reads that must exist first: ``pg_catalog.x`` relations and ``fn:x``
    functions (``functions``: the macros' names), each made in a sandbox only when first needed."""
    found = set()
    for schema, name in _REFERENCE.findall(statement):
        relation = f"{'pg_catalog' if schema == PG else 'information_schema'}.{name}"
        if relation in RELATIONS:
            found.add(relation)
        elif name in functions:
            found.add(f"fn:{name}")
    return found


def _macro_statements(settings: dict[str, str]) -> list[str]:
    table_comment = f"(SELECT t.comment FROM {FACTS}.tables t WHERE t.oid = a_oid)"
    column_comment = f"(SELECT c.comment FROM {FACTS}.columns c WHERE c.attrelid = a_oid AND c.attnum = a_attnum)"
    cases = " ".join(f"WHEN {_q(k)} THEN {_q(v)}" for k, v in settings.items())
    no = "CAST(NULL AS VARCHAR)"
    relation_oid = (f"(SELECT oid FROM {FACTS}.relations r WHERE r.name = regexp_replace(replace(a_name, '\"', ''), "
                    "'^(pg_catalog|shared)\\.', '') LIMIT 1)")
    return [
        _format_type_macro(),
        _info_type_macro(),
        f"CREATE MACRO {PG}.pg_get_userbyid(oid) AS CASE WHEN oid = {USER_OID} THEN {_USER} WHEN oid IS NULL "
        f"THEN NULL ELSE '{PLATFORM_ROLE}' END",
        f"CREATE MACRO {PG}.obj_description(a_oid) AS {table_comment}, "
        f"(a_oid, catalog) AS CASE WHEN catalog = 'pg_class' THEN {table_comment} END",
        f"CREATE MACRO {PG}.col_description(a_oid, a_attnum) AS {column_comment}",
        f"CREATE MACRO {PG}.shobj_description(oid, catalog) AS {no}",
        f"CREATE MACRO {PG}.pg_encoding_to_char(encoding) AS CASE WHEN encoding = 6 THEN 'UTF8' ELSE '' END",
        f"CREATE MACRO {PG}.pg_char_to_encoding(name) AS CASE WHEN upper(name) IN ('UTF8', 'UTF-8') THEN 6 "
        "ELSE -1 END",
        f"CREATE MACRO {PG}.pg_encoding_max_length(encoding) AS 4",
        # the sandbox's tables are empty stand-ins: their sizes would say nothing true
        *(f"CREATE MACRO {PG}.{f}(oid) AS CAST(NULL AS BIGINT)" for f in
          ("pg_table_size", "pg_total_relation_size", "pg_relation_size", "pg_indexes_size",
           "pg_database_size", "pg_tablespace_size")),
        f"CREATE MACRO {PG}.pg_size_pretty(bytes) AS CASE WHEN bytes IS NULL THEN NULL WHEN abs(bytes) < 10240 "
        "THEN bytes || ' bytes' WHEN abs(bytes) < 10485760 THEN round(bytes / 1024) || ' kB' "
        "WHEN abs(bytes) < 10737418240 THEN round(bytes / 1048576) || ' MB' ELSE round(bytes / 1073741824) || ' GB' END",
        *(f"CREATE MACRO {PG}.{f}(oid) AS {no}" for f in
          ("pg_get_function_result", "pg_get_function_arguments", "pg_get_function_identity_arguments",
           "pg_get_function_sqlbody", "pg_get_functiondef", "pg_get_triggerdef", "pg_get_ruledef",
           "pg_get_partkeydef", "pg_get_statisticsobjdef_columns", "pg_get_statisticsobjdef")),
        f"CREATE MACRO {PG}.pg_get_expr(expr, rel) AS {no}, (expr, rel, pretty) AS {no}",
        f"CREATE MACRO {PG}.pg_get_constraintdef(oid) AS {no}, (oid, pretty) AS {no}",
        f"CREATE MACRO {PG}.pg_get_indexdef(oid) AS {no}, (oid, col, pretty) AS {no}",
        f"CREATE MACRO {PG}.pg_get_viewdef(oid) AS {no}, (oid, pretty) AS {no}",
        f"CREATE MACRO {PG}.pg_get_serial_sequence(tbl, col) AS {no}",
        f"CREATE MACRO {PG}.pg_tablespace_location(oid) AS ''",
        f"CREATE MACRO {PG}.pg_relation_is_publishable(rel) AS false",
        f"CREATE MACRO {PG}.pg_is_other_temp_schema(oid) AS false",
        f"CREATE MACRO {PG}.pg_my_temp_schema() AS 0",
        f"CREATE MACRO {PG}.pg_is_in_recovery() AS false",
        f"CREATE MACRO {PG}.pg_backend_pid() AS 0",
        f"CREATE MACRO {PG}.pg_postmaster_start_time() AS CAST(NULL AS TIMESTAMPTZ)",
        f"CREATE MACRO {PG}.pg_jit_available() AS false",
        *(f"CREATE MACRO {PG}.{f}(oid) AS true" for f in
          ("pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible", "pg_collation_is_visible",
           "pg_opclass_is_visible", "pg_operator_is_visible", "pg_conversion_is_visible",
           "pg_ts_config_is_visible", "pg_ts_parser_is_visible", "pg_ts_dict_is_visible",
           "pg_ts_template_is_visible", "pg_statistics_obj_is_visible")),
        # what a department may do: read (SELECT, USAGE of the schema, CONNECT to the database), nothing else
        *(f"CREATE MACRO {PG}.{f}(o, p) AS {_SELECT_PRIVILEGE}, (u, o, p) AS {_SELECT_PRIVILEGE}" for f in
          ("has_table_privilege", "has_schema_privilege", "has_database_privilege", "has_any_column_privilege",
           "has_sequence_privilege", "has_function_privilege", "has_tablespace_privilege", "has_type_privilege")),
        # a column: one of the department's granted columns (the only ones its catalog has); any column of
        # a system relation; an ungranted or unknown column of a shared table is not readable
        f"CREATE MACRO {PG}.has_column_privilege(o, c, p) AS {_COLUMN_PRIVILEGE}, "
        f"(u, o, c, p) AS {_COLUMN_PRIVILEGE}",
        f"CREATE MACRO {PG}.pg_has_role(r, p) AS r IN ({_USER}, {USER_OID}), (u, r, p) AS r IN ({_USER}, {USER_OID})",
        f"CREATE MACRO {PG}.current_schemas(implicit) AS CASE WHEN implicit THEN ['pg_catalog', '{SCHEMA}'] "
        f"ELSE ['{SCHEMA}'] END",
        f"CREATE MACRO {PG}.current_setting(name) AS CASE lower(name) {cases} ELSE NULL END, "
        f"(name, missing_ok) AS CASE lower(name) {cases} ELSE NULL END",
        f"CREATE MACRO {PG}.array_upper(a, dim) AS CASE WHEN dim = 1 AND len(a) > 0 THEN len(a) END",
        f"CREATE MACRO {PG}.array_lower(a, dim) AS CASE WHEN dim = 1 AND len(a) > 0 THEN 1 END",
        f"CREATE MACRO {PG}.quote_ident(s) AS CASE WHEN regexp_full_match(s, '[a-z_][a-z0-9_$]*') THEN s "
        "ELSE '\"' || replace(s, '\"', '\"\"') || '\"' END",
        # the object-identifier types: a name becomes its oid (regclass 'x'), an oid its name (x::regclass)
        f"CREATE MACRO {PG}.os_regclass(a_name) AS {relation_oid}",
        f"CREATE MACRO {PG}.to_regclass(a_name) AS {relation_oid}",
        f"CREATE MACRO {PG}.os_regclass_name(a_oid) AS coalesce((SELECT r.name FROM {FACTS}.relations r "
        "WHERE r.oid = a_oid LIMIT 1), CAST(a_oid AS VARCHAR))",
        f"CREATE MACRO {PG}.os_regtype(a_name) AS (SELECT t.oid FROM {PG}.pg_type t WHERE t.typname = "
        f"regexp_replace(a_name, '^pg_catalog\\.', '') OR {PG}.format_type(t.oid, NULL) = a_name LIMIT 1)",
        f"CREATE MACRO {PG}.to_regtype(a_name) AS {PG}.os_regtype(a_name)",
        f"CREATE MACRO {PG}.os_regnamespace(a_name) AS (SELECT n.oid FROM {PG}.pg_namespace n WHERE n.nspname = a_name)",
        f"CREATE MACRO {PG}.to_regnamespace(a_name) AS {PG}.os_regnamespace(a_name)",
        f"CREATE MACRO {PG}.os_regnamespace_name(a_oid) AS coalesce((SELECT n.nspname FROM {PG}.pg_namespace n "
        "WHERE n.oid = a_oid), CAST(a_oid AS VARCHAR))",
        f"CREATE MACRO {PG}.os_regrole(name) AS CASE WHEN name = {_USER} THEN {USER_OID} WHEN name = "
        f"'{PLATFORM_ROLE}' THEN {PLATFORM_OID} END",
        f"CREATE MACRO {PG}.to_regrole(name) AS {PG}.os_regrole(name)",
        f"CREATE MACRO {PG}.to_regproc(name) AS {no}",
        f"CREATE MACRO {PG}.to_regprocedure(name) AS {no}",
        # PgJDBC's getPrimaryKeys and getIndexInfo: (information_schema._pg_expandarray(indkey)).x / .n, a
        # set-returning function in the select list (unnest in DuckDB)
        f"CREATE MACRO {PG}._pg_expandarray(a) AS unnest(list_transform(range(1, len(a) + 1), "
        "i -> {'x': a[i], 'n': i}))",
        f"CREATE MACRO {PG}.getdatabaseencoding() AS 'UTF8'",
        f"CREATE MACRO {PG}.pg_get_keywords() AS TABLE SELECT * FROM (VALUES ('', '', '')) v(word, catcode, catdesc) "
        "WHERE false",
    ]


CATALOG_FUNCTIONS = frozenset("""
format_type pg_info_type pg_get_userbyid obj_description col_description shobj_description pg_encoding_to_char
pg_char_to_encoding pg_encoding_max_length pg_table_size pg_total_relation_size pg_relation_size pg_indexes_size
pg_database_size pg_tablespace_size pg_size_pretty pg_get_function_result pg_get_function_arguments
pg_get_function_identity_arguments pg_get_function_sqlbody pg_get_functiondef pg_get_triggerdef pg_get_ruledef
pg_get_partkeydef pg_get_statisticsobjdef_columns pg_get_statisticsobjdef pg_get_expr pg_get_constraintdef
pg_get_indexdef pg_get_viewdef pg_get_serial_sequence pg_tablespace_location pg_relation_is_publishable
pg_is_other_temp_schema pg_my_temp_schema pg_is_in_recovery pg_backend_pid pg_postmaster_start_time
pg_jit_available pg_table_is_visible pg_type_is_visible pg_function_is_visible pg_collation_is_visible
pg_opclass_is_visible pg_operator_is_visible pg_conversion_is_visible pg_ts_config_is_visible
pg_statistics_obj_is_visible has_table_privilege has_schema_privilege has_database_privilege
has_any_column_privilege has_sequence_privilege has_function_privilege has_tablespace_privilege
has_type_privilege has_column_privilege pg_has_role current_schemas current_setting array_upper array_lower
quote_ident os_regclass to_regclass os_regclass_name os_regtype to_regtype os_regnamespace to_regnamespace
os_regnamespace_name os_regrole to_regrole to_regproc to_regprocedure _pg_expandarray pg_get_keywords
getdatabaseencoding pg_ts_parser_is_visible pg_ts_dict_is_visible pg_ts_template_is_visible
""".split())
"""The functions of :func:`macro_statements`: what a catalog question may call besides ordinary SQL."""
