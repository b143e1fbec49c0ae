"""Encryption at rest: with ONESOURCE_ENCRYPT the lake's data files never hold a value in plaintext,
while loads, governed queries and the quarantine work as before."""

from __future__ import annotations

import copy
import dataclasses
import sqlite3

from core.config import Settings
from lakehouse.lake import Lake
from tests.helpers import ELEMENTS, USCC, csv_text, drop, load, rows, write_registry


def test_encrypted_lake_files_hold_no_plaintext(tmp_path, monkeypatch):
    from lakehouse import commit as publish_module

    monkeypatch.setattr(publish_module, "ADOPT_ROWS", 1)  # a plain staged file must never be adopted here
    plain = Settings(home=tmp_path / "home")
    settings = dataclasses.replace(plain, lake=dataclasses.replace(plain.lake, encrypted=True))
    assert Settings.from_env({"ONESOURCE_HOME": str(tmp_path / "home"), "ONESOURCE_ENCRYPT": "1"}).lake.encrypted
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    assert sorted(r[0] for r in rows(settings, "SELECT uscc FROM shared.firms")) == sorted(USCC)
    files = [p for p in (tmp_path / "home" / "lake" / "data").rglob("*.parquet")]
    assert files, "the load wrote no data file"
    # Small batches are not inlined into the catalog either (they would be, unencrypted). The catalog
    # itself still holds each file's key and its min/max statistics: it is protected by its own store
    # (PostgreSQL with encrypted disks in a deployment, docs/deploy.md), not by DuckLake.
    for path in files:
        data = path.read_bytes()
        for value in (*USCC, "杭州"):
            assert value.encode() not in data, f"{value} in plaintext in {path}"


def _level4_elements() -> dict:
    elements = copy.deepcopy(ELEMENTS)
    next(e for e in elements["elements"] if e["name"] == "enterprise_name")["sensitivity"] = 4
    return elements


def test_level4_dataset_is_refused_by_an_unencrypted_lake(settings):
    """Sensitivity decides: a dataset with a level-4 column never lands in clear. The refusal names the
    dataset, the columns and the remedy, extracts nothing and leaves the shared zone untouched."""
    write_registry(settings.registry_dir, elements=_level4_elements())
    drop(settings, "amr/firms/a.csv", csv_text())
    [result] = load(settings)
    assert result.status == "failed"
    for fragment in ("firms", "enterprise_name", "level 4", "ONESOURCE_ENCRYPT=1"):
        assert fragment in result.message, result.message
    assert "firms" not in rows(settings, "SELECT table_name FROM information_schema.tables "
                                         "WHERE table_schema = 'shared'")
    assert rows(settings, "SELECT status, error_stage FROM ops.loads") == [("failed", "registry")]
    # the same registry without level 4 loads into the same lake
    write_registry(settings.registry_dir)
    assert [r.status for r in load(settings)] == ["published"]


def test_level4_dataset_loads_encrypted_and_later_writers_never_inline(tmp_path):
    """In an encrypted lake the level-4 dataset publishes. A process that attaches without the flag (a
    portal, a CLI) still writes encrypted files and inlines nothing: both are fixed in the catalog."""
    plain = Settings(home=tmp_path / "home")
    settings = dataclasses.replace(plain, lake=dataclasses.replace(plain.lake, encrypted=True))
    write_registry(settings.registry_dir, elements=_level4_elements())
    drop(settings, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(settings)] == ["published"]
    with Lake(plain.lake) as lake:  # attached without ONESOURCE_ENCRYPT
        assert lake.encrypted
        lake.write("a small insert", "INSERT INTO shared.firms (uscc, enterprise_name) VALUES (?, ?)",
                   ["91330100MA00000001", "小额插入企业"])
    catalog = sqlite3.connect(tmp_path / "home" / "lake" / "catalog.sqlite")
    inlined = [name for (name,) in catalog.execute("SELECT name FROM sqlite_master WHERE name LIKE "
                                                   "'ducklake_inlined_data_%' AND name != 'ducklake_inlined_data_tables'")]
    assert all(catalog.execute(f"SELECT count(*) FROM {name}").fetchone() == (0,) for name in inlined), inlined
    # (the catalog does keep each file's min/max in clear: it is protected by its own store, docs/deploy.md)
    for path in (tmp_path / "home" / "lake" / "data").rglob("*.parquet"):
        data = path.read_bytes()
        for value in ("小额插入企业", "杭州甲科技"):
            assert value.encode() not in data, f"{value} in plaintext in {path}"
