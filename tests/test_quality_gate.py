"""The foundation's GX suite: each check can fail, and says where."""

from __future__ import annotations

import duckdb

from quality import suite_specs, validate_batch
from schemas import load_registry


def staged(tmp_path, select: str):
    path = tmp_path / "batch.parquet"
    duckdb.sql(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
    return path


GOOD = ("SELECT * FROM (VALUES ('A1', '甲', '1', 1.5::DECIMAL(18,2), 3::BIGINT, DATE '2020-01-01'), "
        "('A2', '乙', '2', NULL, NULL, NULL)) t(uscc, enterprise_name, enterprise_status, capital, staff, founded)")


def test_suite_is_derived_from_the_registry(tiny):
    ds = load_registry(tiny.registry_dir).dataset("firms")
    specs = {(s.check, s.column) for s in suite_specs(ds, load_registry(tiny.registry_dir))}
    assert ("key_unique", "uscc") in specs and ("required", "enterprise_name") in specs
    assert ("code_list", "enterprise_status") in specs and ("type", "staff") in specs


def test_clean_batch_passes(tiny, tmp_path):
    reg = load_registry(tiny.registry_dir)
    report = validate_batch(reg.dataset("firms"), reg, staged(tmp_path, GOOD))
    assert report.passed and report.rows == 2 and not report.warnings


def test_wrong_type_fails_the_type_check(tiny, tmp_path):
    reg = load_registry(tiny.registry_dir)
    bad = GOOD.replace("3::BIGINT", "'three'").replace("NULL, NULL, NULL", "NULL, 'x', NULL")
    report = validate_batch(reg.dataset("firms"), reg, staged(tmp_path, bad))
    assert [(r.check, r.column) for r in report.blocking_failures] == [("type", "staff")]


def test_failures_name_rows_and_values(tiny, tmp_path):
    reg = load_registry(tiny.registry_dir)
    bad = GOOD.replace("('A2', '乙', '2'", "('A1', NULL, '7'")
    report = validate_batch(reg.dataset("firms"), reg, staged(tmp_path, bad))
    failed = {(r.check, r.column): r for r in report.blocking_failures}
    assert set(failed) == {("key_unique", "uscc"), ("required", "enterprise_name"), ("code_list", "enterprise_status")}
    assert failed[("key_unique", "uscc")].sample_rows == (1, 2)
    assert failed[("required", "enterprise_name")].sample_rows == (2,)
    assert failed[("code_list", "enterprise_status")].sample_values == ("7",)
