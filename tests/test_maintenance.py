"""Lake maintenance on a lake with many small loads: fewer files, row counts unchanged, time travel
within the retention unchanged; past the retention, old snapshots go and their files with them."""

from __future__ import annotations

import datetime as dt

from lakehouse import Lake
from lakehouse.maintenance import maintain
from tests.helpers import drop, firms_dataset, load, write_registry
from tests.support.maintenance import extract


def test_maintenance_merges_expires_and_cleans_without_changing_what_is_read(settings):
    write_registry(settings.registry_dir, [firms_dataset(load_mode="append", key=["uscc", "staff"])])
    for i in range(12):  # twelve small appends: twelve small files
        drop(settings, f"amr/firms/{i:02d}.csv", extract(i))
        assert [r.status for r in load(settings)] == ["published"]
    with Lake(settings.lake) as lake:
        rows = lake.con.execute("SELECT count(*), sum(staff) FROM shared.firms").fetchone()
        middle = lake.con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()[0] - 10
        then = lake.con.execute(f"SELECT count(*) FROM shared.firms AT (VERSION => {middle})").fetchone()
        kept = maintain(lake, retention=dt.timedelta(days=30), grace=dt.timedelta(0))
        assert kept.files_merged >= 12 and kept.snapshots_expired == 0
        assert kept.files_after < kept.files_before
        assert lake.con.execute("SELECT count(*), sum(staff) FROM shared.firms").fetchone() == rows
        assert lake.con.execute(f"SELECT count(*) FROM shared.firms AT (VERSION => {middle})").fetchone() == then
        # a retention of zero expires every snapshot but the last; what is read now is unchanged
        gone = maintain(lake, retention=dt.timedelta(0), grace=dt.timedelta(0))
        assert gone.snapshots_expired > 10
        assert lake.con.execute("SELECT count(*), sum(staff) FROM shared.firms").fetchone() == rows
        # the merged-away small files went in the first run, once nothing referenced them
        assert kept.files_deleted >= 12 and gone.files_after == kept.files_after
    assert "merged" in str(kept) and "expired" in str(gone)
