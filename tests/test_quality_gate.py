"""The registry-derived GX suite: every rule kind can fail, says where, and has the right severity."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quality import SuiteContext, suite_specs, validate_batch
from schemas import load_registry
from tests.helpers import USCC, firms_dataset, uscc_codes, write_registry

BAD_CHECK = USCC[1][:-1] + ("0" if USCC[1][-1] != "0" else "1")


def staged(tmp_path, rows: list[tuple]) -> str:
    path = tmp_path / "batch.parquet"
    values = ", ".join(
        f"({', '.join('NULL' if v is None else repr(v) if not isinstance(v, dt.date) else f'DATE {str(v)!r}' for v in r)})"
        for r in rows)
    duckdb.sql(f"""COPY (SELECT uscc, enterprise_name, enterprise_status, capital::DECIMAL(18,2) AS capital,
                              staff::BIGINT AS staff, founded::DATE AS founded
                       FROM (VALUES {values}) t(uscc, enterprise_name, enterprise_status, capital, staff, founded))
                  TO '{path}' (FORMAT parquet)""")
    return path


GOOD = [(USCC[0], "甲", "1", 1.5, 3, dt.date(2020, 1, 1)), (USCC[1], "乙", "2", None, None, None)]


def run(settings, rows, tmp_path, context=None, fast_path=True, **dataset):
    if dataset:
        write_registry(settings.registry_dir, [firms_dataset(**dataset)])
    reg = load_registry(settings.registry_dir)
    return validate_batch(reg.dataset("firms"), reg, staged(tmp_path, rows), context, fast_path=fast_path)


def failed(report):
    return {(r.check, r.column, r.blocking, r.unexpected_count) for r in report.results if not r.success and not r.skipped}


def test_suite_is_derived_from_the_registry(tiny):
    reg = load_registry(tiny.registry_dir)
    specs = {(s.check, s.column, s.blocking) for s in suite_specs(reg.dataset("firms"), reg)}
    assert {("key_unique", "uscc", True), ("required", "enterprise_name", True), ("code_list", "enterprise_status", True),
            ("type", "staff", True), ("format", "uscc", True), ("check_digit", "uscc", True)} <= specs


def test_clean_batch_passes(tiny, tmp_path):
    report = run(tiny, GOOD, tmp_path)
    assert report.passed and report.rows == 2 and not report.warnings and failed(report) == set()


def test_wrong_type_fails_the_type_check(tiny, tmp_path):
    path = tmp_path / "batch.parquet"
    duckdb.sql(f"""COPY (SELECT '{USCC[0]}' AS uscc, '甲' AS enterprise_name, '1' AS enterprise_status,
                   1.5::DECIMAL(18,2) AS capital, 'three' AS staff, DATE '2020-01-01' AS founded) TO '{path}'""")
    reg = load_registry(tiny.registry_dir)
    report = validate_batch(reg.dataset("firms"), reg, path)
    assert [(r.check, r.column) for r in report.blocking_failures] == [("type", "staff")]


def test_failures_name_rows_and_values(tiny, tmp_path):
    rows = [GOOD[0], (USCC[0], None, "7", None, None, None)]
    report = run(tiny, rows, tmp_path)
    by = {(r.check, r.column): r for r in report.blocking_failures}
    assert set(by) == {("key_unique", "uscc"), ("required", "enterprise_name"), ("code_list", "enterprise_status")}
    assert by[("key_unique", "uscc")].sample_rows == (1, 2)
    assert by[("required", "enterprise_name")].sample_rows == (2,)
    assert by[("code_list", "enterprise_status")].sample_values == ("7",)
    assert report.row_reasons == {0: ("key_unique:uscc",), 1: ("key_unique:uscc", "required:enterprise_name",
                                                                "code_list:enterprise_status")}


def test_a_hash_collision_in_the_uniqueness_verdict_is_cleared_by_the_second_pass(tiny, tmp_path, monkeypatch):
    """The first pass counts distinct hashes: a collision (forced here) looks like a duplicate, so the
    exact second pass runs, finds no duplicated value, and the check passes."""
    from great_expectations.compatibility.sqlalchemy import sqlalchemy as sa

    import quality.expectations as expectations

    verdicts = []
    real = expectations.ExpectColumnValuesToBeUniqueByHash._validate

    def seen(self, metrics, *a, **kw):
        verdicts.append(metrics["column.unique_proportion_by_hash"])
        return real(self, metrics, *a, **kw)

    monkeypatch.setattr(expectations.ExpectColumnValuesToBeUniqueByHash, "_validate", seen)
    monkeypatch.setattr(expectations, "_hashed", sa.func.length)
    monkeypatch.setattr(expectations, "_increasing_count", lambda *a: None)  # not proven distinct by their order
    report = run(tiny, GOOD, tmp_path)  # both codes are 18 characters long: one "hash" for two values
    assert verdicts == [0.5]
    [key] = [r for r in report.results if r.check == "key_unique"]
    assert key.success and key.expectation == "expect_column_values_to_be_unique" and report.passed


def test_check_digit_is_blocking_by_default_and_overridable(tiny, tmp_path):
    rows = [GOOD[0], (BAD_CHECK, "乙", "1", None, None, None)]
    assert failed(run(tiny, rows, tmp_path)) == {("check_digit", "uscc", True, 1)}
    report = run(tiny, rows, tmp_path, quality={"severity": {"check_digit": "warning"}})
    assert report.passed and [(w.check, w.sample_values) for w in report.warnings] == [("check_digit", (BAD_CHECK,))]


def test_format_rule(tiny, tmp_path):
    rows = [GOOD[0], ("NOT-A-CODE", "乙", "1", None, None, None)]
    assert {f[0] for f in failed(run(tiny, rows, tmp_path))} == {"format", "check_digit"}


def test_range_is_a_warning_by_default(tiny, tmp_path):
    ds = firms_dataset()
    ds["columns"][4]["min"], ds["columns"][4]["max"] = 0, 100
    ds["columns"][5]["min"] = "2000-01-01"
    rows = [GOOD[0], (USCC[1], "乙", "1", None, 1000, dt.date(1990, 5, 1))]
    report = run(tiny, rows, tmp_path, **{k: v for k, v in ds.items() if k == "columns"})
    assert report.passed and failed(report) == {("range", "staff", False, 1), ("range", "founded", False, 1)}


def test_reference_to_the_authority(tiny, tmp_path):
    tax = firms_dataset(name="taxpayers", owner="tax", system="tax_core", share_type="unconditional",
                        connector={"kind": "file", "path": "tax/*.csv"})
    write_registry(tiny.registry_dir, [firms_dataset(), tax])
    reg = load_registry(tiny.registry_dir)
    keys = tmp_path / "firms_keys.parquet"
    duckdb.sql(f"COPY (SELECT '{USCC[0]}' AS key) TO '{keys}' (FORMAT parquet)")
    ctx = SuiteContext(references={"firms": str(keys)})
    report = validate_batch(reg.dataset("taxpayers"), reg, staged(tmp_path, GOOD), ctx)
    assert report.passed and failed(report) == {("reference", "uscc", False, 1)}
    assert report.warnings[0].sample_values == (USCC[1],)
    # the authority has no snapshot yet: the check is recorded as skipped, not silently dropped
    skipped = validate_batch(reg.dataset("taxpayers"), reg, staged(tmp_path, GOOD), SuiteContext(references={"firms": None}))
    assert [(s.check, s.skipped) for s in skipped.skipped] == [("reference", "firms has no published snapshot yet")]


def test_volume_against_previous_load(tiny, tmp_path):
    report = run(tiny, GOOD, tmp_path, SuiteContext(previous_rows=10))
    assert failed(report) == {("volume", None, False, 0)} and report.passed
    assert failed(run(tiny, GOOD, tmp_path, SuiteContext(previous_rows=3))) == set()


def test_freshness_against_update_cycle(tiny, tmp_path):
    ctx = SuiteContext(now=dt.datetime(2020, 1, 1, 12))
    report = run(tiny, GOOD, tmp_path, ctx, quality={"freshness_column": "founded"})
    assert failed(report) == set()  # newest founded 2020-01-01, cycle daily
    stale = SuiteContext(now=dt.datetime(2020, 3, 1))
    assert {f[0] for f in failed(run(tiny, GOOD, tmp_path, stale))} == {"freshness"}


def test_custom_expectations_from_the_registry(tiny, tmp_path):
    quality = {"expectations": [
        {"type": "ExpectColumnValuesToBeBetween", "kwargs": {"column": "capital", "max_value": 1}, "blocking": True},
        {"type": "ExpectTableRowCountToBeBetween", "kwargs": {"min_value": 1}}]}
    report = run(tiny, GOOD, tmp_path, quality=quality)
    assert failed(report) == {("custom", "capital", True, 1)} and not report.passed


def test_unknown_custom_expectation_is_a_clear_error(tiny, tmp_path):
    from quality.exceptions import SuiteError

    with pytest.raises(SuiteError, match="ExpectNoSuchThing is not a Great Expectations expectation"):
        run(tiny, GOOD, tmp_path, quality={"expectations": [{"type": "ExpectNoSuchThing", "kwargs": {}}]})


def test_registry_rejects_bad_quality_settings(tmp_path):
    from schemas import check_registry

    root = write_registry(tmp_path / "r", [firms_dataset(quality={"severity": {"format": "maybe", "nope": "warning"},
                                                                  "freshness_column": "enterprise_name"})])
    issues = [str(i) for i in check_registry(root)[1]]
    assert any("severity of 'format' must be blocking or warning" in i for i in issues)
    assert any("unknown rule kind 'nope'" in i for i in issues)
    assert any("freshness_column 'enterprise_name' must be one of its date/timestamp columns" in i for i in issues)


def test_missing_values_belong_to_the_required_check_not_the_check_digit(tiny, tmp_path):
    rows = [GOOD[0], (None, "乙", "1", None, None, None)]
    assert {f[0] for f in failed(run(tiny, rows, tmp_path))} == {"required"}


def test_check_digit_fast_path_and_sql_give_the_same_report(tiny, tmp_path, monkeypatch):
    """The vectorised checks beside GX (their failing values in files GX's query reads), the worker's
    own SQL fallback, and GX evaluating the per-value SQL itself report the same rows, values and
    counts, for the check digits and the format rule (answered in the same pass)."""
    import tempfile

    import duckdb

    import quality.fastpath as fastpath

    scratch = tmp_path / "scratch"  # where each validation's fast path keeps its answer files
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    bad_format = USCC[2][:10] + "I" + USCC[2][11:]
    rows = [GOOD[0], (BAD_CHECK, "乙", "1", None, None, None), (None, "丙", "1", None, None, None),
            (USCC[2], "丁", "1", None, None, None), (BAD_CHECK[:-2] + "AB", "戊", "1", None, None, None),
            (bad_format, "己", "1", None, None, None)]
    calls = []
    real = fastpath._vectorised
    monkeypatch.setattr(fastpath, "_vectorised", lambda *a: calls.append((a[1].__name__, *sorted(a[2]))) or real(*a))

    def checks(report):
        return {r.check: (r.success, r.unexpected_count, r.sample_rows, sorted(r.sample_values))
                for r in report.results if r.check in ("check_digit", "format")}

    fast = checks(run(tiny, rows, tmp_path))
    assert calls == [("uscc", "check_digit", "format")], "not one pass for both, started before GX asked"
    assert fast == {"check_digit": (False, 3, (2, 5, 6), sorted([BAD_CHECK, BAD_CHECK[:-2] + "AB", bad_format])),
                    "format": (False, 1, (6,), [bad_format])}

    def unreadable(*a):
        raise duckdb.ConversionException("cannot read the column as text")

    monkeypatch.setattr(fastpath, "_vectorised", unreadable)  # the worker's per-value SQL decides
    assert checks(run(tiny, rows, tmp_path)) == fast
    assert checks(run(tiny, rows, tmp_path, fast_path=False)) == fast  # GX evaluates the per-value SQL itself
    assert not list(scratch.glob("onesource-checkdigits-*")), "an answer file outlived its validation"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.sampled_from([0.0, 0.05, 0.4]), broken=st.lists(st.booleans(), min_size=1, max_size=6))
def test_a_slow_check_digit_worker_is_waited_for_by_the_query_that_reads_its_answer(tiny, tmp_path, monkeypatch,
                                                                                    delay, broken):
    """However late the worker finishes, GX's query that reads its answer waits for it (no other query
    does), and the report is the per-value SQL's: the wait is tied to the answer, not found in SQL text."""
    import threading
    import time

    import quality.fastpath as fastpath

    real = fastpath._vectorised

    def slow(*a):
        time.sleep(delay)
        return real(*a)

    monkeypatch.setattr(fastpath, "_vectorised", slow)
    rows = [(BAD_CHECK if bad else USCC[i % 3], f"企业{i}", "1", None, None, None) for i, bad in enumerate(broken)]
    fast = run(tiny, rows, tmp_path)
    reference = run(tiny, rows, tmp_path, fast_path=False)
    assert failed(fast) == failed(reference)
    assert any(r.check == "check_digit" and not r.success for r in fast.results) == any(broken)
    assert fastpath.active() is None, "a validation's fast path outlived it"
    assert not [t for t in threading.enumerate() if t.name.startswith("onesource-checkdigits")]


def test_the_check_digit_worker_reads_the_same_values_from_the_file_or_through_duckdb(tmp_path):
    """The worker reads a text column straight from the batch's Parquet file when it knows the file,
    and through DuckDB from GX's query otherwise (or when the column is not text there)."""
    import duckdb

    import quality.fastpath as fastpath
    from quality.gx_duckdb import batch_query

    batch = staged(tmp_path, GOOD + [(None, "丙", "1", 2.5, 4, None)])
    query = batch_query(str(batch))
    con = duckdb.connect()

    def read(column, parquet):
        return [v for arr in fastpath._column_batches(con, query, column, parquet) for v in arr.to_pylist()]

    assert read('"uscc"', Path(batch)) == read('"uscc"', None) == [USCC[0], USCC[1], None]
    assert read('"staff"', Path(batch)) == read('"staff"', None) == ["3", None, "4"]  # not text: DuckDB casts


def test_data_docs_keep_the_newest_results_per_suite(tiny, tmp_path, monkeypatch):
    """GX re-renders its site index from every stored result on each run, so stored results are capped
    per suite (the lake keeps the whole history); the index links only what is still there."""
    import quality.validate as validate

    monkeypatch.setattr(validate, "DOCS_KEEP", 3)
    reg = load_registry(tiny.registry_dir)
    batch = staged(tmp_path, GOOD)
    for i in range(5):
        validate_batch(reg.dataset("firms"), reg, batch, docs_root=tmp_path / "docs", run_name=f"load{i}")
    gx = tmp_path / "docs" / "gx" / "uncommitted"
    kept = sorted(p.name for p in (gx / "validations" / "onesource" / "firms").iterdir())
    assert kept == ["load2", "load3", "load4"]
    index = validate.build_data_docs(tmp_path / "docs").read_text(encoding="utf-8")
    assert "load4" in index and "load1" not in index


def test_data_docs_render_only_what_is_new(tiny, tmp_path, monkeypatch):
    """Each build renders the results stored since the last one (a full build would render every
    stored result again), and the index still lists them all."""
    import quality.validate as validate

    reg = load_registry(tiny.registry_dir)
    batch, docs = staged(tmp_path, GOOD), tmp_path / "docs"
    validate_batch(reg.dataset("firms"), reg, batch, docs_root=docs, run_name="first")
    validate.build_data_docs(docs)
    validate_batch(reg.dataset("firms"), reg, batch, docs_root=docs, run_name="second")
    context = validate._file_context(str(docs))
    rendered = []
    real = type(context).build_data_docs
    monkeypatch.setattr(type(context), "build_data_docs",
                        lambda self, **kw: rendered.append(kw["resource_identifiers"]) or real(self, **kw))
    index = validate.build_data_docs(docs).read_text(encoding="utf-8")
    [identifiers] = rendered
    assert [k.run_id.run_name for k in identifiers if hasattr(k, "run_id")] == ["second"]
    assert "first" in index and "second" in index
    validate.build_data_docs(docs)
    assert len(rendered) == 1, "nothing new: nothing rendered"


@pytest.mark.timeout(120)
def test_gx_set_up_on_a_thread_takes_turns_with_validation_and_docs(tiny, tmp_path):
    """A load sets GX up on a thread while it standardizes (quality.validate.prepare): a validation or
    a Data Docs build started meanwhile waits for it, and nothing deadlocks (both take the GX lock and
    the docs folder's file lock, always in that order)."""
    import threading

    import quality.validate as validate

    reg = load_registry(tiny.registry_dir)
    batch, docs = staged(tmp_path, GOOD), tmp_path / "fresh-docs"
    validate.prepare(docs)
    validate.prepare(docs)  # a second load in the same process
    builder = threading.Thread(target=validate.build_data_docs, args=(docs,))
    builder.start()
    report = validate_batch(reg.dataset("firms"), reg, batch, docs_root=docs, run_name="meanwhile")
    builder.join(60)
    assert not builder.is_alive() and report.passed
    assert "meanwhile" in validate.build_data_docs(docs).read_text(encoding="utf-8")
    assert (docs / "gx" / "great_expectations.yml").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.one_of(st.none(), st.integers(0, 40)), min_size=1, max_size=60),
       order=st.sampled_from(["as drawn", "sorted", "reversed"]), unique=st.booleans(), fast_path=st.booleans())
def test_key_uniqueness_is_exact_in_any_order(tiny, tmp_path_factory, picks, order, unique, fast_path):
    """The uniqueness check against Python's count, for keys delivered in order (proven distinct by the
    fast path's read of the column, or by one streaming pass in SQL), against it, or in none, with
    duplicates and NULLs anywhere: the verdict and the number of failing rows (every row whose key another
    row also has) are those of the oracle."""
    if unique:
        picks = list(dict.fromkeys(picks))  # NULLs are never duplicates of one another: one kept is enough here
    if order != "as drawn":
        nulls, keys = [p for p in picks if p is None], sorted(p for p in picks if p is not None)
        picks = (keys if order == "sorted" else keys[::-1]) + nulls
    codes = uscc_codes(41)
    rows = [(None if p is None else codes[p], "甲", "1", None, None, None) for p in picks]
    report = run(tiny, rows, tmp_path_factory.mktemp("keys"), fast_path=fast_path)
    [key] = [r for r in report.results if r.check == "key_unique"]
    keys = [p for p in picks if p is not None]
    duplicated = sum(1 for p in keys if keys.count(p) > 1)
    assert (key.success, key.unexpected_count if not key.success else 0) == (duplicated == 0, duplicated)


@pytest.mark.parametrize("fast_path", [True, False])
def test_keys_in_order_are_proven_distinct_without_hashing(tiny, tmp_path, monkeypatch, fast_path):
    """Increasing keys are proven distinct by a pass over them in order (the fast path's read of the column
    for its check digits, or SQL's streaming window), no sort of hashes; keys in no order (beyond the first
    look) and keys with a duplicate still take the hashes."""
    import quality.expectations as expectations
    from quality import fastpath

    hashed, answered = [], []
    real, real_increasing = expectations._hashed, fastpath.FastPath.increasing
    monkeypatch.setattr(expectations, "_hashed", lambda column: hashed.append(1) or real(column))
    monkeypatch.setattr(fastpath.FastPath, "increasing",
                        lambda self, column: answered.append(found := real_increasing(self, column)) or found)
    codes = uscc_codes(expectations.ORDER_PROBE + 10)
    rows = [(c, "甲", "1", None, None, None) for c in codes]
    assert run(tiny, rows, tmp_path, fast_path=fast_path).passed and hashed == []
    swapped = rows[:-2] + [rows[-1], rows[-2]]  # out of order only after the first look
    assert run(tiny, swapped, tmp_path, fast_path=fast_path).passed and hashed == [1]
    twice = rows[:-1] + [rows[-2]]  # in order but not strictly: the last key again
    report = run(tiny, twice, tmp_path, fast_path=fast_path)
    assert failed(report) == {("key_unique", "uscc", True, 2)} and hashed == [1, 1]
    assert answered == ([True, False, False] if fast_path else [])  # the fast path's read said so, when it ran


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.text(max_size=4)), max_size=30), cuts=st.lists(st.integers(0, 30)))
def test_the_fast_paths_order_verdict_over_any_batches(values, cuts):
    """Whether the non-null values increase strictly in UTF-8 byte order (DuckDB's text order), however the
    column arrives in batches: the fast path's verdict against Python's."""
    import pyarrow as pa

    from quality.fastpath import _Rising

    bounds = sorted({0, len(values), *(c for c in cuts if c <= len(values))})
    rising = _Rising()
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        rising.add(pa.array(values[lo:hi], pa.string()))
    present = [v.encode() for v in values if v is not None]
    assert rising.holds == all(a < b for a, b in zip(present, present[1:], strict=False))
