"""A quarantined delivery is tried again under a new registry version only while it is still the latest.

For a dataset whose batches replace what was there (snapshot, upsert), a delivery quarantined and then
followed by a published one is superseded: loading it later (after a registry fix) would put older data over
newer. For an append dataset, every delivery is rows of its own, and a registry fix may let it in.
The oracle: a snapshot table always holds the latest good delivery's rows, whatever the order of good and
bad deliveries and registry changes.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from tests.helpers import drop, firms_dataset, load, rows, shared_count, write_registry
from tests.support.quarantine import delivery


def registry(home: Settings, load_mode: str, version: int) -> None:
    ds = copy.deepcopy(firms_dataset(load_mode=load_mode, title=f"企业登记（第{version}版）"))
    if load_mode != "snapshot":
        ds["key"] = ["uscc", "capital"] if load_mode == "append" else ["uscc"]
    write_registry(home.registry_dir, [ds])


def capitals(home: Settings) -> list:
    if shared_count(home, "firms") is None:  # nothing published yet
        return []
    return sorted({r[0] for r in rows(home, "SELECT DISTINCT CAST(capital AS INTEGER) FROM lake.shared.firms")})


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=4))
def test_a_snapshot_table_holds_the_latest_good_delivery_whatever_the_registry_changes(tmp_path_factory, steps):
    home = Settings(home=tmp_path_factory.mktemp("supersede") / "home")
    version, latest_good = 1, None
    registry(home, "snapshot", version)
    for n, (good, registry_change) in enumerate(steps, start=1):
        if registry_change:  # a registry fix between deliveries: quarantined files may be tried again
            version += 1
            registry(home, "snapshot", version)
            load(home)
        drop(home, f"amr/firms/d{n}.csv", delivery(100 * n, good))
        load(home)
        latest_good = 100 * n if good else latest_good
        assert capitals(home) == ([latest_good] if latest_good else []), (steps, n)
    version += 1  # and a last registry change with nothing new delivered
    registry(home, "snapshot", version)
    load(home)
    assert capitals(home) == ([latest_good] if latest_good else []), steps


@pytest.mark.parametrize("load_mode, retried", [("snapshot", False), ("upsert", False), ("append", True)])
def test_a_quarantined_delivery_followed_by_a_published_one(tmp_path, load_mode, retried):
    home = Settings(home=tmp_path / "home")
    registry(home, load_mode, 1)
    drop(home, "amr/firms/a.csv", delivery(100, good=False))
    assert [r.status for r in load(home)] == ["quarantined"]
    drop(home, "amr/firms/b.csv", delivery(200, good=True))
    assert [r.status for r in load(home)] == ["published"]
    registry(home, load_mode, 2)
    again = load(home)
    assert bool(again and again[0].status == "quarantined") is retried, [r.status for r in again]
    assert capitals(home) == [200]
