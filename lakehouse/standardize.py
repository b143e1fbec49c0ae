"""Standardize: map a department's raw extract onto its dataset's typed columns.

One SQL pass in DuckDB reads the landed file (every value as text), applies the column rules and
writes the staged batch as Parquet. The rules, in order, for every value:

1. full-width digits, Latin letters and spaces become half-width (``１２３`` -> ``123``); every Unicode
   space, line break, control and format character (tab, NBSP, U+3000, zero-width space, BOM...) is
   trimmed from both ends; empty becomes NULL;
2. code lists accept a code or its label (``存续`` -> ``1``); format-ruled codes are upper-cased, and the
   national codes get their one spelling (:func:`canonical_codes`) before keys and checks see them;
3. the value is cast to the column type: numbers lose thousands separators (``1,234.50``), dates
   accept ``2024-01-31``, ``2024/1/31``, ``20240131``, ``2024年1月31日`` and ``2024.01.31``.

For CSV, an optimistic first attempt lets DuckDB's reader parse numbers and ISO dates itself (the
same answers as the cast, about twice as fast); a file that needs more of the rules fails it and goes
the general way. The general path casts strictly, so a bad value stops the pass; only then a second,
diagnostic pass finds every bad cell with its row and column, for the error message.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb

from connectors.base import Extract, csv_encoding, utf8_csv
from connectors.landing import holds_wide_forms
from core.duck import literal as q
from core.duck import one
from lakehouse.exceptions import CellProblem, StandardizeError
from lakehouse.lake import PARQUET_WRITE
from schemas.model import Column, Dataset, Registry

FULL = "０１２３４５６７８９ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ\u3000"
HALF = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz "
DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y年%m月%d日", "%Y.%m.%d")
TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M",
                     "%Y%m%d%H%M%S", "%Y年%m月%d日 %H:%M:%S")
TRUE_WORDS = ("true", "t", "1", "y", "yes", "是", "有")
FALSE_WORDS = ("false", "f", "0", "n", "no", "否", "无")


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class StagedBatch:
    path: Path
    rows: int
    drift: tuple[str, ...] = ()
    """How the extract's columns differed from the registry, when the dataset's policy let it load."""


# ---------------------------------------------------------------------------------------------
# Reading the landed file: every column as text.
# ---------------------------------------------------------------------------------------------

def reader_sql(extract: Extract, types: dict[str, str] | None = None) -> str:
    """Table expression reading the landed extract; text columns for CSV and XLSX (for CSV, ``types``
    names the header columns the reader itself should parse, and every other column stays text)."""
    path, opts = q(str(extract.path)), extract.read_options
    if extract.format == "csv":
        text = ["all_varchar = true"] if not types else [
            "auto_type_candidates = ['VARCHAR']",
            "types = {" + ", ".join(f"{q(name)}: {q(duck_type)}" for name, duck_type in types.items()) + "}"]
        args = ["header = true", *text, "auto_detect = true"]
        encoding = csv_encoding(opts)
        if encoding != "utf-8":
            args.append(f"encoding = {q(encoding)}")
        if opts.get("delimiter"):
            args.append(f"delim = {q(str(opts['delimiter']))}")
        if opts.get("skip_rows"):
            args.append(f"skip = {int(opts['skip_rows'])}")
        return f"read_csv({path}, {', '.join(args)})"
    if extract.format == "xlsx":
        args = ["header = true", "all_varchar = true"]
        if opts.get("sheet"):
            args.append(f"sheet = {q(str(opts['sheet']))}")
        return f"read_xlsx({path}, {', '.join(args)})"
    if extract.format == "json":
        return f"read_json({path}, format = 'auto')"
    if extract.format == "ndjson":
        return f"read_json({path}, format = 'newline_delimited')"
    if extract.format == "parquet":
        return f"read_parquet({path})"
    raise StandardizeError(extract.dataset, extract.source, str(extract.path), f"unknown format {extract.format!r}")


def extensions_for(extract: Extract) -> tuple[str, ...]:
    if extract.format == "xlsx":
        return ("excel",)
    if extract.format == "csv" and csv_encoding(extract.read_options) != "utf-8":
        return ("encodings",)
    return ()


# ---------------------------------------------------------------------------------------------
# Column rules: text clean-up, code lists, casts. Each takes a SQL expression, returns one.
# ---------------------------------------------------------------------------------------------

BLANK = r"[\p{Z}\p{Cc}\p{Cf}]"
"""What is trimmed from both ends of every value (RE2 classes): Unicode separators (spaces incl. NBSP and
U+3000, line and paragraph separators), control characters (tab, CR, LF, NUL, DEL, C1) and format
characters (zero-width space, joiners, word joiner, BOM, soft hyphen): none can be part of a value a
department meant, and each one left makes a valid code fail its check or a key differ from itself."""
TRIM_BLANK = f"^{BLANK}+|{BLANK}+$"


@dataclass(frozen=True)
class TextHints:
    """What the pass knows before it runs, to make the clean-up's gates cheaper (the results never change).

    ``ends``: SQL names of the first and last character's code points (``ord``), computed by an inner
    projection (:func:`with_ends`): DuckDB computes an expression named once per value, while the same
    expression written several times inside CASE branches is computed each time. ``wide``: a value may
    hold a full-width character (False when the whole extract was seen to hold none: :func:`holds_wide_forms`)."""

    ends: tuple[str, str] | None = None
    wide: bool = True


def clean_text(expr: str, col: Column, registry: Registry, hints: TextHints = TextHints()) -> str:
    text = f"CAST({expr} AS VARCHAR)"
    # Gates, cheapest first, because this runs on every value of every column (measured on 5M rows):
    # an ASCII value (byte length = character length, ~free) has no full-width character, and its blanks
    # are the bytes up to the space and DEL: it needs work only when its first or last character is such
    # a byte. Any other value pays one regex that finds either a full-width character or a blank at either
    # end; only those values are translated (~20x a plain scan) and trimmed (0.58 s -> 0.35 s on 5M Chinese
    # company names). In an extract with no full-width character at all, with the end characters' code
    # points at hand, that regex becomes two comparisons (0.74 -> 0.32 CPU s on 5M names).
    if hints.ends is None:
        ascii_blank_end = f"({text} < '!' OR {text} >= chr(127) OR substr({text}, -1) NOT BETWEEN '!' AND '~')"
    else:
        ascii_blank_end = " OR ".join(f"{end} NOT BETWEEN 33 AND 126" for end in hints.ends)
    ascii_path = f"CASE WHEN {ascii_blank_end} THEN regexp_replace({text}, {q(TRIM_BLANK)}, '', 'g') ELSE {text} END"
    if hints.wide or hints.ends is None:
        needs_work = f"regexp_matches({text}, {q(f'[{FULL}]|^{BLANK}|{BLANK}$')})"
        work = f"regexp_replace(translate({text}, {q(FULL)}, {q(HALF)}), {q(TRIM_BLANK)}, '', 'g')"
    else:
        needs_work = " OR ".join(may_be_blank(end) for end in hints.ends)
        work = f"regexp_replace({text}, {q(TRIM_BLANK)}, '', 'g')"
    wide_path = f"CASE WHEN {needs_work} THEN {work} ELSE {text} END"
    return f"nullif(CASE WHEN strlen({text}) = length({text}) THEN {ascii_path} ELSE {wide_path} END, '')"


NOT_BLANK = ((0x3001, 0xD7FF), (0xF900, 0xFEFE), (0xFF01, 0xFFEF))
"""Ranges of code points from U+0600 up holding no character of :data:`BLANK` (CJK punctuation, kana,
ideographs and Hangul; CJK compatibility ideographs to Arabic presentation forms; half- and full-width
forms): tests/test_standardize_gates.py holds it to DuckDB's own regex over every code point."""


def may_be_blank(code_point: str) -> str:
    """SQL true for every code point in :data:`BLANK` (and for a few more, which then take the regex):
    the ASCII controls and space, C1 and NBSP, the soft hyphen, and from U+0600 anything outside
    :data:`NOT_BLANK`."""
    c = code_point
    outside = " AND ".join(f"NOT ({c} BETWEEN {lo} AND {hi})" for lo, hi in NOT_BLANK)
    return f"({c} <= 32 OR {c} BETWEEN 127 AND 160 OR {c} = 173 OR ({c} >= 1536 AND {outside}))"


def _code_list_name(col: Column, registry: Registry) -> str | None:
    """The column's code list: its own, or its data element's."""
    return col.code_list or (registry.element(col.element).code_list if col.element else None)


def map_code_list(expr: str, col: Column, registry: Registry) -> str:
    name = _code_list_name(col, registry)
    if not name:
        return expr
    codes = registry.code_list(name).codes
    cases = " ".join(f"WHEN {q(label)} THEN {q(code)}" for code, label in codes.items() if label != code)
    return f"(CASE {expr} {cases} ELSE {expr} END)" if cases else expr


WIDE_ASCII = "".join(chr(c) for c in range(0xFF01, 0xFF5F))
"""The full-width forms of ASCII's printable characters (U+FF01-FF5E); NFKC makes each its ASCII twin."""
NARROW_ASCII = "".join(chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F))
HYPHENS = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\uFE58\uFE63\uFF0D"
"""Every way an organisation code's hyphen arrives: ASCII hyphen-minus, the Unicode hyphens and dashes
(hyphen, non-breaking hyphen, figure, en and em dash, horizontal bar, hyphen bullet), the minus sign,
and the small and full-width hyphen-minus of CJK input methods."""
NATIONAL_CODES = ("uscc", "resident_id", "org_code")


def canonical_codes(expr: str, col: Column, registry: Registry) -> str:
    """Format-ruled codes are upper-cased; a national code gets its one spelling, so that one code is
    one key and checks see what a department meant: full-width forms become ASCII (NFKC's mapping for
    them), letters upper case (``x`` -> ``X``), and an organisation code (GB 11714) is written
    ``XXXXXXXX-X`` whichever hyphen, dash or minus it came with, or none. A value that is not 9 code
    characters once the hyphens are gone is left as sent, for the format check to report."""
    fmt = col.format or (registry.element(col.element).format if col.element else None)
    if not fmt:
        return expr
    if fmt not in NATIONAL_CODES:
        return f"upper({expr})"
    # translate() with a 94-character map costs ~3.5 us a value (7 s on 2M codes): only a value with a
    # non-ASCII character (byte length > character length) can hold a full-width form
    code = (f"upper(CASE WHEN strlen({expr}) = length({expr}) THEN {expr} "
            f"ELSE translate({expr}, {q(WIDE_ASCII)}, {q(NARROW_ASCII)}) END)")
    if fmt != "org_code":
        return code
    bare = f"translate({code}, {q(HYPHENS)}, '')"
    return (f"(CASE WHEN regexp_full_match({bare}, '[0-9A-Z]{{8}}[0-9X]') "
            f"THEN substr({bare}, 1, 8) || '-' || substr({bare}, 9, 1) ELSE {code} END)")


def cast_type(expr: str, col: Column, strict: bool) -> str:
    t = col.type
    if t == "string":
        return expr
    if t in ("integer", "decimal"):
        number = f"replace(replace({expr}, ',', ''), ' ', '')"
        return f"{'CAST' if strict else 'TRY_CAST'}({number} AS {col.duck_type})"
    if t in ("date", "timestamp"):
        formats = DATE_FORMATS if t == "date" else TIMESTAMP_FORMATS + DATE_FORMATS
        tries = ", ".join(f"try_strptime({expr}, {q(f)})" for f in formats)
        parsed = f"coalesce(TRY_CAST({expr} AS TIMESTAMP), {tries})"
        if strict:
            parsed = f"CASE WHEN {expr} IS NULL THEN NULL ELSE coalesce({parsed}, " \
                     f"error(concat('{col.name}: not a {t}: ', {expr}))) END"
        return f"CAST({parsed} AS {col.duck_type})"
    if t == "boolean":
        lowered = f"lower({expr})"
        bad = f"error(concat('{col.name}: not a boolean: ', {expr}))" if strict else "NULL"
        return (f"(CASE WHEN {expr} IS NULL THEN NULL WHEN {lowered} IN ({', '.join(map(q, TRUE_WORDS))}) THEN true "
                f"WHEN {lowered} IN ({', '.join(map(q, FALSE_WORDS))}) THEN false ELSE {bad} END)")
    raise AssertionError(f"unknown type {t}")


def text_sql(source_expr: str, col: Column, registry: Registry, hints: TextHints = TextHints()) -> str:
    """The text rules, in order, applied to one source column (a code list's own spellings taken first):
    :func:`clean_text`, :func:`map_code_list`, :func:`canonical_codes`."""
    expr = canonical_codes(map_code_list(clean_text(source_expr, col, registry, hints), col, registry), col, registry)
    known = _clean_already(col, registry)
    if not known:
        return expr
    # A value sent exactly as one of its code list's codes or labels, which the clean-up leaves as they are,
    # skips the clean-up (for most values of a code-list column, 0.1 CPU s per 1M of the 0.15 the rules
    # cost there): only the mapping and the code's spelling apply. Every other value takes every rule.
    text = f"CAST({source_expr} AS VARCHAR)"
    spelled = canonical_codes(map_code_list(text, col, registry), col, registry)
    return f"(CASE WHEN {text} IN ({', '.join(map(q, known))}) THEN {spelled} ELSE {expr} END)"


def _clean_already(col: Column, registry: Registry) -> list[str]:
    """The codes and labels of ``col``'s code list that :func:`clean_text` returns unchanged: not empty, no
    full-width character, no blank at either end. Blank is judged wider than the clean-up's classes (any
    Unicode separator or "other" category: unassigned, private use, surrogates too), so a value RE2 would
    trim is never taken as clean, whatever Unicode version either side knows."""
    import unicodedata

    name = _code_list_name(col, registry)
    if not name:
        return []
    values = dict.fromkeys(v for pair in registry.code_list(name).codes.items() for v in pair)

    def edge_blank(ch: str) -> bool:
        return unicodedata.category(ch)[0] in "ZC"

    wide = set(FULL)
    return [v for v in values if v and not edge_blank(v[0]) and not edge_blank(v[-1]) and not wide.intersection(v)]


def with_ends(reader: str, sources: list[str]) -> tuple[str, dict[str, tuple[str, str]]]:
    """``reader`` with, per source column, its first and last character's code points as columns of their
    own (see :class:`TextHints`); returns the table expression and each source's pair of column names."""
    ends = {s: (ident(f"__onesource_first_{i}"), ident(f"__onesource_last_{i}")) for i, s in enumerate(sources)}
    extra = ", ".join(f"ord(CAST({ident(s)} AS VARCHAR)) AS {first}, ord(substr(CAST({ident(s)} AS VARCHAR), -1)) "
                      f"AS {last}" for s, (first, last) in ends.items())
    return (f"(SELECT *, {extra} FROM {reader})" if ends else reader), ends


def cleaned_select(reader: str, mapping: dict[str, str], dataset: Dataset, registry: Registry,
                   numbered: bool = False, wide: bool = True) -> str:
    """Every column after the text rules (a subquery, so each value is cleaned once, not per cast)."""
    source, ends = with_ends(reader, [mapping[c.name] for c in dataset.columns if c.name in mapping])
    cols = ", ".join(f"{text_sql(ident(mapping[c.name]), c, registry, TextHints(ends[mapping[c.name]], wide))} "
                     f"AS {ident(c.name)}" if c.name in mapping
                     else f"NULL::VARCHAR AS {ident(c.name)}" for c in dataset.columns)
    return f"SELECT {'row_number() OVER () AS __row, ' if numbered else ''}{cols} FROM {source}"


# ---------------------------------------------------------------------------------------------
# The pass itself.
# ---------------------------------------------------------------------------------------------

def _source_columns(con: duckdb.DuckDBPyConnection, extract: Extract, dataset: Dataset) -> tuple[dict[str, str], list[str]]:
    """Map each dataset column to its header in the extract, under the dataset's drift policy.

    Returns the mapping (columns left out are loaded as NULL) and the drift notes. Columns filled from
    their authority are not expected in the extract. ``schema_drift: evolve`` loads an extract that
    lacks optional columns or brings unknown ones (each is noted; the raw file keeps them);
    ``fail``, or a missing required column, fails with every difference listed."""
    if extract.format == "xlsx":
        _check_workbook(extract, dataset)
    try:
        headers = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader_sql(extract)}").fetchall()]
    except duckdb.Error as exc:
        raise StandardizeError(dataset.name, extract.source, str(extract.path), _read_error(exc, extract)) from exc
    by_key = {h.strip().lstrip("\ufeff").casefold(): h for h in headers}
    mapping, missing = {}, []
    for col in dataset.columns:
        if col.from_authority:
            continue
        found = by_key.get(col.source.strip().casefold())
        if found is None:
            missing.append(col)
        else:
            mapping[col.name] = found
    used = {h.strip().lstrip("\ufeff").casefold() for h in mapping.values()}
    # the department may still send a column the registry fills from its authority: known, not read, no drift
    taken = {c.source.strip().casefold(): c for c in dataset.columns if c.from_authority}
    not_read = [(h, taken[k]) for h in headers if (k := h.strip().lstrip("\ufeff").casefold()) in taken
                and k not in used]
    extra = [h for h in headers if h.strip().lstrip("\ufeff").casefold() not in used | set(taken)
             and not h.startswith("column")]  # DuckDB names header-less columns column0, column1, ...
    notes = [f"column {c.source!r} ({c.name}{', required' if c.required else ''}) is missing" for c in missing]
    notes += [f"unknown column {h!r} (not in the registry)" for h in extra]
    if len(missing) == len(extra) == 1:
        notes.append(f"{missing[0].source!r} may have been renamed to {extra[0]!r}: if so, update the column's "
                     "'source' in the registry")
    # a column gone while another appeared is likely a rename: loading NULLs would hide the values
    breaking = [c for c in missing if c.required] or (missing and extra) or \
        (notes if dataset.schema_drift == "fail" else [])
    if breaking:
        raise StandardizeError(
            dataset.name, extract.source, str(extract.path),
            f"the extract's columns differ from the registry (schema_drift: {dataset.schema_drift}): "
            + "; ".join(notes) + f". The file has {', '.join(map(repr, headers))}. Either the department changed "
            "its export (update the dataset in the registry: a new version) or the extract is incomplete",
        )
    notes += [f"column {h!r} is not read: {c.name} is filled from its authority (from_authority)"
              for h, c in not_read]
    return mapping, notes


def _check_workbook(extract: Extract, dataset: Dataset) -> None:
    """A damaged XLSX (a truncated upload, a renamed file) makes DuckDB's excel reader spin forever:
    check the zip container and its workbook part first, and refuse with the reason."""
    import zipfile

    try:
        with zipfile.ZipFile(extract.path) as z:
            names = set(z.namelist())
            broken = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise StandardizeError(dataset.name, extract.source, str(extract.path),
                               f"is not a valid XLSX workbook ({exc}); export it again from the spreadsheet") from exc
    if "xl/workbook.xml" not in names or broken is not None:
        raise StandardizeError(dataset.name, extract.source, str(extract.path),
                               "is not a valid XLSX workbook (no workbook part, or a damaged member "
                               f"{broken!r}); export it again from the spreadsheet")


def _sniff_encoding(path: Path) -> str | None:
    """'gbk' when the file's start is not UTF-8 but decodes as GB18030, else None."""
    head = path.read_bytes()[: 1 << 16]
    try:
        head.decode("utf-8")
        return None
    except UnicodeDecodeError as exc:
        if exc.start > len(head) - 4:
            return None  # cut inside a character at the sample's end
    try:
        head.decode("gb18030")
        return "gbk"
    except UnicodeDecodeError:
        return None


def _read_error(exc: duckdb.Error, extract: Extract) -> str:
    full = str(exc)
    first = full.split("\n")[0]
    declared = str(extract.read_options.get("encoding", "utf-8")).lower()
    if extract.format == "csv" and csv_encoding(extract.read_options) == "utf-8" and _sniff_encoding(extract.path) == "gbk":
        return (f"is not UTF-8 but GBK/GB18030 ({first}); set 'encoding: gbk' in the dataset's connector, "
                "or ask the department to export UTF-8")
    if "unicode" in full.lower() or "encoding" in full.lower():
        return f"cannot be read as {declared}: {first}; check the connector's 'encoding'"
    return f"cannot be read as {extract.format}: {first}"


def _diagnose(con: duckdb.DuckDBPyConnection, extract: Extract, dataset: Dataset, registry: Registry,
              mapping: dict[str, str], limit: int = 50) -> tuple[list[CellProblem], int]:
    """Find every cell the strict pass refused, with its row and column."""
    numbered = f"({cleaned_select(reader_sql(extract), mapping, dataset, registry, numbered=True)})"
    checks = []
    for col in dataset.columns:
        if col.type == "string":
            continue
        name = ident(col.name)
        checks.append(
            f"SELECT __row, {q(col.name)} AS col, {name} AS value FROM {numbered} "
            f"WHERE {name} IS NOT NULL AND {cast_type(name, col, strict=False)} IS NULL"
        )
    if not checks:
        return [], 0
    union = " UNION ALL ".join(checks)
    total = one(con, f"SELECT count(*) FROM ({union})")[0]
    rows = con.execute(f"SELECT * FROM ({union}) ORDER BY __row, col LIMIT {limit}").fetchall()
    types = {c.name: c.type for c in dataset.columns}
    return [CellProblem(row=r, column=c, value=v, reason=f"not a valid {types[c]}") for r, c, v in rows], total


def _write_staged(con: duckdb.DuckDBPyConnection, select: str, out: Path) -> None:
    """The staged batch as one Parquet file, in the extract's row order (validation names rows by it)."""
    con.execute(f"COPY ({select}) TO {q(str(out))} ({PARQUET_WRITE})")


# Types DuckDB's CSV reader parses exactly as the general path's cast does (ISO dates, plain numbers;
# spaces around a value are ignored by both), but ~2x faster than reading text and casting it.
_NATIVE_CSV = ("integer", "decimal", "date")


def _typed_csv(con: duckdb.DuckDBPyConnection, extract: Extract, dataset: Dataset, registry: Registry,
               mapping: dict[str, str], out: Path, wide: bool) -> bool:
    """The optimistic first attempt for CSV: numbers and dates parsed by the reader, text columns
    through the text rules. Any value that needs more (a thousands separator, full-width digits,
    another date format) or is bad fails the attempt, which writes nothing: the general path then
    reads the file again, applies every rule and names every bad cell."""
    native = {c.name: mapping[c.name] for c in dataset.columns if c.name in mapping and c.type in _NATIVE_CSV}
    if extract.format != "csv" or not native:
        return False
    reader, ends = with_ends(reader_sql(extract, {native[n]: dataset.column(n).duck_type for n in native}),
                             [mapping[c.name] for c in dataset.columns if c.name in mapping and c.name not in native])
    columns = []
    for c in dataset.columns:
        if c.name in native:
            columns.append(f"{ident(native[c.name])} AS {ident(c.name)}")
        elif c.name in mapping:
            text = text_sql(ident(mapping[c.name]), c, registry, TextHints(ends[mapping[c.name]], wide))
            columns.append(f"{cast_type(text, c, strict=True)} AS {ident(c.name)}")
        else:
            columns.append(f"NULL::{c.duck_type} AS {ident(c.name)}")
    try:
        _write_staged(con, f"SELECT {', '.join(columns)} FROM {reader}", out)
        return True
    except duckdb.Error:
        out.unlink(missing_ok=True)
        return False


def standardize(con: duckdb.DuckDBPyConnection, extract: Extract, dataset: Dataset, registry: Registry,
                out: Path) -> StagedBatch:
    """Write the standardized batch of ``extract`` to ``out`` (Parquet); raise with every bad cell."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onesource-wide-forms") as pool:
        # the connector may have looked already (the file connector does as it copies a file in)
        scan = pool.submit(holds_wide_forms, extract.path) \
            if extract.wide_forms is None and utf8_csv(extract.format, extract.read_options) else None
        mapping, drift = _source_columns(con, extract, dataset)
        wide = scan.result() if scan is not None else extract.wide_forms is not False
    out.parent.mkdir(parents=True, exist_ok=True)
    if not _typed_csv(con, extract, dataset, registry, mapping, out, wide):
        _general(con, extract, dataset, registry, mapping, out, wide)
    rows = one(con, f"SELECT count(*) FROM read_parquet({q(str(out))})")[0]
    return StagedBatch(path=out, rows=rows, drift=tuple(drift))


def _general(con: duckdb.DuckDBPyConnection, extract: Extract, dataset: Dataset, registry: Registry,
             mapping: dict[str, str], out: Path, wide: bool = True) -> None:
    """Every value as text through every rule, cast strictly; on failure, name every bad cell."""
    typed = ", ".join(f"{cast_type(ident(c.name), c, strict=True)} AS {ident(c.name)}" for c in dataset.columns)
    cleaned = cleaned_select(reader_sql(extract), mapping, dataset, registry, wide=wide)
    try:
        _write_staged(con, f"SELECT {typed} FROM ({cleaned})", out)
    except duckdb.Error as exc:
        out.unlink(missing_ok=True)
        try:
            problems, total = _diagnose(con, extract, dataset, registry, mapping)
        except duckdb.Error:
            problems, total = [], 0  # the file itself is unreadable: the read error below says why
        if problems:
            raise StandardizeError(dataset.name, extract.source, str(extract.path),
                                   f"{total} value(s) cannot be converted to their column type",
                                   problems, total) from exc
        raise StandardizeError(dataset.name, extract.source, str(extract.path), _read_error(exc, extract)) from exc
