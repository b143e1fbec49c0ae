"""A dataset whose latest delivery was quarantined still shares its last good snapshot, and the portal says so.

Defect: the catalogue and the dataset page called such a dataset "not queryable" and showed no preview, while
governed SQL answered from its last good snapshot (the write-audit-publish promise: a failing batch never
replaces what is shared).
"""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from core.config import Settings
from lakehouse.lake import Lake
from onesource.serve import create_app
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.users import create_user
from tests.helpers import drop, firms_dataset, load, write_registry
from tests.support.quarantine import delivery


def test_a_quarantined_delivery_leaves_the_last_good_snapshot_queryable_and_shown(tmp_path):
    home = Settings(home=tmp_path / "home")
    write_registry(home.registry_dir, [firms_dataset()])
    drop(home, "amr/firms/a.csv", delivery(100, good=True))
    assert [r.status for r in load(home)] == ["published"]
    drop(home, "amr/firms/b.csv", delivery(200, good=False))
    assert [r.status for r in load(home)] == ["quarantined"]
    with Lake(home.lake) as lake:
        password, _ = create_user(lake, "tax", "tax_reader")
    engine = GovernedEngine(home, load_registry(home.registry_dir), persistent=True)
    try:
        client = TestClient(create_app(engine))
        r = client.post("/login", data={"username": "tax_reader", "password": password, "next": "/catalogue"},
                        follow_redirects=False)
        assert r.status_code == 303
        assert engine.query("tax", "SELECT count(*) FROM shared.firms").rows == [(3,)]  # SQL reads the snapshot
        for lang, label in (("zh", "查询的是上一份合格快照"), ("en", "queries read the last good snapshot")):
            catalogue = client.get("/catalogue", params={"lang": lang}).text
            row = re.search(r'<tr><td><a href="/catalogue/firms">.*?</tr>', catalogue, re.S).group(0)
            assert 'data-health="bad"' in row and "✓" in row and label in row
            page = client.get("/catalogue/firms", params={"lang": lang}).text
            queryable = re.search(r'id="queryable"[^>]*>(.*?)</td>', page, re.S).group(1)
            assert "✓" in queryable and label in queryable
            assert 'id="preview-none"' not in page and "长沙第1有限公司" in page  # the snapshot's rows, previewed
    finally:
        engine.close()
