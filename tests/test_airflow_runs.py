"""Slow tier: real Airflow DAG runs (`airflow dags test`) and the whole demo, end to end."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from examples.changsha.api import TOKEN_ENV
from examples.changsha.data import DemoConfig
from examples.changsha.generate import generate_city
from lakehouse.lake import Lake
from onesource import airflow_cli
from tests.helpers import free_port, rows, shared_count

pytestmark = pytest.mark.slow


def test_generated_cycle_dag_runs_in_airflow_and_emits_assets(settings):
    port = free_port()
    manifest = generate_city(settings, DemoConfig(scale=0.05, api_url=f"http://127.0.0.1:{port}/api/v1/tickets"))
    monthly = sorted(n for n, d in manifest["datasets"].items() if n in {
        "mca_subsistence_allowance", "tax_taxpayer_register", "hrss_enterprise_insurance", "hrss_person_insurance",
        "health_medical_institutions", "transport_operator_licenses", "psb_household_moves"})
    airflow_cli.ensure_db(settings, settings.reports_dir / "migrate.log")
    log = settings.reports_dir / "monthly.log"
    code = airflow_cli.dags_test(settings, "onesource_ingest_monthly", log)
    assert code == 1  # health_medical_institutions carries injected missing names: its task fails on purpose
    outcome = dict(rows(settings, "SELECT dataset, status FROM ops.loads"))
    assert outcome == {n: ("quarantined" if n == "health_medical_institutions" else "published") for n in monthly}
    for name in monthly:
        if outcome[name] == "published":
            assert shared_count(settings, name) == manifest["datasets"][name]["rows"]
    with sqlite3.connect(settings.airflow_home / "airflow.db") as db:
        events = {r[0] for r in db.execute(
            "SELECT a.uri FROM asset_event e JOIN asset a ON a.id = e.asset_id")}
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = 'onesource_ingest_monthly'"))
    assert events == {f"onesource://shared/{n}" for n in monthly if outcome[n] == "published"}
    assert states["health.health_medical_institutions"] == "failed"
    assert states["tax.tax_taxpayer_register"] == "success"

    # the metrics DAG (asset-triggered and daily): a real run publishes this month's KPI tables
    assert airflow_cli.dags_test(settings, "onesource_metrics", settings.reports_dir / "metrics.log") == 0
    this_month = rows(settings, "SELECT DISTINCT period FROM shared.kpi_figures")
    assert len(this_month) == 2  # this month and the last
    shared, total = rows(settings, "SELECT numerator, denominator FROM shared.kpi_figures "
                                   "WHERE scope = 'city' AND kpi = 'sharing_rate' ORDER BY period DESC LIMIT 1")[0]
    # monthly datasets published, minus psb_household_moves (not_shared) / every dataset of the city
    assert (shared, total) == (sum(1 for n in monthly if outcome[n] == "published") - 1, 15)
    with sqlite3.connect(settings.airflow_home / "airflow.db") as db:
        kpi_events = {r[0] for r in db.execute(
            "SELECT a.uri FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri LIKE '%kpi%'")}
    assert {"onesource://shared/kpi_figures", "onesource://shared/kpi_dataset_status",
            "onesource://shared/kpi_duplicate_pairs"} <= kpi_events

    # the weekly maintenance DAG: a real run reports what it did, and what is read stays the same
    before = rows(settings, "SELECT count(*) FROM shared.tax_taxpayer_register")
    log = settings.reports_dir / "maintenance.log"
    assert airflow_cli.dags_test(settings, "onesource_maintenance", log) == 0
    assert "lake maintenance:" in log.read_text(encoding="utf-8")
    assert rows(settings, "SELECT count(*) FROM shared.tax_taxpayer_register") == before


HOTLINE_TOKEN = "hotline-Tok3n-never-logged"


def run_demo_cli(home, port) -> subprocess.CompletedProcess:
    env = {**os.environ, "ONESOURCE_HOME": str(home), TOKEN_ENV: HOTLINE_TOKEN}
    return subprocess.run([sys.executable, "-m", "onesource.cli", "demo", "--scale", "0.05", "--api-port", str(port)],
                          env=env, capture_output=True, text=True, timeout=900)


def test_demo_end_to_end_is_idempotent(settings):
    port = free_port()
    first = run_demo_cli(settings.home, port)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = json.loads((settings.reports_dir / "demo-summary.json").read_text(encoding="utf-8"))
    manifest = json.loads((settings.home / "demo" / "manifest.json").read_text(encoding="utf-8"))
    # the two deliveries quarantined for the injected blocking defects are corrected and sent again
    assert summary["redelivered"] == ["health_medical_institutions", "urban_enforcement_cases"]
    assert all(set(manifest["defects"][name]) & {"missing_required", "duplicate_key"} for name in summary["redelivered"])
    assert summary["datasets"] == 15 and summary["published_datasets"] == 15
    assert summary["loads_this_run"] == {"published": 15, "quarantined": 2}
    with Lake(settings.lake, read_only=True) as lake:
        for status in summary["statuses"]:
            name = status["dataset"]
            actual = lake.con.execute(f'SELECT count(*) FROM shared."{name}"').fetchone()[0]
            assert status["rows"] == actual
            if name not in summary["redelivered"]:
                assert actual == manifest["datasets"][name]["rows"]
    assert "14/15 datasets shared" in first.stdout and "health_medical_institutions" in first.stdout
    # baseline -> now, as metrics computed and published them
    assert "KPI sharing_rate:" in first.stdout and summary["story"]["sharing_rate"][2] >= 0.9
    # six simulated months and this one, published by the DAG's metrics task; and the CLI's JSON
    assert len(rows(settings, "SELECT DISTINCT period FROM shared.kpi_figures")) == 7
    out = subprocess.run([sys.executable, "-m", "onesource.cli", "metrics", "--json"], capture_output=True, text=True,
                         env={**os.environ, "ONESOURCE_HOME": str(settings.home)}, timeout=300)
    kpis = json.loads(out.stdout)
    assert kpis["city"]["sharing_rate"]["denominator"] == 15 and kpis["city"]["sharing_rate"]["target"] == 0.9
    assert len(kpis["departments"]) == 13

    second = run_demo_cli(settings.home, port)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    again = json.loads((settings.reports_dir / "demo-summary.json").read_text(encoding="utf-8"))
    assert again["loads_this_run"] == {}
    assert [s["rows"] for s in again["statuses"]] == [s["rows"] for s in summary["statuses"]]
    assert "nothing new: idempotent" in second.stdout
    review_logs_for_secrets(settings, first.stdout + first.stderr + second.stdout + second.stderr)


def review_logs_for_secrets(settings, console: str) -> None:
    """Issue 9's log review, automated: nothing the demo run wrote for people to read (Airflow's task
    logs and metadata database, the reports, GX's stores and Data Docs, the console) holds a password, a
    token, or a resident ID or phone number in full."""
    secrets = {HOTLINE_TOKEN: "the hotline API token"}
    for name in ("demo-credentials.json", "demo-owner-credentials.json"):
        for dept, cred in json.loads((settings.home / name).read_text(encoding="utf-8")).items():
            secrets[cred["password"]] = f"{dept} password"
            secrets[cred["token"]] = f"{dept} token"
    sensitive = rows(settings, "SELECT resident_id FROM shared.psb_resident_register UNION ALL "
                               "SELECT caller_phone FROM shared.hotline_tickets")
    assert len(sensitive) > 50
    secrets.update({value: "a sensitive value" for (value,) in sensitive if value})
    places = [p for d in ("airflow", "reports", "gx") for p in (settings.home / d).rglob("*") if p.is_file()]
    assert any(p.name.endswith(".log") for p in places) and any(p.name == "airflow.db" for p in places)
    leaks = [f"{what} in {p.relative_to(settings.home)}" for p in places for data in [p.read_bytes()]
             for value, what in secrets.items() if value.encode() in data]
    leaks += [f"{what} on the console" for value, what in secrets.items() if value in console]
    assert not leaks, leaks[:10]
