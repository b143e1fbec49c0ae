"""Red-team: GX's file stores (TupleFilesystemStoreBackend._set) write with open(path, "wb"): a load SIGKILLed
while quality.validate._run rewrites a dataset's suite / validation definition / checkpoint JSON leaves it empty,
and every later load of that dataset fails with a GX TypeError/ValueError/AttributeError
(/tmp/redteam/q2_gx_truncated.py does the real SIGKILL; this test leaves the file as the kill does)."""

from __future__ import annotations

import pytest

from core.config import Settings
from tests.helpers import ROWS, csv_text, drop, load, write_registry


@pytest.mark.parametrize("store", ["expectations/onesource/firms.json", "checkpoints/onesource.firms.json",
                                   "validation_definitions/onesource.firms.json"])
def test_a_load_after_one_killed_mid_gx_write_still_validates(tmp_path, store):
    settings = Settings(home=tmp_path / "home")
    write_registry(settings.registry_dir)
    drop(settings, "amr/firms/a.csv", csv_text([ROWS[0]]))
    assert load(settings)[0].status == "published"
    written = settings.gx_project_root / "gx" / store
    assert written.is_file(), sorted(p.relative_to(settings.home) for p in settings.home.rglob("*.json"))
    written.write_bytes(b"")  # open("wb") done, write never happened: the killed load
    drop(settings, "amr/firms/b.csv", csv_text([ROWS[1]]))
    [result] = load(settings)
    assert result.status == "published", result.message
