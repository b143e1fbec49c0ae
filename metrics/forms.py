"""Forms filled from the lake: a registry form template (``forms/*.yaml``, schemas.model.Form) filled for one
subject or for every subject in a jurisdiction, exported as the spreadsheet the office files.

Every value is read through the governed engine as the department (and user) that asks, so its grants, masks,
row filters and jurisdiction apply and each read is audited like any query: a form never shows what its
requester could not query. ``query`` is that engine's ``query`` bound to the requester (:func:`engine_query`).

How a form is filled:

1. its subjects: the key column of the form's ``subjects`` dataset, for one key value or for every row whose
   division column falls under the jurisdiction's code (:func:`division_prefix`);
2. per bound dataset, one query for its fields' columns and its key column, for those key values (in batches);
   a dataset keyed by more than the subject (a monthly figure) gives its latest row (the greatest remaining key);
   a key the requester sees masked is matched with ``match_value`` where a grant allows it;
3. a cell is *prefilled* when its field is bound and the requester read a value for it; a field whose dataset is
   not granted, or whose column the requester sees masked, is *withheld* (the reason is kept), and the person
   types it, as a ``typed`` field.

The prefill rate of a filled form is prefilled cells / cells; its fields no longer typed are the prefilled cells.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import TerminalError
from schemas.model import Column, Dataset, Form, FormField, Registry

Query = Callable[[str], Any]
"""Runs one governed SELECT as the requester; returns a sharing.sql.QueryResult (``columns``, ``rows``,
``policy``)."""

IN_BATCH = 500
"""Key values per query when reading a dataset for a jurisdiction's subjects (the SQL stays well under the
engine's size limit: 500 credit codes are ~11 KB)."""
MATCH_BATCH = 50
"""Key values per query when the key is matched with match_value (each becomes a column of the relation)."""
SUBJECT = "form_subject_key"
"""Output name of the matched key in a match query (not a column name any dataset of the demo uses)."""


class FormError(TerminalError):
    """A form cannot be filled as asked: the message names the form, the subject or jurisdiction, and what to do."""


@dataclass(frozen=True)
class FilledForm:
    """A form filled for ``scope`` (a jurisdiction's division code or one subject's key): a row per subject,
    a value per field in the form's order."""

    form: Form
    scope: str
    subjects: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    prefilled: tuple[tuple[bool, ...], ...]
    """Per row and field: a value was read from the field's dataset (False: typed, withheld, or not held: NULL or
    blank text)."""
    withheld: dict[str, str] = field(default_factory=dict)
    """Field label -> why the requester could not read it (not granted, masked, refused)."""
    filled_on: dt.date = field(default_factory=dt.date.today)

    @property
    def cells(self) -> int:
        return len(self.subjects) * len(self.form.fields)

    @property
    def filled(self) -> int:
        """Cells no longer typed: prefilled from the fields' datasets."""
        return sum(sum(r) for r in self.prefilled)

    @property
    def rate(self) -> float | None:
        """Prefilled cells / cells (None: no subject)."""
        return self.filled / self.cells if self.cells else None

    @property
    def typed_fields(self) -> list[str]:
        """Fields the person still types for at least one subject (typed, withheld, or not held for someone)."""
        return [f.label for i, f in enumerate(self.form.fields) if not all(r[i] for r in self.prefilled)]

    def summary(self) -> dict[str, Any]:
        return {"form": self.form.code, "name": self.form.name, "scope": self.scope, "subjects": len(self.subjects),
                "fields": len(self.form.fields), "bound_fields": bound_fields(self.form), "cells": self.cells,
                "prefilled": self.filled, "prefill_rate": None if self.rate is None else round(self.rate, 4),
                "typed_fields": self.typed_fields, "withheld": self.withheld}


def bound_fields(form: Form) -> int:
    """Fields the template binds to an authority (the others are typed by design)."""
    return sum(1 for f in form.fields if not f.typed)


# -- where subjects and fields are read --------------------------------------------------------------------

def division_prefix(code: str) -> str:
    """What every division code under ``code`` starts with (schemas.model.division_prefix: the city's 430100 ->
    4301, a district's 430102 itself, a street's 430102001 or 430102001000 -> 430102001), once ``code`` is one.

    >>> division_prefix("430100"), division_prefix("430102"), division_prefix("430102001000")
    ('4301', '430102', '430102001')
    """
    from schemas.model import division_prefix as significant

    text = str(code).strip()
    if not text.isascii() or not text.isdigit() or len(text) not in (6, 9, 12):
        raise FormError(f"{code!r} is not a division code: a district has 6 digits (GB/T 2260, e.g. 430102), a "
                        "street 9 or 12 (e.g. 430102001); give the jurisdiction's code")
    return significant(text)


def _known_jurisdiction(registry: Registry, code: str) -> None:
    """A registry that declares its organisations (organisations.yaml) fills forms for those only."""
    organisations = getattr(registry, "organisations", ())
    if organisations and code not in {o.code for o in organisations}:
        from schemas.model import unknown_name_message

        raise FormError(unknown_name_message("organisation", code, {o.code for o in organisations})
                        + " (organisations.yaml)")


def key_column(ds: Dataset, element: str) -> Column | None:
    """The column of ``ds`` holding the subject's key element: its own key column first, one it collects
    rather than fills from an authority next."""
    held = [c for c in ds.columns if c.element == element]
    return next((c for c in held if c.name in ds.key), None) or next(
        (c for c in held if not c.from_authority), None) or (held[0] if held else None)


def division_column(ds: Dataset) -> str:
    """The column placing a row of ``ds`` in a jurisdiction: the dataset's declared ``division_column`` when the
    registry has it, else its one column of the ``division_code`` element."""
    declared = getattr(ds, "division_column", None)
    if declared:
        return declared
    held = [c.name for c in ds.columns if c.element == "division_code"]
    if len(held) != 1:
        raise FormError(f"dataset {ds.name!r} declares no division_column and has {len(held)} columns of the "
                        "division_code element, so its rows cannot be placed in a jurisdiction; declare "
                        "division_column in its registry file")
    return held[0]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _policy(result: Any, dataset: str) -> Any:
    return dict(getattr(result, "policy", None) or ()).get(dataset)


# -- filling --------------------------------------------------------------------------------------------

def fill(registry: Registry, form: Form, query: Query, *, subject: str | None = None,
         jurisdiction: str | None = None, everyone: bool = False, today: dt.date | None = None) -> FilledForm:
    """``form`` filled for one ``subject`` (its key value), every subject in ``jurisdiction`` (a division code),
    or (``everyone``: the platform's city-wide figure) every subject, reading through ``query``."""
    if (subject is not None) + (jurisdiction is not None) + everyone != 1:
        raise FormError(f"form {form.code!r}: fill it for one subject (--subject KEY) or for a jurisdiction "
                        "(--jurisdiction CODE), not both or neither")
    subjects = _subjects(registry, form, query, subject=subject, jurisdiction=jurisdiction)
    values: dict[str, dict[str, Any]] = {f.label: {} for f in form.fields}
    withheld: dict[str, str] = {}
    masked: set[str] = set()
    by_dataset: dict[str, list[FormField]] = {}
    for f in form.fields:
        if not f.typed and f.dataset:
            by_dataset.setdefault(f.dataset, []).append(f)
    for name, fields_ in by_dataset.items():
        got, why, hidden = _read(registry, form, registry.dataset(name), fields_, subjects, query)
        for f in fields_:
            if why:
                withheld[f.label] = why
            elif f.label in hidden:
                withheld[f.label] = hidden[f.label]
                masked.add(f.label)
            values[f.label] = {k: row.get(f.label) for k, row in got.items()}
    rows, prefilled = [], []
    for key in subjects:
        row = tuple(values[f.label].get(key) for f in form.fields)
        rows.append(row)
        prefilled.append(tuple(not f.typed and f.label not in withheld and v is not None and v != ""
                               for f, v in zip(form.fields, row, strict=True)))
    scope = subject if subject is not None else jurisdiction if jurisdiction is not None else "*"
    return FilledForm(form, str(scope), tuple(subjects), tuple(rows),
                      tuple(prefilled), withheld, today or dt.date.today())


def _subjects(registry: Registry, form: Form, query: Query, *, subject: str | None,
              jurisdiction: str | None) -> list[str]:
    ds = registry.dataset(form.subjects)
    key = key_column(ds, form.key)
    if key is None:  # the registry check refuses such a form; a registry read without checks may not
        raise FormError(f"form {form.code!r}: subjects dataset {ds.name!r} has no column of {form.key!r}")
    if subject is not None:
        where = f"{_ident(key.name)} = {_lit(subject)}"
    elif jurisdiction is None:
        where = f"{_ident(key.name)} IS NOT NULL"
    else:
        _known_jurisdiction(registry, jurisdiction)
        where = f"starts_with(CAST({_ident(division_column(ds))} AS VARCHAR), {_lit(division_prefix(jurisdiction))})"
    result = query(f"SELECT DISTINCT {_ident(key.name)} FROM shared.{_ident(ds.name)} WHERE {where} "
                   f"ORDER BY {_ident(key.name)}")
    access = _policy(result, ds.name)
    if access is not None and key.name in access.masked:
        raise FormError(f"form {form.code!r}: you see {ds.name}.{key.name} masked, so its subjects cannot be told "
                        f"apart; the form is filled by a department that holds {form.key!r} in full (the owner "
                        f"{ds.owner}, or one granted it)")
    found = [str(r[0]) for r in result.rows if r[0] is not None]
    if subject is not None and not found:
        raise FormError(f"form {form.code!r}: no subject {subject!r} in {ds.name} (or not one you may read); "
                        f"check the {form.key} value")
    return found


def _read(registry: Registry, form: Form, ds: Dataset, fields_: list[FormField], subjects: list[str],
          query: Query) -> tuple[dict[str, dict[str, Any]], str | None, dict[str, str]]:
    """(subject -> label -> value, why the dataset could not be read, label -> why its column is withheld)."""
    from sharing.exceptions import QueryRefused

    key = key_column(ds, form.key)
    assert key is not None  # the registry check: every bound dataset holds the key element
    columns = {f.label: next(c.name for c in ds.columns if c.element == f.element) for f in fields_}
    rest = [k for k in ds.key if k != key.name]  # a monthly figure: the latest row per subject
    order = ", ".join(f"{_ident(k)} DESC NULLS LAST" for k in rest)
    # the remaining key columns are read too: the latest row is chosen by them (and a match query orders by them)
    picked = ", ".join(_ident(c) for c in dict.fromkeys([*columns.values(), *rest]))
    got: dict[str, dict[str, Any]] = {}
    access = None
    try:
        for batch in _batches(subjects, IN_BATCH):
            sql = (f"SELECT {_ident(key.name)}, {picked} FROM shared.{_ident(ds.name)} "
                   f"WHERE {_ident(key.name)} IN ({', '.join(_lit(v) for v in batch)})"
                   + (f" ORDER BY {order}" if order else ""))
            result = query(sql)
            access = _policy(result, ds.name) or access
            if access is not None and key.name in access.masked:
                break
            _take(got, result.columns, result.rows, columns)
        if access is not None and key.name in access.masked:
            if key.name not in access.match:
                return {}, (f"{ds.name}.{key.name} is masked for you and no grant lets you match it, so no row of "
                            f"{ds.name} can be found for a subject; ask {ds.owner} for a match grant on "
                            f"{key.name} (onesource grants add --match {key.name})"), {}
            got = _matched(ds, key, subjects, columns, picked, order, query)
    except QueryRefused as exc:
        return {}, f"{ds.name}: {exc}", {}
    hidden = {label: f"{ds.name}.{col} is masked for you (sensitive); the person filing the form types it"
              for label, col in columns.items() if access is not None and col in access.masked}
    return got, None, hidden


def _matched(ds: Dataset, key: Column, subjects: list[str], columns: dict[str, str], picked: str, order: str,
             query: Query) -> dict[str, dict[str, Any]]:
    """Rows of ``ds`` found by ``match_value`` on its masked key (each value charged to the grant's quota)."""
    got: dict[str, dict[str, Any]] = {}
    for batch in _batches(subjects, MATCH_BATCH):
        case = " ".join(f"WHEN match_value({_ident(key.name)}, {_lit(v)}) THEN {_lit(v)}" for v in batch)
        sql = (f"SELECT * FROM (SELECT CASE {case} END AS {SUBJECT}, {picked} FROM shared.{_ident(ds.name)}) "
               f"AS m WHERE {SUBJECT} IS NOT NULL" + (f" ORDER BY {order}" if order else ""))
        result = query(sql)
        _take(got, result.columns, result.rows, columns)
    return got


def _take(got: dict[str, dict[str, Any]], names: list[str], rows: Iterable[tuple], columns: dict[str, str]) -> None:
    """The first row of each subject (rows come latest first), keyed by the subject's key value."""
    at = {n: i for i, n in enumerate(names)}
    for row in rows:
        subject = str(row[0])
        if subject not in got:
            got[subject] = {label: row[at[col]] for label, col in columns.items()}


def _batches(values: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


# -- the city's figure --------------------------------------------------------------------------------

def prefill_rows(lake: Any, registry: Registry) -> list[dict[str, Any]]:
    """Per form and field, over every subject of the form in the lake: how many subjects it is prefilled for
    (``filled``; ``subjects`` - ``filled`` still type it). Computed from the lake alone, as the KPIs are, since
    it is the city's figure and no department's view: only counts leave it, never a value. A form whose datasets
    are not all published yet has no rows (no partial figure)."""
    from sharing.sql import QueryResult

    published = set(lake.tables("shared"))

    def query(sql: str) -> QueryResult:
        cur = lake.con.execute(sql)
        return QueryResult([d[0] for d in cur.description], cur.fetchall())

    out = []
    for form in registry.forms:
        needed = {form.subjects} | {f.dataset for f in form.fields if not f.typed and f.dataset}
        if not needed <= published:
            continue
        filled = fill(registry, form, query, everyone=True)
        for i, f in enumerate(form.fields):
            out.append({"form": form.code, "form_name": form.name, "position": i + 1, "field": f.label,
                        "element": f.element, "dataset": f.dataset, "typed": f.typed,
                        "subjects": len(filled.subjects), "filled": sum(1 for r in filled.prefilled if r[i])})
    return out


# -- the office's spreadsheet ---------------------------------------------------------------------------

def header_lines(filled: FilledForm) -> list[str]:
    """The layout's lines above the column titles, with ``{form}``, ``{scope}`` and ``{date}`` replaced."""
    values = {"form": filled.form.name, "scope": filled.scope, "date": filled.filled_on.isoformat()}
    return [_substitute(line, values) for line in filled.form.layout.header_rows]


def _substitute(line: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        line = line.replace("{" + name + "}", value)
    return line


def titles(form: Form) -> list[str]:
    return ([form.layout.serial] if form.layout.serial else []) + [f.label for f in form.fields]


def sheet_name(form: Form) -> str:
    return form.layout.sheet or form.name[:31]


def write_xlsx(filled: FilledForm, path: Path) -> Path:
    """The filled form as the office files it: the sheet, the header lines merged across the columns, the
    column titles (frozen below them), one row per subject, the fields' widths. Written beside ``path`` and
    moved into place, so a half-written file is never left under the name."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, Side
    from openpyxl.utils import get_column_letter

    form = filled.form
    heads, cols = header_lines(filled), titles(form)
    wb = Workbook()
    ws = wb.active
    ws.title = sheet_name(form)
    for i, line in enumerate(heads, start=1):
        ws.cell(row=i, column=1, value=line).font = Font(bold=i == 1, size=14 if i == 1 else 11)
        if len(cols) > 1:
            ws.merge_cells(start_row=i, start_column=1, end_row=i, end_column=len(cols))
        ws.cell(row=i, column=1).alignment = Alignment(horizontal="center" if i == 1 else "left")
    top = len(heads) + 1
    for j, title in enumerate(cols, start=1):
        cell = ws.cell(row=top, column=j, value=title)
        cell.font = Font(bold=True)
        cell.alignment = Alignment(horizontal="center", wrap_text=True)
    serial = 1 if form.layout.serial else 0
    line = Side(style="thin")
    grid = Border(left=line, right=line, top=line, bottom=line)
    for n, row in enumerate(filled.rows, start=1):
        if serial:
            ws.cell(row=top + n, column=1, value=n)
        for j, value in enumerate(row, start=1 + serial):
            ws.cell(row=top + n, column=j, value=_cell(value))
    # the form's grid, as printed: every cell of the table is ruled, so a row left blank for the person to type
    # (all of it typed or not held) is still a row of the sheet
    for r in range(top, top + len(filled.rows) + 1):
        for j in range(1, len(cols) + 1):
            ws.cell(row=r, column=j).border = grid
    if serial:
        ws.column_dimensions["A"].width = 6
    for j, f in enumerate(form.fields, start=1 + serial):
        ws.column_dimensions[get_column_letter(j)].width = f.width or max(10, 2 * len(f.label) + 2)
    ws.freeze_panes = ws.cell(row=top + 1, column=1)
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    wb.save(partial)
    partial.replace(path)
    return path


def _cell(value: Any) -> Any:
    """A value as a spreadsheet cell: decimals as numbers, everything else as openpyxl writes it."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    return None if value == "" else value  # a blank, as the sheet reads it back


# -- the requester ---------------------------------------------------------------------------------------

def engine_query(engine: Any, department: str, user: str | None = None, purpose: str | None = None) -> Query:
    """``engine.query`` as ``department`` (and ``user``): every read of a fill governed and audited."""
    def run(sql: str) -> Any:
        return engine.query(department, sql, user=user, purpose=purpose)
    return run
