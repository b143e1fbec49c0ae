"""Airflow DAGs generated from the registry: one DAG per update cycle, one task per dataset.

Plus ``onesource_ingest_all`` (no schedule) with every dataset, for first loads and catch-ups:
one ``airflow dags test`` costs ~15 s of fixed overhead, so the demo runs this one DAG, not one
per cycle.

Each DAG's schedule is its cycle (``@daily``, ``@weekly``, ...). Tasks are grouped by owner
department and each declares its shared table as an outlet Asset (``onesource://shared/<name>``),
so a publish triggers the DAGs that consume it. Nothing heavy is imported here: DAG files are
parsed continually by the scheduler; the work is imported inside the task.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

from schemas.loader import load_registry
from schemas.model import UPDATE_CYCLES, Dataset

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ALL_DAG_ID = "onesource_ingest_all"
CONSISTENCY_DAG_ID = "onesource_consistency"
METRICS_DAG_ID = "onesource_metrics"
METRICS_CRON = "0 2 * * *"  # daily at 02:00 city time, besides every change of a shared table
MAINTENANCE_DAG_ID = "onesource_maintenance"
MAINTENANCE_CRON = "0 3 * * 0"  # Sundays at 03:00 city time


def asset_uri(dataset: str) -> str:
    return f"onesource://shared/{dataset}"


def dag_id_for(cycle: str) -> str:
    return f"onesource_ingest_{cycle}"


def build_dags(registry_dir: Path, cache_dir: Path | None = None) -> dict:
    """``{dag_id: DAG}`` for the registry below ``registry_dir`` (cached in ``cache_dir``, see
    schemas.cache: the scheduler re-parses this every few seconds)."""
    from airflow.sdk import DAG, Asset, AssetAny, AssetOrTimeSchedule, CronTriggerTimetable, TaskGroup, task

    registry = load_registry(registry_dir, cache_dir)

    @task(retries=3, retry_delay=dt.timedelta(minutes=2), retry_exponential_backoff=True)
    def load(dataset: str) -> list[dict]:
        from onesource.tasks import load_dataset

        return load_dataset(dataset)

    @task(trigger_rule="all_done")
    def consistency() -> list[dict]:
        from onesource.tasks import check_consistency

        return check_consistency()

    kpi_assets = [Asset(name=d.name, uri=asset_uri(d.name), group="onesource") for d in registry.datasets
                  if d.platform]

    @task(trigger_rule="all_done", outlets=kpi_assets, retries=2, retry_delay=dt.timedelta(minutes=1))
    def metrics() -> dict:
        from onesource.tasks import publish_metrics

        return publish_metrics()

    def dag(dag_id: str, schedule: str | None, datasets: list[Dataset], tags: list[str], doc: str,
            with_consistency: bool = False):
        with DAG(dag_id=dag_id, schedule=schedule, start_date=START, catchup=False, max_active_runs=1,
                 tags=["onesource", "ingest", *tags],
                 doc_md=f"{doc} Generated from the registry (version {registry.version}); do not edit.") as d:
            by_owner: dict[str, list[Dataset]] = defaultdict(list)
            for ds in datasets:
                by_owner[ds.owner].append(ds)
            tasks = {}
            for owner in sorted(by_owner):
                with TaskGroup(group_id=owner, tooltip=registry.department(owner).name):
                    for ds in sorted(by_owner[owner], key=lambda x: x.name):
                        tasks[ds.name] = load.override(
                            task_id=ds.name,
                            outlets=[Asset(name=ds.name, uri=asset_uri(ds.name), group="onesource")],
                            doc_md=f"{ds.title} ({ds.connector.kind}, {ds.share_type}) -> `{ds.table}`",
                            # after its authorities (reference checks), even when one of them failed
                            trigger_rule="all_done",
                        )(ds.name)
            for upstream, downstream in authority_edges(registry, set(tasks)):
                tasks[upstream] >> tasks[downstream]
            if with_consistency and tasks:
                list(tasks.values()) >> consistency() >> metrics()
        return d

    by_cycle: dict[str, list[Dataset]] = defaultdict(list)
    for ds in registry.source_datasets:
        by_cycle[ds.update_cycle].append(ds)
    dags = {}
    for cycle in (c for c in UPDATE_CYCLES if c in by_cycle):
        dags[dag_id_for(cycle)] = dag(dag_id_for(cycle), UPDATE_CYCLES[cycle][0], by_cycle[cycle], [cycle],
                                      f"Loads the {len(by_cycle[cycle])} dataset(s) whose update cycle is **{cycle}**.")
    if registry.source_datasets:
        # Run by hand: the first load of a new city, or a catch-up after an outage (one run, every source).
        dags[ALL_DAG_ID] = dag(ALL_DAG_ID, None, list(registry.source_datasets), ["backfill"],
                               "Loads every registered dataset once (authorities first), then compares copies of "
                               "elements with their authorities: initial loads and catch-ups after an outage.",
                               with_consistency=True)
        # Cross-source consistency runs whenever any shared table changes (data-aware, not on a clock).
        with DAG(dag_id=CONSISTENCY_DAG_ID, start_date=START, catchup=False, max_active_runs=1,
                 schedule=AssetAny(*(Asset(name=d.name, uri=asset_uri(d.name), group="onesource")
                                     for d in registry.source_datasets)),
                 tags=["onesource", "quality"],
                 doc_md="多元校核: compares copies of data elements with their authoritative dataset.") as cdag:
            consistency()
        dags[CONSISTENCY_DAG_ID] = cdag
        # The KPIs: whenever a shared table changes (a load decides the sharing rate), and daily, since
        # time alone makes datasets overdue and requests late.
        with DAG(dag_id=METRICS_DAG_ID, start_date=START, catchup=False, max_active_runs=1,
                 schedule=AssetOrTimeSchedule(
                     timetable=CronTriggerTimetable(METRICS_CRON, timezone="Asia/Shanghai"),
                     assets=AssetAny(*(Asset(name=d.name, uri=asset_uri(d.name), group="onesource")
                                       for d in registry.source_datasets))),
                 tags=["onesource", "metrics"],
                 doc_md="The sharing KPIs of this month and the last, published to the shared KPI tables.") as mdag:
            metrics()
        dags[METRICS_DAG_ID] = mdag

    @task
    def maintenance() -> dict:
        from onesource.tasks import maintain_lake

        return maintain_lake()

    with DAG(dag_id=MAINTENANCE_DAG_ID, start_date=START, catchup=False, max_active_runs=1,
             schedule=CronTriggerTimetable(MAINTENANCE_CRON, timezone="Asia/Shanghai"), tags=["onesource", "lake"],
             doc_md="Merges small files, expires snapshots past the retention, deletes unreferenced files.") as ldag:
        maintenance()
    dags[MAINTENANCE_DAG_ID] = ldag
    return dags


def authority_edges(registry, names: set[str]) -> list[tuple[str, str]]:
    """(authority, dataset) pairs among ``names``: a dataset loads after the authorities it references.

    An edge that would close a cycle is left out (two authorities may reference each other; the
    reference check then uses the other's last published snapshot).
    """
    from quality.suite import reference_key

    edges: list[tuple[str, str]] = []
    after: dict[str, set[str]] = defaultdict(set)  # node -> its direct downstream nodes

    def downstream(node: str) -> set[str]:
        seen, todo = set(), [node]
        while todo:
            for nxt in after[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    for ds in registry.source_datasets:
        if ds.name not in names:
            continue
        for col in ds.columns:
            ref = reference_key(registry, col, ds)
            if ref is None or ref[0].name not in names or (ref[0].name, ds.name) in edges:
                continue
            if ref[0].name in downstream(ds.name):
                continue
            edges.append((ref[0].name, ds.name))
            after[ref[0].name].add(ds.name)
    return edges
