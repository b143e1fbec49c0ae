"""The generated DAGs: no import errors, one task per dataset, schedules from update cycles, Assets."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from core.config import REPO_ROOT
from examples.changsha.data import DemoConfig
from examples.changsha.generate import write_registry as write_demo_registry
from schemas import load_registry
from tests.support.airflow import dagbag


@pytest.fixture
def demo_registry(settings):
    write_demo_registry(settings.registry_dir, DemoConfig())
    return load_registry(settings.registry_dir)


def test_dagbag_has_no_import_errors_and_one_task_per_dataset(settings, demo_registry):
    bag = dagbag(settings)
    assert bag["errors"] == {}
    sources = demo_registry.source_datasets  # the KPI tables are the platform's own: no ingestion task
    cycles = sorted({d.update_cycle for d in sources})
    assert set(bag["dags"]) == {f"onesource_ingest_{c}" for c in cycles} | {
        "onesource_ingest_all", "onesource_consistency", "onesource_metrics", "onesource_maintenance",
        "onesource_subscriptions", "onesource_security"}
    assert bag["dags"]["onesource_security"]["tasks"] == ["scan"]  # the misuse alerts' scan, every 10 minutes
    assert "*/10 * * * *" in bag["dags"]["onesource_security"]["schedule"]
    every = bag["dags"]["onesource_ingest_all"]
    assert every["tasks"] == sorted([f"{d.owner}.{d.name}" for d in sources] + ["consistency", "metrics"])
    # authorities load first, so reference checks see them; consistency runs after every load
    assert every["upstream"]["tax.tax_taxpayer_register"] == ["amr.amr_enterprise_register"]
    assert every["upstream"]["amr.amr_enterprise_register"] == ["mca.mca_admin_divisions"]
    assert "psb.psb_resident_register" in every["upstream"]["hrss.hrss_person_insurance"]
    assert len(every["upstream"]["consistency"]) == len(sources)
    assert every["upstream"]["metrics"] == ["consistency"]
    assert every["outlets"] == sorted(f"onesource://shared/{d.name}" for d in demo_registry.datasets)
    for cycle in cycles:
        dag = bag["dags"][f"onesource_ingest_{cycle}"]
        expected = sorted(f"{d.owner}.{d.name}" for d in sources if d.update_cycle == cycle)
        assert dag["tasks"] == expected
    assert bag["dags"]["onesource_ingest_daily"]["schedule"] == "@daily"
    assert bag["dags"]["onesource_ingest_monthly"]["schedule"] == "@monthly"
    assert bag["dags"]["onesource_ingest_all"]["schedule"] == "None"  # run by hand: first loads, catch-ups
    assert "AssetAny" in bag["dags"]["onesource_consistency"]["schedule"]  # runs when shared data changes
    # the KPIs: when shared data changes and daily (time alone makes a dataset overdue)
    assert "0 3 * * 0" in bag["dags"]["onesource_maintenance"]["schedule"]  # weekly, Sundays 03:00
    metrics = bag["dags"]["onesource_metrics"]
    assert "AssetOrTimeSchedule" in metrics["schedule"] and "0 2 * * *" in metrics["schedule"]
    assert metrics["outlets"] == sorted(f"onesource://shared/{d.name}" for d in demo_registry.datasets if d.platform)


def test_broken_registry_is_an_import_error_naming_file_and_line(settings, demo_registry):
    path = settings.registry_dir / "datasets" / "amr" / "amr_enterprise_register.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("share_type: unconditional", "share_type: not_shared"),
                    encoding="utf-8")
    bag = dagbag(settings)
    [error] = bag["errors"].values()
    # line 2: the demo's files start with the editor's schema modeline (docs/registry.md)
    assert "registry/datasets/amr/amr_enterprise_register.yaml:2:" in error and "legal_basis" in error


def test_dag_file_imports_nothing_heavy(settings, demo_registry):
    code = textwrap.dedent(f"""
        import sys, runpy
        runpy.run_path({str(REPO_ROOT / 'dags' / 'onesource_ingest.py')!r})
        heavy = sorted(m for m in ("duckdb", "great_expectations", "pandas", "pyarrow", "faker") if m in sys.modules)
        print("HEAVY", heavy)
    """)
    env = {**settings.environ(), "PATH": "/usr/bin:/bin"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "HEAVY []" in proc.stdout, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert time.perf_counter() - t < 120
