"""File extracts in every form departments send, standardized onto typed columns."""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openpyxl import Workbook

from core.config import Settings
from tests.helpers import HEADER, ROWS, USCC, csv_text, drop, firms_dataset, load, rows, shared_count, write_registry

EXPECTED = [
    (USCC[0], "杭州甲科技有限公司", "1", Decimal("1234.50"), 12, dt.date(2019, 3, 5)),
    (USCC[1], "杭州乙贸易有限公司", "2", Decimal("88.00"), 3, dt.date(2020, 1, 7)),
    (USCC[2], "杭州丙建设有限公司", "1", Decimal("1000000.00"), 1024, dt.date(2021, 12, 31)),
]
COLUMNS = HEADER.strip().split(",")


def published(settings):
    return rows(settings, "SELECT * FROM shared.firms ORDER BY uscc")


def with_connector(settings, **connector):
    write_registry(settings.registry_dir, [firms_dataset(connector={"kind": "file", **connector})])


def test_csv_utf8_with_bom(settings):
    with_connector(settings, path="amr/firms/*.csv", format="csv", encoding="utf-8")
    drop(settings, "amr/firms/firms_1.csv", csv_text(), encoding="utf-8-sig")
    [result] = load(settings)
    assert (result.status, result.rows) == ("published", 3), result.message
    assert published(settings) == sorted(EXPECTED)


@pytest.mark.parametrize("encoding", ["gbk", "gb18030"])
def test_csv_gbk(settings, encoding):
    with_connector(settings, path="amr/firms/*.csv", format="csv", encoding=encoding)
    drop(settings, "amr/firms/firms_1.csv", csv_text(), encoding="gbk")
    [result] = load(settings)
    assert result.status == "published", result.message
    assert published(settings) == sorted(EXPECTED)


def test_gbk_file_declared_utf8_says_which_encoding_to_set(settings):
    with_connector(settings, path="amr/firms/*.csv", format="csv", encoding="utf-8")
    raw = drop(settings, "amr/firms/firms_1.csv", csv_text(), encoding="gbk")
    [result] = load(settings)
    assert result.status == "quarantined"
    assert "encoding: gbk" in result.message and str(raw) in result.message
    assert shared_count(settings, "firms") is None


def test_semicolon_delimiter(settings):
    with_connector(settings, path="amr/firms/*.txt", format="csv", delimiter=";")
    drop(settings, "amr/firms/firms_1.txt", csv_text().replace('","', '";"').replace(",\"", ";\"").replace(
        "统一社会信用代码,企业名称,登记状态,注册资本,人数,成立日期", "统一社会信用代码;企业名称;登记状态;注册资本;人数;成立日期"))
    [result] = load(settings)
    assert result.status == "published", result.message
    assert published(settings) == sorted(EXPECTED)


def test_xlsx(settings):
    with_connector(settings, path="amr/firms/*.xlsx")
    wb = Workbook()
    wb.active.append(COLUMNS)
    for r in ROWS:
        wb.active.append(list(r))
    path = settings.sources_dir / "amr/firms/firms.xlsx"
    path.parent.mkdir(parents=True)
    wb.save(path)
    [result] = load(settings)
    assert result.status == "published", result.message
    assert published(settings) == sorted(EXPECTED)


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_json_and_ndjson(settings, fmt):
    with_connector(settings, path=f"amr/firms/*.{fmt}")
    records = [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]
    text = json.dumps(records, ensure_ascii=False) if fmt == "json" else "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    drop(settings, f"amr/firms/firms.{fmt}", text)
    [result] = load(settings)
    assert result.status == "published", result.message
    assert published(settings) == sorted(EXPECTED)


def test_parquet_with_native_types(settings):
    with_connector(settings, path="amr/firms/*.parquet")
    table = pa.table({"统一社会信用代码": [r[0] for r in ROWS], "企业名称": [r[1] for r in ROWS],
                      "登记状态": [r[2] for r in ROWS], "注册资本": [1234.5, 88.0, 1000000.0], "人数": [12, 3, 1024],
                      "成立日期": [dt.date(2019, 3, 5), dt.date(2020, 1, 7), dt.date(2021, 12, 31)]})
    path = settings.sources_dir / "amr/firms/firms.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    [result] = load(settings)
    assert result.status == "published", result.message
    assert published(settings) == sorted(EXPECTED)


def test_same_file_delivered_twice_loads_once(settings):
    with_connector(settings, path="amr/firms/*.csv", format="csv")
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    drop(settings, "amr/firms/b_same_content.csv", csv_text())
    assert [r.status for r in load(settings)] == ["unchanged"]
    assert rows(settings, "SELECT count(*) FROM ops.loads") == [(1,)]
    landed = list((settings.landing_dir / "firms").glob("*.csv"))
    assert len(landed) == 1 and not landed[0].stat().st_mode & 0o222  # immutable raw file


def test_header_missing_a_column_names_it(settings):
    with_connector(settings, path="amr/firms/*.csv", format="csv")
    drop(settings, "amr/firms/a.csv", csv_text().replace("注册资本", "资本金"))
    [result] = load(settings)
    assert result.status == "quarantined"
    assert "column '注册资本' (capital) is missing" in result.message and "a.csv" in result.message
    assert "'注册资本' may have been renamed to '资本金'" in result.message


def test_bad_values_name_row_and_column(settings):
    with_connector(settings, path="amr/firms/*.csv", format="csv")
    bad = list(ROWS)
    bad[1] = (USCC[1], "杭州乙贸易有限公司", "2", "八十八", "3", "2020-01-07")
    bad[2] = (USCC[2], "杭州丙建设有限公司", "1", "10", "3", "2021-02-30")
    drop(settings, "amr/firms/a.csv", csv_text(bad))
    [result] = load(settings)
    assert result.status == "quarantined"
    assert "2 value(s) cannot be converted" in result.message
    assert "row 2, column 'capital': not a valid decimal (value '八十八')" in result.message
    assert "row 3, column 'founded': not a valid date (value '2021-02-30')" in result.message
    report = next((settings.quarantine_dir / "firms").glob("*/report.json"))
    problems = json.loads(report.read_text(encoding="utf-8"))["problems"]
    assert [(p["row"], p["column"]) for p in problems] == [(2, "capital"), (3, "founded")]


@pytest.mark.parametrize("plain", [True, False])
def test_typed_csv_attempt_and_general_path_agree(settings, monkeypatch, plain):
    """A plain CSV is read with the reader's own number and date parsing (the fast attempt); one that
    needs the rules (thousands separators, other date formats) falls back. Either way the shared table
    holds exactly what the general path alone gives."""
    from lakehouse import standardize as st

    text = csv_text([(USCC[0], " 杭州甲 ", "存续", " 1234.50", "12", "2019-03-05"),
                     (USCC[1], "杭州乙", "2", "88", "", "2020-01-07 ")]) if plain else csv_text()
    outcomes = []
    real = st._typed_csv
    monkeypatch.setattr(st, "_typed_csv", lambda *a: outcomes.append(real(*a)) or outcomes[-1])
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", text)
    assert [r.status for r in load(settings)] == ["published"]
    fast = rows(settings, "SELECT * FROM shared.firms ORDER BY uscc")
    assert outcomes == [plain]

    monkeypatch.setattr(st, "_typed_csv", lambda *a: False)  # the general path only
    other = Settings(home=settings.home.parent / "general")
    write_registry(other.registry_dir)
    drop(other, "amr/firms/a.csv", text)
    assert [r.status for r in load(other)] == ["published"]
    assert rows(other, "SELECT * FROM shared.firms ORDER BY uscc") == fast


def test_old_files_in_the_drop_folder_are_not_read_again(settings, monkeypatch):
    """A drop folder keeps its files: a file already landed (same path, size, modification time) is
    not hashed again on the next run; a changed one is, and loads."""
    import os

    from connectors import files, landing

    reads = []
    real = landing.sha256_file

    def hashing(src):  # the drop folder's files only: each load hashes its landed copy again (landing.Recheck)
        if settings.landing_dir not in Path(src).parents:
            reads.append(Path(src).name)
        return real(src)

    for module in (landing, files):  # files hashes new files early, while the lake opens
        monkeypatch.setattr(module, "sha256_file", hashing)
    write_registry(settings.registry_dir)
    path = drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"] and reads == ["a.csv"]
    assert [r.status for r in load(settings)] == ["unchanged"] and reads == ["a.csv"]
    path.write_text(csv_text(ROWS[:2]), encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert [(r.status, r.rows) for r in load(settings)] == [("published", 2)] and reads == ["a.csv", "a.csv"]
    (settings.landing_dir / "firms" / ".stat-cache.json").unlink()  # lost: the file is hashed once more, then known
    assert [r.status for r in load(settings)] == ["unchanged"] and reads == ["a.csv"] * 3
    assert [r.status for r in load(settings)] == ["unchanged"] and reads == ["a.csv"] * 3


def test_a_file_that_changes_while_it_lands_is_not_landed(settings, monkeypatch):
    """A file is hashed and copied at the same time; if it changes meanwhile (a department still
    writing it), nothing lands and the load is retried later, then lands the finished file."""
    from connectors import SourceUnavailableError, files, landing

    write_registry(settings.registry_dir)
    path = drop(settings, "amr/firms/a.csv", csv_text(ROWS[:2]))
    real = landing.sha256_file

    def still_writing(src):
        digest = real(src)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(",".join(f'"{v}"' for v in ROWS[2]) + "\n")
        return digest

    for module in (landing, files):  # a new file is hashed while the lake opens, then copied
        monkeypatch.setattr(module, "sha256_file", still_writing)
    with pytest.raises(SourceUnavailableError, match="changed or went away while it was being landed"):
        load(settings)
    assert not (settings.landing_dir / "firms").exists() or \
        not [p for p in (settings.landing_dir / "firms").iterdir() if p.name != ".stat-cache.json"]
    for module in (landing, files):
        monkeypatch.setattr(module, "sha256_file", real)
    assert [(r.status, r.rows) for r in load(settings)] == [("published", 3)]


def test_a_file_that_changes_between_its_hash_and_its_copy_is_not_landed(settings, monkeypatch):
    """The hash is computed early (while the lake opens) and the copy later: a change in between, or
    during the copy, refuses the file as well."""
    from connectors import SourceUnavailableError
    from connectors.landing import Landing

    write_registry(settings.registry_dir)
    path = drop(settings, "amr/firms/a.csv", csv_text(ROWS[:2]))
    real = Landing.copy

    def copy_then_change(src, folder):
        copied = real(src, folder)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(",".join(f'"{v}"' for v in ROWS[2]) + "\n")
        return copied

    monkeypatch.setattr(Landing, "copy", staticmethod(copy_then_change))
    with pytest.raises(SourceUnavailableError, match="changed or went away while it was being landed"):
        load(settings)
    assert not [p for p in (settings.landing_dir / "firms").iterdir() if p.name != ".stat-cache.json"]
    monkeypatch.setattr(Landing, "copy", staticmethod(real))
    assert [(r.status, r.rows) for r in load(settings)] == [("published", 3)]


def test_text_rules_on_wide_and_spaced_values():
    """The gated text clean-up gives what trim(translate(...)) gives on every kind of value."""
    import duckdb

    from lakehouse.standardize import FULL, HALF, clean_text

    values = ["甲", " 甲 ", "\u3000甲\u3000", "\u00a0甲", "甲\u2003", "ＡＢＣ１２３", "a b", " a", "a ", "", "   ",
              "甲 乙", "Ａ甲"]
    got = duckdb.execute(f"SELECT v, {clean_text('v', None, None)} FROM unnest(?) t(v)", [values]).fetchall()
    want = duckdb.execute(f"SELECT v, nullif(trim(translate(v, '{FULL}', '{HALF}')), '') FROM unnest(?) t(v)",
                          [values]).fetchall()
    assert got == want
    assert dict(got)["ＡＢＣ１２３"] == "ABC123" and dict(got)["\u3000甲\u3000"] == "甲" and dict(got)["   "] is None


def _copies(settings) -> list[str]:
    """Files being copied in (or copied and never landed) in the landing zone."""
    from connectors.landing import COPYING

    return sorted(p.name for p in settings.landing_dir.rglob(f"{COPYING}*"))


def test_a_copy_made_early_is_removed_when_its_content_was_loaded_before(settings):
    """New files are copied into the landing zone while the lake opens, before the load knows whether their
    content is new: the same content delivered again under another name is not loaded, and its copy goes."""
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    drop(settings, "amr/firms/b.csv", csv_text())  # the same bytes again
    assert [r.status for r in load(settings)] == ["unchanged"]
    assert _copies(settings) == []
    assert len([p for p in (settings.landing_dir / "firms").iterdir() if p.suffix == ".csv"]) == 1


@pytest.mark.parametrize("stop", ["lake", "ledger", "extract"])
def test_a_load_that_stops_before_landing_leaves_no_early_copy(settings, monkeypatch, stop):
    """Whichever step after the early copy fails (opening the lake, reading the ledger, the extract itself),
    the copy of the delivered file (records in clear) does not stay in the landing zone."""
    import connectors.files
    import ingest.load

    def fail(*args, **kwargs):
        raise RuntimeError(f"{stop} failed")

    target = {"lake": (ingest.load, "apply_versions"), "ledger": (ingest.load, "source_state"),
              "extract": (connectors.files.FileConnector, "files")}[stop]
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text())
    if stop == "extract":  # prefetch lists the files first; extract's own listing fails
        real = connectors.files.FileConnector.files
        calls = []
        monkeypatch.setattr(*target, lambda self, ds: calls.append(1) or (real(self, ds) if len(calls) == 1 else fail()))
    else:
        monkeypatch.setattr(*target, fail)
    with pytest.raises(RuntimeError, match=f"{stop} failed"):
        load(settings)
    assert _copies(settings) == []
    monkeypatch.undo()
    assert [r.status for r in load(settings)] == ["published"] and _copies(settings) == []


@pytest.mark.parametrize("when", ["while hashed", "while hashed, after its cache was asked", "while copied",
                                  "before hashed"])
def test_a_drop_file_that_goes_away_while_landing_leaves_no_copy(settings, monkeypatch, when):
    """A department moving its file away after the load listed it: the load says so (and is retried) or
    skips it, and no copy of its records stays in the landing zone."""
    import connectors.files
    from connectors import SourceUnavailableError
    from connectors.landing import Landing

    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text())
    listed = []  # the folder as first listed: the file is still there for extract, whenever it goes
    real_files = connectors.files.FileConnector.files
    monkeypatch.setattr(connectors.files.FileConnector, "files",
                        lambda self, ds: listed or listed.extend(real_files(self, ds)) or listed)
    if when.startswith("while hashed"):
        real, real_copy, copied = connectors.files.sha256_file, Landing.copy, threading.Event()
        monkeypatch.setattr(Landing, "copy", staticmethod(lambda src, folder: (real_copy(src, folder), copied.set())[0]))
        # gone once hashed and copied: the early copy exists
        monkeypatch.setattr(connectors.files, "sha256_file", lambda p: (real(p), copied.wait(10), p.unlink())[0])
        if when.endswith("asked"):  # the file was still there when extract asked the hash cache about it
            monkeypatch.setattr(connectors.landing.HashCache, "known", lambda self, src: None)
    elif when == "while copied":
        real_copy = Landing.copy
        monkeypatch.setattr(Landing, "copy", staticmethod(lambda src, folder: (real_copy(src, folder), src.unlink())[0]))
    else:
        monkeypatch.setattr(connectors.files, "stamp", lambda p: p.unlink() or connectors.landing.stamp(p))
    if when.endswith("asked"):
        with pytest.raises(SourceUnavailableError, match="went away while it was being landed"):
            load(settings)
    else:  # extract asks the hash cache about each listed file first: one gone by then is skipped
        assert [r.status for r in load(settings)] == ["unchanged"]
    assert _copies(settings) == []


def test_the_wide_forms_look_counts_only_for_the_copy_that_becomes_the_raw_file(settings, monkeypatch):
    """The look at a new file's copy is about that copy: when the same content had landed before (its copy is
    then dropped), the extract carries no verdict and standardize looks at the raw file itself."""
    import connectors.files
    from connectors import SourceState, connector_for
    from connectors.landing import Landing
    from schemas import load_registry

    write_registry(settings.registry_dir)
    first = drop(settings, "amr/firms/first.csv", csv_text(ROWS[:1]))
    assert [r.status for r in load(settings)] == ["published"]  # the lake exists
    first.unlink()
    text = csv_text().replace("杭州甲", "杭州ＡＢＣ")  # full-width letters
    path = drop(settings, "amr/firms/a.csv", text)
    landing = Landing(settings.landing_dir)
    landing.land_file("firms", path, "csv", str(path))  # landed by an earlier run that did not publish it
    path.rename(path.with_name("b.csv"))  # delivered again under another name
    monkeypatch.setattr(connectors.files, "holds_wide_forms", lambda p: False)  # as if the copy read other bytes
    ds = load_registry(settings.registry_dir).dataset("firms")
    connector = connector_for("file", settings.sources_dir, landing, {})
    connector.prefetch(ds)
    [extract] = connector.extract(ds, SourceState())
    assert extract.wide_forms is None and _copies(settings) == []
    monkeypatch.undo()
    assert [r.status for r in load(settings)] == ["published"]
    assert any("杭州ABC" in r[1] for r in published(settings))
