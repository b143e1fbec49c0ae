"""Filling forms (metrics.forms): generated subjects, datasets and fields, the filled form against an oracle
computed by hand from the rows, and the XLSX read back with openpyxl against the layout (sheet, header lines,
column titles, order, widths). The SQL the fill writes runs on a real DuckDB holding the generated rows as
``shared.<dataset>``; the governed engine itself (grants, masks, audit) is exercised by the last tests."""

from __future__ import annotations

import datetime as dt
import string

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics.forms import FormError, division_prefix, fill, header_lines, write_xlsx
from schemas.model import Column, ConnectorSpec, Dataset, Element, Form, FormField, FormLayout, Registry
from sharing.sql import QueryResult

DIVISIONS = ("430102", "430103", "430102001", "430102002", "430104001")
TODAY = dt.date(2026, 11, 29)


def col(name: str, element: str | None = None, type: str = "string") -> Column:
    return Column(name=name, source=name, type=type, element=element)


def dataset(name: str, columns: list[Column], key: tuple[str, ...]) -> Dataset:
    return Dataset(name=name, title=name, owner="d", system="s", connector=ConnectorSpec("file", {}),
                   columns=tuple(columns), key=key, update_cycle="monthly", share_type="unconditional")


@st.composite
def cities(draw):
    """Subjects (a key and a division each), a subjects dataset, 1-3 more datasets holding some subjects' values
    (one of them keyed by subject and month: the latest month counts), and a form over their columns."""
    keys = draw(st.lists(st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=6),
                         min_size=1, max_size=8, unique=True))
    division = {k: draw(st.sampled_from(DIVISIONS)) for k in keys}
    values = st.one_of(st.none(), st.text("甲乙丙丁abc'1", max_size=5))
    tables: dict[str, tuple[list[str], list[tuple]]] = {
        "people": (["pid", "area", "v0"], [(k, division[k], draw(values)) for k in keys])}
    elements = [Element("pid", "编号", "id", "string", "people"), Element("division_code", "区划", "area", "string", "people"),
                Element("v0", "值0", "v0", "string", "people")]
    datasets = [dataset("people", [col("pid", "pid"), col("area", "division_code"),
                                   col("v0", "v0")], ("pid",))]
    for n in range(draw(st.integers(1, 3))):
        name, el = f"ds{n}", f"e{n}"
        monthly = n == 0 and draw(st.booleans())
        held = draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys)))
        rows = []
        for k in held:
            for month in (draw(st.lists(st.sampled_from(["2026-09", "2026-10", "2026-11"]), min_size=1, max_size=3,
                                        unique=True)) if monthly else [None]):
                rows.append((k, draw(values)) + ((month,) if monthly else ()))
        cols = [col("ref", "pid"), col("value", el)] + ([col("month")]
                                                                             if monthly else [])
        tables[name] = (["ref", "value"] + (["month"] if monthly else []), rows)
        datasets.append(dataset(name, cols, ("ref", "month") if monthly else ("ref",)))
        elements.append(Element(el, f"值{n}", el, "string", name))
    bound = [("编号", "pid", "people"), ("区划", "division_code", "people"), ("值0", "v0", "people")] + [
        (f"值{n + 1}", f"e{n}", f"ds{n}") for n in range(len(datasets) - 1)]
    picked = draw(st.lists(st.sampled_from(bound), min_size=1, unique=True))
    fields = [FormField(label, element=el, dataset=ds, width=draw(st.one_of(st.none(), st.integers(5, 40))))
              for label, el, ds in picked]
    for i in range(draw(st.integers(0, 2))):
        fields.insert(draw(st.integers(0, len(fields))), FormField(f"手填{i}", typed=True))
    layout = FormLayout(sheet=draw(st.sampled_from(["", "花名册"])),
                        header_rows=tuple(draw(st.lists(st.sampled_from(["{form}", "填报单位：{scope}", "日期 {date}"]),
                                                        max_size=2))),
                        serial=draw(st.sampled_from([None, "序号"])))
    form = Form(code="f", name="测试表", subject="resident", key="pid", subjects="people", fields=tuple(fields),
                layout=layout)
    registry = Registry((), tuple(elements), (), tuple(datasets), (form,))
    return registry, form, tables, division


def lake_query(tables):
    """A DuckDB holding the rows as shared.<name>; the query callable returns a QueryResult as the engine does."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA shared")
    for name, (cols, rows) in tables.items():
        con.execute(f"CREATE TABLE shared.{name} ({', '.join(f'{c} VARCHAR' for c in cols)})")
        if rows:
            con.executemany(f"INSERT INTO shared.{name} VALUES ({', '.join('?' * len(cols))})", rows)

    def query(sql: str) -> QueryResult:
        cur = con.execute(sql)
        return QueryResult([d[0] for d in cur.description], cur.fetchall())
    return query


def oracle(form, tables, subjects):
    """Each subject's row by hand: a field's value is its dataset's value for the subject (the latest month's
    row where a dataset has months); prefilled when the field is bound and the value is not NULL."""
    rows, marks = [], []
    for k in subjects:
        row, mark = [], []
        for f in form.fields:
            value = None
            if not f.typed:
                cols, data = tables[f.dataset]
                col = "value" if f.dataset != "people" else {"pid": "pid", "division_code": "area", "v0": "v0"}[f.element]
                mine = [dict(zip(cols, r, strict=True)) for r in data if r[0] == k]
                mine.sort(key=lambda r: r.get("month") or "", reverse=True)
                value = mine[0][col] if mine else None
            row.append(value)
            mark.append(not f.typed and value not in (None, ""))
        rows.append(tuple(row))
        marks.append(tuple(mark))
    return rows, marks


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(city=cities(), where=st.sampled_from(["4301", "430102", "430102001", "430103", "430104001", "one"]))
def test_a_filled_form_equals_the_hand_computed_one_and_its_xlsx(tmp_path, city, where):
    from openpyxl import load_workbook

    registry, form, tables, division = city
    query = lake_query(tables)
    if where == "one":
        subject = sorted(division)[0]
        filled = fill(registry, form, query, subject=subject, today=TODAY)
        subjects = [subject]
    else:
        code = {"4301": "430100"}.get(where, where)
        filled = fill(registry, form, query, jurisdiction=code, today=TODAY)
        subjects = sorted(k for k, d in division.items() if d.startswith(where))
    rows, marks = oracle(form, tables, subjects)
    assert list(filled.subjects) == subjects
    assert [list(r) for r in filled.rows] == [list(r) for r in rows]
    assert [list(m) for m in filled.prefilled] == [list(m) for m in marks]
    cells = len(subjects) * len(form.fields)
    assert filled.filled == sum(map(sum, marks))
    assert filled.rate == (sum(map(sum, marks)) / cells if cells else None)
    assert filled.typed_fields == [f.label for i, f in enumerate(form.fields) if not all(m[i] for m in marks)]

    path = write_xlsx(filled, tmp_path / "form.xlsx")
    ws = load_workbook(path).active
    assert ws.title == (form.layout.sheet or form.name)
    heads = [line.replace("{form}", form.name).replace("{scope}", filled.scope).replace("{date}", "2026-11-29")
             for line in form.layout.header_rows]
    assert header_lines(filled) == heads
    got = [list(r) for r in ws.iter_rows(values_only=True)]
    width = len(form.fields) + bool(form.layout.serial)
    expected = [[h] + [None] * (width - 1) for h in heads]
    expected.append(([form.layout.serial] if form.layout.serial else []) + [f.label for f in form.fields])
    for n, row in enumerate(rows, 1):
        expected.append(([n] if form.layout.serial else []) + [None if v == "" else v for v in row])
    assert got == expected
    for line in range(1, len(heads) + 1):  # each header line spans the columns
        if width > 1:
            assert any(str(m) == f"A{line}:{_letter(width)}{line}" for m in ws.merged_cells.ranges)
    for j, f in enumerate(form.fields, start=1 + bool(form.layout.serial)):
        if f.width:
            assert ws.column_dimensions[_letter(j)].width == f.width
    assert ws.freeze_panes == f"A{len(heads) + 2}"


def _letter(n: int) -> str:
    from openpyxl.utils import get_column_letter
    return get_column_letter(n)


def test_division_prefix():
    assert division_prefix("430100") == "4301"
    assert division_prefix("430102") == "430102"
    assert division_prefix("430102001000") == "430102001"
    for bad in ("43010", "abc", "4301020010"):
        with pytest.raises(FormError, match="not a division code"):
            division_prefix(bad)


def test_an_unknown_subject_and_a_missing_scope_are_clear_errors():
    registry, form, tables, _ = _small()
    query = lake_query(tables)
    with pytest.raises(FormError, match="no subject 'ZZZ' in people"):
        fill(registry, form, query, subject="ZZZ")
    with pytest.raises(FormError, match="not both or neither"):
        fill(registry, form, query)


def _small():
    people = dataset("people", [col("pid", "pid"), col("area", "division_code")], ("pid",))
    elements = (Element("pid", "编号", "id", "string", "people"), Element("division_code", "区划", "a", "string", "people"))
    form = Form(code="f", name="表", subject="resident", key="pid", subjects="people",
                fields=(FormField("编号", element="pid", dataset="people"),))
    return Registry((), elements, (), (people,), (form,)), form, {"people": (["pid", "area"], [("A", "430102")])}, {}


def test_a_registry_with_organisations_fills_only_for_one_of_them():
    from dataclasses import replace

    from schemas.model import Organisation

    registry, form, tables, _ = _small()
    registry = replace(registry, organisations=(Organisation("430100", "长沙市"),
                                                Organisation("430102", "芙蓉区", parent="430100")))
    query = lake_query(tables)
    assert fill(registry, form, query, jurisdiction="430102").subjects == ("A",)
    with pytest.raises(FormError, match="unknown organisation '430103'"):
        fill(registry, form, query, jurisdiction="430103")
