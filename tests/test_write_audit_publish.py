"""Write-audit-publish: a failing batch never reaches the shared zone, nothing is lost, reruns converge."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ROWS, USCC, csv_text, drop, load, rows, shared_count


def test_blocking_failure_keeps_last_good_snapshot(tiny):
    drop(tiny, "amr/firms/1_good.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]
    good = rows(tiny, "SELECT * FROM shared.firms ORDER BY uscc")

    dup = list(ROWS) + [(USCC[0], "重复的企业", "1", "1", "1", "2020-01-01")]
    raw = drop(tiny, "amr/firms/2_dup.csv", csv_text(dup))
    [result] = load(tiny)
    assert result.status == "quarantined"
    assert "key_unique on uscc: 2 failing record(s) (rows 1, 4)" in result.message
    assert rows(tiny, "SELECT * FROM shared.firms ORDER BY uscc") == good  # last good snapshot stays
    # the raw file is kept, and the quarantined batch with a report saying why
    assert raw.exists() and len(list((tiny.landing_dir / "firms").glob("*.csv"))) == 2
    folder = next((tiny.quarantine_dir / "firms").iterdir())
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["stage"] == "quality" and (folder / "batch.parquet").exists()
    failing = [c for c in report["checks"] if not c["success"]]
    assert [(c["check"], c["column"], c["unexpected_count"]) for c in failing] == [("key_unique", "uscc", 2)]


def test_required_value_missing_is_blocking(tiny):
    bad = list(ROWS)
    bad[1] = (USCC[1], "", "1", "1", "1", "2020-01-01")
    drop(tiny, "amr/firms/a.csv", csv_text(bad))
    [result] = load(tiny)
    assert result.status == "quarantined" and "required on enterprise_name: 1 failing record(s) (rows 2)" in result.message
    assert shared_count(tiny, "firms") is None


def test_code_list_violation_is_blocking(tiny):
    bad = list(ROWS)
    bad[0] = (USCC[0], "甲", "9", "1", "1", "2020-01-01")
    drop(tiny, "amr/firms/a.csv", csv_text(bad))
    [result] = load(tiny)
    assert result.status == "quarantined" and "code_list on enterprise_status" in result.message


def test_fixed_file_releases_the_quarantine(tiny):
    dup = list(ROWS) + [ROWS[0]]
    drop(tiny, "amr/firms/1.csv", csv_text(dup))
    assert [r.status for r in load(tiny)] == ["quarantined"]
    assert [r.status for r in load(tiny)] == ["unchanged"]  # the same bad file is not retried for nothing
    drop(tiny, "amr/firms/2_fixed.csv", csv_text())
    assert [(r.status, r.rows) for r in load(tiny)] == [("published", 3)]
    assert rows(tiny, "SELECT status, count(*) FROM ops.loads GROUP BY ALL ORDER BY 1") == [
        ("published", 1), ("quarantined", 1)]


def test_snapshot_metadata_names_the_load(tiny):
    from schemas import load_registry

    drop(tiny, "amr/firms/a.csv", csv_text())
    [result] = load(tiny)
    [(message, extra)] = rows(tiny, "SELECT commit_message, commit_extra_info FROM lake.snapshots() "
                                    "WHERE commit_message LIKE 'publish%'")
    info = json.loads(extra)
    assert message == f"publish firms load {result.load_id}"
    assert info["sha256"] == rows(tiny, "SELECT sha256 FROM ops.loads")[0][0]
    assert info["registry_version"] == load_registry(tiny.registry_dir).version
    assert info["rows"] == 3 and info["source"].endswith("a.csv")


def test_snapshot_mode_replaces_and_time_travel_keeps_the_past(tiny):
    drop(tiny, "amr/firms/1.csv", csv_text())
    load(tiny)
    drop(tiny, "amr/firms/2.csv", csv_text(ROWS[:1]))
    load(tiny)
    assert shared_count(tiny, "firms") == 1
    versions = rows(tiny, "SELECT snapshot_id FROM lake.snapshots() WHERE commit_message LIKE 'publish%' ORDER BY 1")
    assert rows(tiny, f"SELECT count(*) FROM shared.firms AT (VERSION => {versions[0][0]})") == [(3,)]


@pytest.mark.parametrize("mode", ["snapshot", "append"])
def test_large_batches_are_adopted_not_copied(settings, monkeypatch, mode):
    """A large validated batch is handed to DuckLake as its staged file (no second write); the result is
    the same table, time travel and ledger as a copied one, and the staging area is left empty."""
    from lakehouse import commit as publish_module
    from tests.helpers import firms_dataset, write_registry

    monkeypatch.setattr(publish_module, "ADOPT_ROWS", 2)
    write_registry(settings.registry_dir, [firms_dataset(load_mode=mode)])
    drop(settings, "amr/firms/1.csv", csv_text())
    drop(settings, "amr/firms/2.csv", csv_text(ROWS[:2]))
    assert [r.status for r in load(settings)] == ["published", "published"]
    data = settings.lake.data_path
    adopted = rows(settings, "SELECT data_file FROM ducklake_list_files('lake', 'firms', schema => 'shared')")
    assert adopted and all("onesource-" in f and f.startswith(data) for (f,) in adopted), adopted
    assert shared_count(settings, "firms") == (2 if mode == "snapshot" else 5)
    first = rows(settings, "SELECT min(snapshot_id) FROM lake.snapshots() WHERE commit_message LIKE 'publish%'")[0][0]
    assert rows(settings, f"SELECT count(*) FROM shared.firms AT (VERSION => {first})") == [(3,)]
    assert rows(settings, "SELECT sum(rows_published) FROM ops.loads") == [(5,)]
    assert not list((settings.staging_dir / "firms").glob("*.parquet"))


def test_every_data_file_is_parquet_2_with_zstd(settings, monkeypatch):
    """The lake writes one kind of file (lakehouse.lake.FILE_OPTIONS), whoever writes it: an adopted
    batch (the load's own COPY) and a copied one (DuckLake's insert), in a new lake and in one created
    before the options were chosen."""
    import duckdb

    from lakehouse import commit as publish_module
    from lakehouse import lake as lake_module
    from lakehouse.lake import CATALOG, Lake
    from tests.helpers import firms_dataset, write_registry

    chosen = lake_module.FILE_OPTIONS
    monkeypatch.setattr(lake_module, "FILE_OPTIONS", {})
    with Lake(settings.lake) as lake:  # a lake as older versions created it: DuckLake's defaults
        lake.con.execute(f"CALL {CATALOG}.set_option('data_inlining_row_limit', 0)")  # a file, not inlined
        assert "parquet_version" not in {r[0] for r in lake.con.execute(f"FROM {CATALOG}.options()").fetchall()}
    monkeypatch.setattr(lake_module, "FILE_OPTIONS", chosen)
    write_registry(settings.registry_dir, [firms_dataset(load_mode="append")])  # both batches' files stay
    monkeypatch.setattr(publish_module, "ADOPT_ROWS", 3)
    drop(settings, "amr/firms/1.csv", csv_text())  # 3 rows: adopted
    drop(settings, "amr/firms/2.csv", csv_text(ROWS[:2]))  # 2 rows: copied by DuckLake
    assert [r.status for r in load(settings)] == ["published", "published"]
    files = [f for (f,) in rows(settings, "SELECT data_file FROM ducklake_list_files('lake', 'firms', schema => 'shared')")]
    assert len(files) == 2 and sum("onesource-" in f for f in files) == 1, files
    con = duckdb.connect()
    for f in files:
        assert con.execute(f"SELECT format_version FROM parquet_file_metadata('{f}')").fetchall() == [(2,)], f
        assert {c for (c,) in con.execute(f"SELECT DISTINCT compression FROM parquet_metadata('{f}')").fetchall()} \
            == {"ZSTD"}, f


def test_a_small_batch_is_copied(tiny, monkeypatch):
    """Below ADOPT_ROWS the rows are copied (inlined or written by DuckLake), never adopted: the staged
    file leaves staging and no data file of ours appears in the table."""
    from lakehouse import commit as publish_module

    decisions = []
    real = publish_module._adoptable_path
    monkeypatch.setattr(publish_module, "_adoptable_path", lambda *a: decisions.append(real(*a)) or decisions[-1])
    drop(tiny, "amr/firms/1.csv", csv_text())
    assert [r.status for r in load(tiny)] == ["published"]
    assert decisions == [None]
    assert shared_count(tiny, "firms") == 3
    assert all("onesource-" not in f for (f,) in rows(
        tiny, "SELECT data_file FROM ducklake_list_files('lake', 'firms', schema => 'shared')"))
