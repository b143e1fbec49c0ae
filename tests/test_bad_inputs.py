"""The bad-input corpus: what departments really send, each case after a good delivery.

For every case: the outcome is what it should be, the message names the file (and, where a cell is
at fault, its row and column) and says what to do; the raw file is kept in the landing zone; a
refused batch leaves the shared table at its last good snapshot."""

from __future__ import annotations

import io
import json

import pytest
from openpyxl import Workbook

from tests.helpers import HEADER, ROWS, USCC, csv_text, drop, firms_dataset, load, rows, write_registry

GOOD = csv_text()
LINES = GOOD.splitlines()


def xlsx(build) -> bytes:
    wb = Workbook()
    ws = wb.active
    build(ws)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _merged(ws) -> None:
    ws.append(HEADER.strip().split(","))
    for r in ROWS:
        ws.append(list(r))
    ws.merge_cells("B2:B3")  # two firms' names merged into one cell: the second row's name is empty


def _formula(ws) -> None:
    ws.append(HEADER.strip().split(","))
    ws.append([USCC[0], "=cmd|' /C calc'!A0", "1", "10", "2", "2020-01-01"])


def without(index: int) -> str:
    """The good extract without one column."""
    keep = [i for i in range(len(ROWS[0])) if i != index]
    header = HEADER.strip().split(",")
    return ",".join(header[i] for i in keep) + "\n" + "".join(_row(*(r[i] for i in keep)) for r in ROWS)


def _row(*values) -> str:
    return ",".join(f'"{v}"' for v in values) + "\n"


# (id, file name, content, format, expected status, fragments the message must hold)
CASES = [
    ("empty-file", "a.csv", b"", "csv", "quarantined", ["a.csv"]),
    ("header-only", "a.csv", HEADER, "csv", "quarantined", ["a.csv", "no rows"]),
    ("truncated-quote", "a.csv", GOOD + '"91330106MA2B0C1D68","半截企业', "csv", "quarantined", ["a.csv"]),
    # DuckDB's sniffer finds the semicolons; the thousands separators that became semicolons are named
    ("wrong-delimiter", "a.csv", GOOD.replace(",", ";"), "csv", "quarantined", ["a.csv", "row 1", "capital"]),
    ("duplicate-headers", "a.csv", HEADER.strip() + ",企业名称\n" + "".join(line + ',"x"\n' for line in LINES[1:]),
     "csv", "published", []),
    ("quoted-newline", "a.csv", GOOD.replace("杭州甲科技有限公司", "杭州甲科技\n有限公司"), "csv", "published", []),
    ("enormous-field", "a.csv", GOOD.replace("杭州甲科技有限公司", "甲" * 200_000), "csv", "published", []),
    ("crlf", "a.csv", GOOD.replace("\n", "\r\n"), "csv", "published", []),
    ("trailing-blank-lines", "a.csv", GOOD + "\n\n\n", "csv", "published", []),
    ("header-spaces-and-case", "a.csv", GOOD.replace("企业名称", " 企业名称 "), "csv", "published", []),
    ("utf8-bom", "a.csv", GOOD.encode("utf-8-sig"), "csv", "published", []),
    ("gbk-declared-utf8", "a.csv", GOOD.encode("gbk"), "csv", "quarantined", ["a.csv", "gbk"]),
    ("mixed-encodings", "a.csv", GOOD.encode("utf-8") + _row(USCC[0], "混合编码企业", "1", "1", "1",
                                                                   "2020-01-01").encode("gbk"),
     "csv", "quarantined", ["a.csv"]),
    ("binary-garbage", "a.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20, "csv", "quarantined", ["a.csv"]),
    ("null-bytes", "a.csv", GOOD.replace("杭州乙", "杭州\x00乙"), "csv", "published", []),
    ("bad-integer", "a.csv", GOOD.replace('"3"', '"三个"'), "csv", "quarantined", ["row 2", "staff"]),
    ("integer-overflow", "a.csv", GOOD.replace('"3"', '"99999999999999999999999"'), "csv", "quarantined",
     ["row 2", "staff"]),
    ("bad-date", "a.csv", GOOD.replace("2020/1/7", "2020-02-30"), "csv", "quarantined", ["row 2", "founded"]),
    ("four-date-formats", "a.csv", GOOD.replace("2019-03-05", "20190305"), "csv", "published", []),
    ("thousands-and-full-width", "a.csv", GOOD.replace("1,234.50", "2,345.60"), "csv", "published", []),
    ("bad-check-digit", "a.csv", GOOD.replace(USCC[0], USCC[0][:-1] + "0"), "csv", "quarantined",
     ["check_digit", "uscc"]),
    ("bad-code", "a.csv", GOOD.replace('"注销"', '"破产"'), "csv", "quarantined", ["code_list", "enterprise_status"]),
    ("blank-required", "a.csv", GOOD.replace("杭州乙贸易有限公司", "   "), "csv", "quarantined",
     ["required", "enterprise_name"]),
    ("duplicate-key", "a.csv", GOOD + LINES[1] + "\n", "csv", "quarantined", ["key_unique", "uscc"]),
    ("missing-required-column", "a.csv", without(1), "csv", "quarantined", ["企业名称", "missing"]),
    ("missing-optional-column", "a.csv", without(3), "csv", "published", []),
    ("xlsx-merged-cells", "a.xlsx", xlsx(_merged), "xlsx", "quarantined", ["required", "enterprise_name"]),
    # a formula is not data (and never evaluated): the cell reads as empty, a required value is missing
    ("xlsx-formula-cell", "a.xlsx", xlsx(_formula), "xlsx", "quarantined", ["required", "enterprise_name"]),
    ("xlsx-not-a-workbook", "a.xlsx", b"PK\x03\x04 this is not a workbook", "xlsx", "quarantined", ["a.xlsx"]),
    ("json-invalid", "a.json", b'[{"uscc": "x", ', "json", "quarantined", ["a.json"]),
    ("json-wrong-shape", "a.json", json.dumps({"items": "not a list"}).encode(), "json", "quarantined", ["a.json"]),
]


@pytest.mark.parametrize(("name", "content", "fmt", "status", "fragments"),
                         [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input(settings, name, content, fmt, status, fragments):
    write_registry(settings.registry_dir, [firms_dataset(connector={"kind": "file", "path": "amr/firms/*",
                                                                    "format": fmt})])
    good = "good.csv" if fmt == "csv" else None
    if good:  # a good delivery first: its snapshot must survive a refused batch
        drop(settings, f"amr/firms/{good}", GOOD)
        assert [r.status for r in load(settings)] == ["published"]
        before = rows(settings, "SELECT * FROM shared.firms ORDER BY uscc")
    drop(settings, f"amr/firms/{name}", content)
    results = [r for r in load(settings) if r.source and r.source.endswith(name)]
    assert results, "the file was not picked up"
    [result] = results
    assert result.status == status, result.message
    for fragment in fragments:
        assert fragment.lower() in result.message.lower(), result.message
    landed = list((settings.landing_dir / "firms").glob(f"*{name[name.rfind('.'):]}"))
    assert landed, "the raw file was not kept"
    if status != "published" and good:
        assert rows(settings, "SELECT * FROM shared.firms ORDER BY uscc") == before
