"""The 5 PB catalog simulation (bench/scale_sim.py): its counts, and that DuckDB's ducklake extension reads the
synthetic catalog as a real one (the slow test builds a small step on the real PostgreSQL server)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import scale_sim


def test_the_plan_counts_a_5_pb_lake():
    plan = scale_sim.Plan()
    assert plan.live_files == 10_485_760  # 5 PiB / 512 MiB
    full = plan.counts(1.0)
    assert full["tables"] == 5_000
    assert full["live_files_per_table"] * full["tables"] >= plan.live_files
    assert full["file_column_stats"] == full["data_files"] * plan.columns
    assert full["snapshots"] == 5_000 * (100 + 100 // 7)


@settings(max_examples=30, deadline=None)
@given(st.floats(min_value=0.0002, max_value=1.0))
def test_a_step_keeps_each_tables_own_counts(fraction):
    plan = scale_sim.Plan()
    c, full = plan.counts(fraction), plan.counts(1.0)
    assert c["live_files_per_table"] == full["live_files_per_table"]
    assert c["data_files"] == c["tables"] * (c["live_files_per_table"] + c["replaced_files_per_table"])
    assert c["snapshots"] == c["tables"] * c["events_per_table"]
    assert 1 <= c["tables"] <= full["tables"]


@pytest.mark.slow
def test_ducklake_reads_the_synthetic_catalog(monkeypatch):
    """A 0.1% step (5 tables, ~12,600 files): DuckDB lists its tables, each table's live files, an older
    snapshot's fewer files, prunes a scan file by file (measure asserts these against the counts), and the
    expiry past retention schedules replaced files for deletion."""
    monkeypatch.setattr(scale_sim, "DATABASE", "onesource_scale_sim_test")
    plan = scale_sim.Plan()
    try:
        out = scale_sim.step(plan, 0.001, runs=1, log=lambda *_: None)
    finally:
        scale_sim.drop_database()
    q, c = out["queries"], out["counts"]
    assert c["tables"] == 5
    assert 0 < q["time_travel_files"] < c["live_files_per_table"]
    # 10 of 100 days are past the 90-day retention: about a tenth of the snapshots go
    assert abs(q["expired_snapshots"] - c["snapshots"] / 10) <= c["tables"] * 3 + 100
    assert q["files_scheduled_for_deletion"] > 0
    assert out["size"]["database_bytes"] > out["size"]["ducklake_file_column_stats"] > 0
