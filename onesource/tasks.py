"""What an Airflow task runs: the edge where settings are built and results become task states.

published -> success (the task's Asset event tells consumer DAGs);
unchanged -> skipped (no Asset event: nothing new to consume);
quarantined / failed at the source -> failed without retries (the message says what to fix);
a transient error (catalog lock, source timeout) -> raised as is, so Airflow retries.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings


def task_settings() -> Settings:
    """An Airflow task's settings (this module's and onesource/subscriptions_dag.py's), after making its process's
    files private (the home 0700, umask 0o077)."""
    from core.config import Settings
    from onesource.home import secure_home

    settings = Settings.from_env()
    secure_home(settings)
    return settings


def _process_age() -> float | None:
    """Seconds since this process began (Linux: /proc), else None. Airflow forks a process per task
    attempt, so at the task's start this is what the task runner took: the fork, the DAG file's parse."""
    try:  # the process's start in clock ticks since boot (field 22), against the clock since boot
        with open("/proc/self/stat") as fh:
            started = int(fh.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, IndexError, ValueError, AttributeError):
        return None


def load_dataset(dataset: str) -> list[dict]:
    fixed = {"task_start": _process_age()}  # where a small load's fixed cost goes (bench/cityday.py)
    entered = clock = time.perf_counter()
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from ingest.load import run_dataset
    from schemas import load_registry

    fixed["imports"], clock = time.perf_counter() - clock, time.perf_counter()
    settings = task_settings()
    registry = load_registry(settings.registry_dir, settings.cache_dir)
    fixed["registry"] = time.perf_counter() - clock
    results = run_dataset(settings, registry, dataset, os.environ)
    fixed["in_task"] = time.perf_counter() - entered
    fixed["task_cpu"] = time.process_time()  # all of this process's CPU, every thread, since Airflow forked it
    for r in results:
        r.seconds.update({k: round(v, 4) for k, v in fixed.items() if v is not None})
    bad = [r for r in results if not r.ok]
    if bad:  # the task log is for engineers: failing values are masked there (the ledger keeps them)
        from core.logsafe import redact

        raise AirflowFailException(redact("\n".join(r.message for r in bad)))
    if all(r.status == "unchanged" for r in results):
        raise AirflowSkipException(f"{dataset}: no new data since the last load")
    return [asdict(r) for r in results]


def check_consistency() -> list[dict]:
    """多元校核 over the whole lake: compare every copy of an element with its authority."""
    from lakehouse import Lake
    from quality import build_data_docs
    from quality.consistency import run_consistency
    from schemas import load_registry

    settings = task_settings()
    registry = load_registry(settings.registry_dir, settings.cache_dir)
    with Lake(settings.lake) as lake:
        run_id, rates = run_consistency(lake, registry)
    for r in rates:
        print(f"consistency {run_id} {r.dataset}.{r.element}: {r.equal}/{r.compared} equal to {r.authority}")
    # the loads before this task stored their validation results: render the Data Docs once for all
    print(f"Data Docs: {build_data_docs(settings.gx_project_root)}")
    return [asdict(r) for r in rates]


def publish_metrics() -> dict:
    """The sharing KPIs of this month and the last (late loads and decisions still move it), published
    into the shared KPI tables. Copies the audit log's new entries into the lake first."""
    from core.calendar import WorkCalendar
    from lakehouse import Lake
    from metrics.kpis import Period
    from metrics.publish import publish_periods
    from schemas import load_registry
    from sharing.audit import AuditLog, sync_to_lake

    settings = task_settings()
    registry = load_registry(settings.registry_dir, settings.cache_dir)
    this = Period.month(tz=settings.city_timezone)  # the city's month: it begins at the city's midnight
    with Lake(settings.lake) as lake:
        copied = sync_to_lake(lake, AuditLog(settings.home / "audit"))
        results = publish_periods(lake, registry, [this.previous(), this],
                                  WorkCalendar.for_settings(settings))
    for r in results:
        city = r["city"]
        print(f"KPIs {r['period']} as of {r['as_of']}: " + ", ".join(
            f"{k} {v['value']}" for k, v in city.items() if v["value"] is not None))
    return {"audit_entries_copied": copied, "periods": [r["period"] for r in results],
            "sharing_rate": results[-1]["city"]["sharing_rate"]["value"]}


def maintain_lake() -> dict:
    """Merge small files, expire snapshots past the retention, delete unreferenced files, and remove the
    staging entries of killed loads; refused (the task fails with the reason) when the catalog looks new
    or lost next to the data files."""
    import datetime as dt

    from airflow.sdk.exceptions import AirflowFailException

    from lakehouse import Lake
    from lakehouse.maintenance import MaintenanceRefusedError, maintain

    settings = task_settings()
    with Lake(settings.lake) as lake:
        try:
            report = maintain(lake, dt.timedelta(days=settings.snapshot_retention_days),
                              staging=settings.staging_dir)
        except MaintenanceRefusedError as exc:  # a retry would find the same: a person must look
            raise AirflowFailException(str(exc)) from exc
    print(f"lake maintenance: {report}")
    return asdict(report)


def scan_security() -> dict:
    """dags/onesource_security.py's task: a misuse scan (sharing.security.alerts), its new alerts printed
    to the task's log."""
    from sharing.security.alerts import line, scan

    settings = task_settings()
    result = scan(settings)
    for a in result.raised:
        print(line(a, settings.city_timezone))
    return {"audit_entries_copied": result.copied, "events": result.evaluated,
            "raised": [a.alert_id for a in result.raised], "found": result.found}
