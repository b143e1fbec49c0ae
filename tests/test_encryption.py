"""Encryption at rest: with ONESOURCE_ENCRYPT the lake's data files never hold a value in plaintext,
while loads, governed queries and the quarantine work as before."""

from __future__ import annotations

import dataclasses

from onesource.config import Settings
from tests.helpers import USCC, drop, load, rows, write_registry
from tests.test_ingest_files import csv_text


def test_encrypted_lake_files_hold_no_plaintext(tmp_path):
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
