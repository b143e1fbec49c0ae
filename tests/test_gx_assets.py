"""Each load's GX asset is removed after its run (quality.gx_duckdb.forget_assets): the file context's
``great_expectations.yml`` holds no asset per dataset, so a city's loads do not each get slower than the one
before (GX re-reads that file dozens of times a validation); results and Data Docs keep every run; and a
context opened on a home that kept its assets (older versions) removes them."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.helpers import csv_text, drop, firms_dataset, load, write_registry


def _assets(settings) -> list[str]:
    config = yaml.safe_load((settings.gx_project_root / "gx" / "great_expectations.yml").read_text())
    sources = config.get("fluent_datasources") or {}
    return [name for s in sources.values() for name in (s.get("assets") or {})]


def test_no_asset_is_left_after_loads_and_every_result_is_kept(settings):
    names = ["firms", "firms_b", "firms_c"]
    write_registry(settings.registry_dir, [firms_dataset(name=n, connector={"kind": "file", "path": f"amr/{n}/*.csv",
                                                                           "format": "csv"}) for n in names])
    for n in names:
        drop(settings, f"amr/{n}/1.csv", csv_text())
    for n in names:
        [result] = load(settings, n)
        assert result.status == "published", result.message
        assert _assets(settings) == [], _assets(settings)
    stored = settings.gx_project_root / "gx" / "uncommitted" / "validations"
    results = [p.relative_to(stored).as_posix() for p in stored.rglob("*.json")]
    for n in names:  # every load's result stored, for Data Docs
        assert [r for r in results if f"/{n}/" in f"/{r}" or r.startswith(f"{n}.") or f".{n}/" in r], (n, results)


OLD_HOME = r"""
import sys
from pathlib import Path
from quality.validate import _file_context, duckdb_source, batch_definition
context = _file_context(sys.argv[1])
source = duckdb_source(context)
for n in ("old_a", "old_b"):
    batch_definition(source, n, "/nowhere.parquet")
"""


def test_a_home_that_kept_assets_loses_them_at_the_next_load(settings):
    write_registry(settings.registry_dir, [firms_dataset()])
    drop(settings, "amr/firms/1.csv", csv_text())
    [first] = load(settings)
    assert first.status == "published"
    planted = subprocess.run([sys.executable, "-c", OLD_HOME, str(settings.gx_project_root)], capture_output=True,
                             text=True, timeout=300)
    assert planted.returncode == 0, planted.stderr[-2000:]
    assert sorted(_assets(settings)) == ["old_a", "old_b"]
    forget = r"""
import sys
from pathlib import Path
from quality.validate import _ready
_ready(Path(sys.argv[1]))
"""
    out = subprocess.run([sys.executable, "-c", forget, str(settings.gx_project_root)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _assets(settings) == []
