"""PostgreSQL's types on the wire: the type of a result column, and its values in text and binary format.

A result column's type comes from DuckDB's type name (``INTEGER``, ``DECIMAL(18,2)``, ``VARCHAR[]``) or,
when the engine gave none, from its first value. Each (type, format) has one encoder, chosen once per
column for a whole result (:func:`encoders`), so that a row costs one call per value. Parameters are
decoded by the type the client declared in Parse (or the one the server described, for clients such as
asyncpg that ask first), in text or binary format, into Python values the binder writes as literals.

Binary layouts are PostgreSQL's (src/backend/utils/adt/*.c ``*_send``/``*_recv``): big-endian integers,
dates as days and timestamps as microseconds since 2000-01-01, numeric in base-10000 digits, arrays with
a header of dimensions, a null flag and the element type.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import struct
import uuid
from collections.abc import Callable
from typing import Any

from sharing.exceptions import QueryRefused

# type oids (PostgreSQL's pg_type.dat)
BOOL, BYTEA, NAME, INT8, INT2, INT4, TEXT, OID, JSON = 16, 17, 19, 20, 21, 23, 25, 26, 114
FLOAT4, FLOAT8, UNKNOWN, BPCHAR, VARCHAR, DATE, TIME = 700, 701, 705, 1042, 1043, 1082, 1083
TIMESTAMP, TIMESTAMPTZ, INTERVAL, NUMERIC, UUID, JSONB = 1114, 1184, 1186, 1700, 2950, 3802

ARRAY_OF = {BOOL: 1000, BYTEA: 1001, INT2: 1005, INT4: 1007, TEXT: 1009, VARCHAR: 1015, INT8: 1016, FLOAT4: 1021,
            FLOAT8: 1022, TIMESTAMP: 1115, DATE: 1182, TIME: 1183, TIMESTAMPTZ: 1185, INTERVAL: 1187,
            NUMERIC: 1231, UUID: 2951, JSON: 199, JSONB: 3807, NAME: 1003, BPCHAR: 1014, OID: 1028}
ELEMENT_OF = {array: element for element, array in ARRAY_OF.items()}
TYPE_SIZE = {BOOL: 1, INT2: 2, INT4: 4, INT8: 8, FLOAT4: 4, FLOAT8: 8, DATE: 4, TIME: 8, TIMESTAMP: 8,
             TIMESTAMPTZ: 8, INTERVAL: 16, UUID: 16, OID: 4}
TYPE_NAMES = {BOOL: ("bool", "boolean"), BYTEA: ("bytea", "bytea"), NAME: ("name", "name"), INT8: ("int8", "bigint"),
              INT2: ("int2", "smallint"), INT4: ("int4", "integer"), TEXT: ("text", "text"), OID: ("oid", "oid"),
              JSON: ("json", "json"), FLOAT4: ("float4", "real"), FLOAT8: ("float8", "double precision"),
              BPCHAR: ("bpchar", "character"), VARCHAR: ("varchar", "character varying"), DATE: ("date", "date"),
              TIME: ("time", "time without time zone"), TIMESTAMP: ("timestamp", "timestamp without time zone"),
              TIMESTAMPTZ: ("timestamptz", "timestamp with time zone"), INTERVAL: ("interval", "interval"),
              NUMERIC: ("numeric", "numeric"), UUID: ("uuid", "uuid"), JSONB: ("jsonb", "jsonb")}
"""pg_type.typname and the regtype text of each built-in type this server sends or reads."""
DUCK_TYPE = {BOOL: "BOOLEAN", BYTEA: "BLOB", INT8: "BIGINT", INT2: "SMALLINT", INT4: "INTEGER", TEXT: "VARCHAR",
             VARCHAR: "VARCHAR", NAME: "VARCHAR", BPCHAR: "VARCHAR", UNKNOWN: "VARCHAR", OID: "BIGINT",
             JSON: "JSON", JSONB: "JSON", FLOAT4: "FLOAT", FLOAT8: "DOUBLE", DATE: "DATE", TIME: "TIME",
             TIMESTAMP: "TIMESTAMP", TIMESTAMPTZ: "TIMESTAMPTZ", INTERVAL: "INTERVAL", NUMERIC: "DECIMAL(38,10)",
             UUID: "UUID"}
"""The DuckDB type a parameter of a PostgreSQL type is cast to (arrays: the element's, then ``[]``)."""

# DuckDB type name (its first words) -> PostgreSQL type oid; the order matters (TIMESTAMP WITH... first)
_DUCK_PREFIXES = (("BOOLEAN", BOOL), ("TINYINT", INT2), ("SMALLINT", INT2), ("UTINYINT", INT2),
                  ("INTEGER", INT4), ("USMALLINT", INT4), ("BIGINT", INT8), ("UINTEGER", INT8),
                  ("UBIGINT", NUMERIC), ("HUGEINT", NUMERIC), ("UHUGEINT", NUMERIC), ("DECIMAL", NUMERIC),
                  ("FLOAT", FLOAT4), ("REAL", FLOAT4), ("DOUBLE", FLOAT8), ("VARCHAR", VARCHAR), ("BLOB", BYTEA),
                  ("DATE", DATE), ("TIMESTAMP WITH TIME ZONE", TIMESTAMPTZ), ("TIMESTAMPTZ", TIMESTAMPTZ),
                  ("TIMESTAMP", TIMESTAMP), ("TIME", TIME), ("INTERVAL", INTERVAL), ("UUID", UUID), ("JSON", JSON))
_PG_EPOCH_DATE = dt.date(2000, 1, 1).toordinal()
_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_TZ = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_I, _H, _Q, _D, _F = struct.Struct("!i"), struct.Struct("!h"), struct.Struct("!q"), struct.Struct("!d"), struct.Struct("!f")


class BadParameter(QueryRefused):
    """A bound value that cannot be read as its declared type."""

    sqlstate = "22P02"  # invalid_text_representation


class NulInText(BadParameter):
    sqlstate = "22021"  # character_not_in_repertoire, as PostgreSQL answers a NUL in text


NUMERIC_DIGITS = 1000
"""Most digits a numeric parameter may have before or after its point (PostgreSQL's declared numeric
precision tops out at 1000; DuckDB's DECIMAL at 38). A bound value becomes a literal written out in full:
'1e999999999', ten bytes on the wire, was a billion-digit literal (gigabytes of SQL, the server killed)."""


def _numeric_bounded(value: decimal.Decimal) -> decimal.Decimal:
    if value.is_finite() and (value.adjusted() >= NUMERIC_DIGITS or value.as_tuple().exponent < -NUMERIC_DIGITS):
        raise ValueError(f"numeric value out of range: more than {NUMERIC_DIGITS} digits before or after the point")
    return value


class Json(str):
    """A json parameter's text: the binder casts it to JSON (a plain str would be a string literal)."""


class Typed(str):
    """A parameter kept in its text form with the DuckDB type it is cast to (an interval's text)."""

    duck_type: str = "VARCHAR"

    def __new__(cls, text: str, duck_type: str) -> Typed:
        made = super().__new__(cls, text)
        made.duck_type = duck_type
        return made


def oid_of_duck(name: str) -> int:
    """The PostgreSQL type oid of a DuckDB type name; lists are arrays of their element; others are text."""
    upper = str(name).upper()
    if upper.endswith("[]"):
        element = oid_of_duck(upper[:-2])
        return ARRAY_OF.get(element, ARRAY_OF[TEXT])
    for prefix, oid in _DUCK_PREFIXES:
        if upper.startswith(prefix) and not upper.startswith(prefix + "_"):
            return oid
    return TEXT  # STRUCT, MAP, UNION, ENUM, BIT, ...: their text form


def oid_of_sqlglot(datatype: Any) -> int:
    """The type oid of a sqlglot DataType (a cast's target in a query: ``$1::int``, ``CAST($1 AS text[])``)."""
    from sqlglot import exp

    kind = exp.DataType.Type
    if datatype.this == kind.ARRAY or datatype.args.get("nested") and datatype.expressions:
        inner = datatype.expressions[0] if datatype.expressions else None
        element = oid_of_sqlglot(inner) if isinstance(inner, exp.DataType) else TEXT
        return ARRAY_OF.get(element, ARRAY_OF[TEXT])
    kind_name = getattr(datatype.this, "name", None) or str(datatype.this).upper()  # a user-defined type: text
    return _SQLGLOT.get(kind_name, TEXT)


_SQLGLOT = {"BOOLEAN": BOOL, "TINYINT": INT2, "SMALLINT": INT2, "INT": INT4, "MEDIUMINT": INT4, "BIGINT": INT8,
            "UTINYINT": INT2, "USMALLINT": INT4, "UINT": INT8, "UBIGINT": NUMERIC, "INT128": NUMERIC,
            "FLOAT": FLOAT4, "DOUBLE": FLOAT8, "DECIMAL": NUMERIC, "BIGDECIMAL": NUMERIC, "MONEY": NUMERIC,
            "TEXT": TEXT, "VARCHAR": VARCHAR, "CHAR": BPCHAR, "NCHAR": BPCHAR, "NVARCHAR": VARCHAR, "NAME": NAME,
            "DATE": DATE, "TIME": TIME, "TIMESTAMP": TIMESTAMP, "DATETIME": TIMESTAMP, "TIMESTAMPTZ": TIMESTAMPTZ,
            "TIMESTAMPLTZ": TIMESTAMPTZ, "INTERVAL": INTERVAL, "UUID": UUID, "BLOB": BYTEA, "VARBINARY": BYTEA,
            "BINARY": BYTEA, "JSON": JSON, "JSONB": JSONB, "OBJECT_IDENTIFIER": OID}


def oid_of_value(value: Any) -> int:
    """The type of a column known only by one of its values (an engine result without types)."""
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT8
    if isinstance(value, float):
        return FLOAT8
    if isinstance(value, decimal.Decimal):
        return NUMERIC
    if isinstance(value, dt.datetime):
        return TIMESTAMPTZ if value.tzinfo is not None else TIMESTAMP
    if isinstance(value, dt.date):
        return DATE
    if isinstance(value, dt.time):
        return TIME
    if isinstance(value, dt.timedelta):
        return INTERVAL
    if isinstance(value, uuid.UUID):
        return UUID
    if isinstance(value, bytes | bytearray | memoryview):
        return BYTEA
    if isinstance(value, list | tuple):
        first = next((v for v in value if v is not None), None)
        return ARRAY_OF.get(oid_of_value(first) if first is not None else TEXT, ARRAY_OF[TEXT])
    return TEXT


# --- text format -------------------------------------------------------------------------------------------
def _float_text(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(float(v))


def _float4_text(v: float) -> str:
    if v != v or v in (float("inf"), float("-inf")):
        return _float_text(v)
    import numpy  # the shortest text of the float32 value, as PostgreSQL prints a real

    return str(numpy.float32(v))


def _numeric_text(v: Any) -> str:
    if isinstance(v, decimal.Decimal):
        return "NaN" if v.is_nan() else format(v, "f")
    return str(v)


def _interval_text(v: dt.timedelta) -> str:
    """PostgreSQL's ``postgres`` IntervalStyle: ``3 days 04:05:06.5``, ``-1 days +23:00:00``."""
    days, rest = v.days, v.seconds * 1_000_000 + v.microseconds
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micros = divmod(rest, 1_000_000)
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}" + (f".{micros:06d}".rstrip("0") if micros else "")
    if days and not rest and not hours and not minutes:
        return f"{days} day{'s' if abs(days) != 1 else ''}"
    return (f"{days} day{'s' if abs(days) != 1 else ''} " if days else "") + clock


def _tz_text(v: dt.datetime) -> str:
    """``2024-01-02 03:04:05.6+00`` (PostgreSQL prints the offset's minutes only when it has some)."""
    if v.tzinfo is None:
        return v.isoformat(sep=" ") + "+00"
    v = v.astimezone(dt.UTC)
    return v.replace(tzinfo=None).isoformat(sep=" ") + "+00"


def _bytea_text(v: bytes) -> str:
    return "\\x" + bytes(v).hex()


def _json_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)


_NEEDS_QUOTES = re.compile(r'[{},"\\\s]|^$|^null$', re.I)


def _array_text(element: Callable[[Any], str]) -> Callable[[Any], str]:
    def text(values: Any) -> str:
        parts = []
        for v in values:
            if v is None:
                parts.append("NULL")
            elif isinstance(v, list | tuple):
                parts.append(text(v))
            else:
                item = element(v)
                if _NEEDS_QUOTES.search(item):
                    item = '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
                parts.append(item)
        return "{" + ",".join(parts) + "}"

    return text


def _text_of(oid: int) -> Callable[[Any], str]:
    if oid == BOOL:
        return lambda v: "t" if v else "f"
    if oid in (FLOAT8,):
        return _float_text
    if oid == FLOAT4:
        return _float4_text
    if oid == NUMERIC:
        return _numeric_text
    if oid in (DATE, TIME):
        return lambda v: v.isoformat()
    if oid == TIMESTAMP:
        return lambda v: v.isoformat(sep=" ")
    if oid == TIMESTAMPTZ:
        return _tz_text
    if oid == INTERVAL:
        return lambda v: _interval_text(v) if isinstance(v, dt.timedelta) else str(v)
    if oid == BYTEA:
        return _bytea_text
    if oid in (JSON, JSONB):
        return _json_text
    if oid in ELEMENT_OF:
        return _array_text(_text_of(ELEMENT_OF[oid]))
    return str


def _text_encoder(oid: int) -> Callable[[Any], bytes]:
    if oid in (TEXT, VARCHAR, NAME, BPCHAR, UNKNOWN):
        return lambda v: (v if isinstance(v, str) else str(v)).encode()
    if oid in (INT2, INT4, INT8, OID):
        return lambda v: str(v).encode()
    text = _text_of(oid)
    return lambda v: text(v).encode()


# --- binary format -----------------------------------------------------------------------------------------
def numeric_send(value: Any) -> bytes:
    """PostgreSQL's binary numeric: digit count, weight (of the first base-10000 digit), sign, scale, digits."""
    d = value if isinstance(value, decimal.Decimal) else decimal.Decimal(value)
    if d.is_nan():
        return struct.pack("!hhHH", 0, 0, 0xC000, 0)
    if d.is_infinite():
        return struct.pack("!hhHH", 0, 0, 0xD000 if d > 0 else 0xF000, 0)
    sign, digits, exponent = d.as_tuple()
    scale = max(0, -exponent)
    text = "".join(map(str, digits)) + "0" * max(0, exponent)  # the digits of |d| * 10**scale
    integer_len = len(text) - scale
    if integer_len <= 0:
        text = "0" * (1 - integer_len) + text
        integer_len = 1
    pad_left = (-integer_len) % 4
    text = "0" * pad_left + text
    text += "0" * ((-len(text)) % 4)
    groups = [int(text[i:i + 4]) for i in range(0, len(text), 4)]
    weight = (integer_len + pad_left) // 4 - 1
    while groups and groups[0] == 0:  # leading zero groups carry no digits
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack(f"!hhHH{len(groups)}H", len(groups), weight, 0x4000 if sign else 0, scale, *groups)


def numeric_recv(data: bytes) -> decimal.Decimal:
    count, weight, sign, scale = struct.unpack_from("!hhHH", data)
    if sign == 0xC000:
        return decimal.Decimal("NaN")
    if sign in (0xD000, 0xF000):
        return decimal.Decimal("Infinity" if sign == 0xD000 else "-Infinity")
    if scale > NUMERIC_DIGITS or abs(weight) * 4 > NUMERIC_DIGITS + 4:  # before the digits are spelt out
        raise ValueError(f"numeric value out of range: more than {NUMERIC_DIGITS} digits before or after the point")
    groups = struct.unpack_from(f"!{count}H", data, 8)
    value = 0
    for g in groups:
        value = value * 10000 + g
    exponent = (weight - count + 1) * 4
    exact = decimal.Context(prec=4 * (abs(weight) + count) + scale + 28)  # the default 28 digits would round
    result = exact.scaleb(decimal.Decimal(value), exponent) if value else decimal.Decimal(0)
    result = result.quantize(decimal.Decimal(1).scaleb(-scale), context=exact)
    return result.copy_negate() if sign == 0x4000 else result  # unary minus would round to 28 digits


def _micros(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _timestamp_send(v: dt.datetime) -> bytes:
    return _Q.pack(_micros(v - _PG_EPOCH))


def _timestamptz_send(v: dt.datetime) -> bytes:
    return _Q.pack(_micros((v if v.tzinfo else v.replace(tzinfo=dt.UTC)) - _PG_EPOCH_TZ))


def _time_send(v: dt.time) -> bytes:
    return _Q.pack(((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond)


def _interval_send(v: dt.timedelta) -> bytes:
    return struct.pack("!qii", v.seconds * 1_000_000 + v.microseconds, v.days, 0)


def _binary_of(oid: int) -> Callable[[Any], bytes] | None:
    """The binary encoder of ``oid``; None where a text form is all there is (the column goes as text)."""
    simple: dict[int, Callable[[Any], bytes]] = {
        BOOL: lambda v: b"\x01" if v else b"\x00",
        INT2: struct.Struct("!h").pack, INT4: _I.pack, INT8: _Q.pack, OID: struct.Struct("!I").pack,
        FLOAT4: _F.pack, FLOAT8: _D.pack, NUMERIC: numeric_send,
        DATE: lambda v: _I.pack(v.toordinal() - _PG_EPOCH_DATE),
        TIME: _time_send, TIMESTAMP: _timestamp_send, TIMESTAMPTZ: _timestamptz_send, INTERVAL: _interval_send,
        UUID: lambda v: (v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))).bytes,
        BYTEA: bytes,
        TEXT: lambda v: (v if isinstance(v, str) else str(v)).encode(),
        JSON: lambda v: _json_text(v).encode(),
        JSONB: lambda v: b"\x01" + _json_text(v).encode(),
    }
    for same in (VARCHAR, NAME, BPCHAR, UNKNOWN):
        simple[same] = simple[TEXT]
    if oid in simple:
        return simple[oid]
    if oid in ELEMENT_OF:
        element = _binary_of(ELEMENT_OF[oid])
        return _array_send(ELEMENT_OF[oid], element) if element else None
    return None


def _array_send(element_oid: int, element: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def send(values: Any) -> bytes:
        values = list(values)
        if not values:
            return struct.pack("!iiI", 0, 0, element_oid)
        if any(isinstance(v, list | tuple) for v in values):  # multi-dimensional: PostgreSQL's arrays are
            raise QueryRefused("nested lists have no PostgreSQL binary form; ask for this column as text")
        has_null = any(v is None for v in values)
        parts = [struct.pack("!iiIii", 1, int(has_null), element_oid, len(values), 1)]
        for v in values:
            if v is None:
                parts.append(b"\xff\xff\xff\xff")
            else:
                data = element(v)
                parts.append(_I.pack(len(data)) + data)
        return b"".join(parts)

    return send


def encoders(oids: list[int], formats: list[int]) -> list[Callable[[Any], bytes]]:
    """One encoder per column for the formats the client asked (Bind's result formats: none means text for
    all, one means that one for all, else one each)."""
    out = []
    for i, oid in enumerate(oids):
        binary = format_of(formats, i) == 1
        out.append((_binary_of(oid) or _text_encoder(oid)) if binary else _text_encoder(oid))
    return out


def format_of(formats: list[int], i: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[i]


def wire_format(oid: int, requested: int) -> int:
    """The format a column really goes in: binary only where this server has a binary encoder for it."""
    return 1 if requested == 1 and _binary_of(oid) is not None else 0


# --- parameters --------------------------------------------------------------------------------------------
def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("t", "true", "y", "yes", "on", "1"):
        return True
    if low in ("f", "false", "n", "no", "off", "0"):
        return False
    raise QueryRefused(f'invalid input syntax for type boolean: "{text}"')


def _parse_bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    return text.encode("latin-1").decode("unicode_escape").encode("latin-1")


_DATE_TIME = re.compile(r"\s*(\d{4}-\d\d-\d\d)(?:[ T](\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?))?\s*(?:([+-]\d\d)(?::?(\d\d))?|Z)?\s*$")


def _parse_date_time(text: str, *, zone: bool) -> dt.datetime:
    """A date-time as clients send it in text: ISO with a space or T, an offset of ``+08``, ``+0800`` or
    ``+08:00`` (PgJDBC sends ``2022-01-01 00:00:00+00`` for a timestamp, ``2022-01-01 +00`` for a date). A
    timestamp without time zone ignores the offset, as PostgreSQL does."""
    found = _DATE_TIME.match(text)
    if not found:
        raise ValueError(f'invalid input syntax for a date or time: "{text}"')
    value = dt.datetime.fromisoformat(found.group(1) + " " + (found.group(2) or "00:00"))
    if not zone:
        return value
    if found.group(3):
        hours, minutes = int(found.group(3)), int(found.group(4) or 0)
        offset = dt.timedelta(hours=hours, minutes=minutes if hours >= 0 else -minutes)
        return value.replace(tzinfo=dt.timezone(offset))
    return value.replace(tzinfo=dt.UTC)


def _parse_tz(text: str) -> dt.datetime:
    return _parse_date_time(text, zone=True)


_ARRAY_SPACE = " \t\n\r\v\f"
"""What PostgreSQL's array input skips around an unquoted element (array_isspace)."""


def parse_array(text: str, element: Callable[[str], Any]) -> list:
    """PostgreSQL's array text form (``{1,2,NULL}``, ``{"a b","c\\"d"}``, nested) as a list."""
    pos = 0

    def parse() -> list:
        nonlocal pos
        if text[pos] != "{":
            raise QueryRefused(f'malformed array literal: "{text}"')
        pos += 1
        out: list = []
        while pos < len(text):
            ch = text[pos]
            if ch == "}":
                pos += 1
                return out
            if ch == "," or ch in _ARRAY_SPACE:
                pos += 1
            elif ch == "{":
                out.append(parse())
            elif ch == '"':
                pos += 1
                item = []
                while text[pos] != '"':
                    if text[pos] == "\\":
                        pos += 1
                    item.append(text[pos])
                    pos += 1
                pos += 1
                out.append(element("".join(item)))
            else:
                end = pos
                while text[end] not in ",}":
                    end += 1
                raw = text[pos:end].strip(_ARRAY_SPACE)  # PostgreSQL's array_isspace, not Python's (\x1c-\x1f)
                out.append(None if raw.upper() == "NULL" else element(raw))
                pos = end
        raise QueryRefused(f'malformed array literal: "{text}"')

    try:
        return parse()
    except IndexError as exc:
        raise QueryRefused(f'malformed array literal: "{text}"') from exc


def _text_decoder(oid: int) -> Callable[[str], Any]:
    simple: dict[int, Callable[[str], Any]] = {
        BOOL: _parse_bool, INT2: int, INT4: int, INT8: int, OID: int, FLOAT4: float, FLOAT8: float,
        NUMERIC: lambda t: _numeric_bounded(decimal.Decimal(t)), DATE: lambda t: _parse_date_time(t, zone=False).date(),
        TIME: lambda t: dt.time.fromisoformat(re.sub(r"[+-]\d\d(:?\d\d)?$|Z$", "", t.strip())),
        TIMESTAMP: lambda t: _parse_date_time(t, zone=False), TIMESTAMPTZ: _parse_tz,
        UUID: uuid.UUID, BYTEA: _parse_bytea, JSON: Json, JSONB: Json,
        INTERVAL: lambda t: Typed(t, "INTERVAL"),
    }
    if oid in simple:
        return simple[oid]
    if oid in ELEMENT_OF:
        element = _text_decoder(ELEMENT_OF[oid])
        return lambda t: parse_array(t, element)
    return str


def _binary_decoder(oid: int) -> Callable[[bytes], Any]:
    simple: dict[int, Callable[[bytes], Any]] = {
        BOOL: lambda b: b != b"\x00", INT2: lambda b: struct.unpack("!h", b)[0],
        INT4: lambda b: _I.unpack(b)[0], INT8: lambda b: _Q.unpack(b)[0], OID: lambda b: struct.unpack("!I", b)[0],
        FLOAT4: lambda b: _F.unpack(b)[0], FLOAT8: lambda b: _D.unpack(b)[0], NUMERIC: numeric_recv,
        DATE: lambda b: dt.date.fromordinal(_I.unpack(b)[0] + _PG_EPOCH_DATE),
        TIME: lambda b: (dt.datetime.min + dt.timedelta(microseconds=_Q.unpack(b)[0])).time(),
        TIMESTAMP: lambda b: _PG_EPOCH + dt.timedelta(microseconds=_Q.unpack(b)[0]),
        TIMESTAMPTZ: lambda b: _PG_EPOCH_TZ + dt.timedelta(microseconds=_Q.unpack(b)[0]),
        INTERVAL: _interval_recv, UUID: lambda b: uuid.UUID(bytes=bytes(b)), BYTEA: bytes,
        JSON: lambda b: Json(b.decode()), JSONB: lambda b: Json(b[1:].decode()),
    }
    if oid in simple:
        return simple[oid]
    if oid in ELEMENT_OF:
        return _array_recv
    return lambda b: bytes(b).decode()


def _interval_recv(data: bytes) -> Any:
    micros, days, months = struct.unpack("!qii", data)
    if months:  # a month has no fixed length: DuckDB's interval keeps it
        return Typed(f"{months} months {days} days {micros} microseconds", "INTERVAL")
    return dt.timedelta(days=days, microseconds=micros)


def _array_recv(data: bytes) -> list:
    ndim, _flags, element_oid = struct.unpack_from("!iiI", data)
    if ndim == 0:
        return []
    dims = [struct.unpack_from("!ii", data, 12 + 8 * i)[0] for i in range(ndim)]
    pos = 12 + 8 * ndim
    element = _binary_decoder(element_oid)
    flat = []
    for _ in range(_product(dims)):
        (length,) = _I.unpack_from(data, pos)
        pos += 4
        if length < 0:
            flat.append(None)
        else:
            flat.append(element(data[pos:pos + length]))
            pos += length
    for size in reversed(dims[1:]):  # fold the flat elements back into nested lists
        flat = [flat[i:i + size] for i in range(0, len(flat), size)]
    return flat


def _product(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def decode_parameter(oid: int, fmt: int, data: bytes | None) -> Any:
    """A Bind parameter as a Python value (None: NULL)."""
    if data is None:
        return None
    if b"\x00" in data and (fmt != 1 or oid in (TEXT, VARCHAR, NAME, BPCHAR, UNKNOWN, JSON, JSONB)):
        # PostgreSQL's text never holds NUL; DuckDB reads a statement as a C string, so a NUL inside a
        # bound literal cut the statement short there (an error about the rewritten query, not the value)
        raise NulInText(f"invalid byte sequence for encoding \"UTF8\": 0x00 (parameter of type {oid})")
    try:
        if fmt == 1:
            return _binary_decoder(oid)(data)
        return _text_decoder(oid)(bytes(data).decode())
    except QueryRefused:
        raise
    except (ValueError, struct.error, ArithmeticError, UnicodeDecodeError, IndexError) as exc:
        raise BadParameter(f"parameter of type {oid} in {'binary' if fmt else 'text'} format could not be "
                           f"read: {exc}") from exc


def text_of(oid: int) -> Callable[[Any], str]:
    """The text form (str) of values of type ``oid``, as COPY writes them."""
    return _text_of(oid)
