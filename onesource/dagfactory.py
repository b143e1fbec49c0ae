"""Airflow DAGs generated from the registry: one DAG per update cycle, one task per dataset.

Plus ``onesource_ingest_all`` (no schedule) with every dataset, for first loads and catch-ups:
one ``airflow dags test`` costs ~15 s of fixed overhead, so the demo runs this one DAG, not one
per cycle.

Each DAG's schedule is its cycle (``@daily``, ``@weekly``, ...). Tasks are grouped by owner
department and each declares its shared table as an outlet Asset (``onesource://shared/<name>``),
so a publish triggers the DAGs that consume it. Nothing heavy is imported here: DAG files are
parsed continually by the scheduler; the work is imported inside the task.

Every DAG's ``doc_md`` (the UI's "Docs") lists its datasets: title, owner department, share type,
source connector and schedule; every task's says what its stage does (:func:`dataset_docs`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

from schemas.loader import load_registry
from schemas.model import UPDATE_CYCLES, Dataset, Registry

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ALL_DAG_ID = "onesource_ingest_all"
CONSISTENCY_DAG_ID = "onesource_consistency"
METRICS_DAG_ID = "onesource_metrics"
METRICS_CRON = "0 2 * * *"  # daily at 02:00 city time, besides every change of a shared table
MAINTENANCE_DAG_ID = "onesource_maintenance"
MAINTENANCE_CRON = "0 3 * * 0"  # Sundays at 03:00 city time

LOAD_DOC = ("**Stage: load.** Extracts the delivery through its connector into the landing zone (the raw file "
            "kept, named by its sha256), standardizes it to the registry's columns, validates it with the "
            "dataset's quality suite, then publishes `{table}` in one commit (an Asset event for the DAGs that "
            "consume it) or quarantines the batch and fails with what to fix. Nothing new: skipped.")
CONSISTENCY_DOC = ("**Stage: 多元校核 (consistency).** Compares every copy of a data element in the shared zone "
                   "with its authoritative dataset and records the equal rate per element; renders the "
                   "quality Data Docs.")
METRICS_DOC = ("**Stage: KPIs.** Copies the audit log's new entries into the lake and publishes this month's and "
               "last month's sharing KPIs into the shared KPI tables.")
MAINTENANCE_DOC = ("**Stage: lake maintenance.** Merges small files, expires snapshots past the retention, deletes "
                   "unreferenced files and the staging entries of killed loads; refuses (fails) when the catalog "
                   "looks new or lost next to the data files.")


def asset_uri(dataset: str) -> str:
    return f"onesource://shared/{dataset}"


def dag_id_for(cycle: str) -> str:
    return f"onesource_ingest_{cycle}"


def connector_doc(registry: Registry, ds: Dataset) -> str:
    """``file`` (csv, tax/x/*.csv) from 税收征管系统: the kind, the format or driver, where it reads, and the
    department's system. Never a DSN, which may carry credentials; a URL without user or query."""
    opts = ds.connector.settings
    url = urlsplit(str(opts["url"])) if opts.get("url") else None
    where = opts.get("path") or opts.get("table") or (f"{url.scheme}://{url.hostname}{url.path}" if url else None)
    detail = ", ".join(str(x) for x in (opts.get("format") or opts.get("driver"), where) if x)
    dept = registry.department(ds.owner)
    system = next((s.name for s in dept.systems if s.code == ds.system), ds.system)
    return f"`{ds.connector.kind}`" + (f" ({detail})" if detail else "") + f" from {system}"


def dataset_docs(registry: Registry, datasets: list[Dataset]) -> str:
    """A Markdown table: each dataset's title, owner department, share type, source connector and schedule."""
    lines = ["| dataset | title | owner department | share type | source connector | schedule |",
             "| --- | --- | --- | --- | --- | --- |"]
    for ds in sorted(datasets, key=lambda d: (d.owner, d.name)):
        dept = registry.department(ds.owner)
        lines.append(f"| `{ds.name}` | {ds.title} | {dept.name} ({dept.name_en}, `{ds.owner}`) | `{ds.share_type}` "
                     f"| {connector_doc(registry, ds)} | {ds.update_cycle} (`{ds.schedule}`) |")
    return "\n".join(lines)


def load_doc(registry: Registry, ds: Dataset) -> str:
    dept = registry.department(ds.owner)
    return "\n\n".join([
        f"### {ds.title} (`{ds.name}`)", LOAD_DOC.format(table=ds.table),
        f"- owner department: {dept.name} ({dept.name_en}, `{ds.owner}`)\n- share type: `{ds.share_type}`\n"
        f"- source connector: {connector_doc(registry, ds)}\n- schedule: {ds.update_cycle} (`{ds.schedule}`)"
        + (f"\n\n{ds.description}" if ds.description else "")])


def build_dags(registry_dir: Path, cache_dir: Path | None = None) -> dict:
    """``{dag_id: DAG}`` for the registry below ``registry_dir`` (cached in ``cache_dir``, see
    schemas.cache: the scheduler re-parses this every few seconds)."""
    from airflow.sdk import (
        DAG,
        Asset,
        AssetAny,
        AssetOrTimeSchedule,
        CronTriggerTimetable,
        TaskGroup,
        get_parsing_context,
        task,
    )

    registry = load_registry(registry_dir, cache_dir)
    # A task's process parses this file to find its one DAG (Airflow's parsing context names it): building
    # the others too cost each load ~1.3 s of CPU at 2,000 datasets (bench/cityday.py). The dag-processor
    # and every other reader get them all.
    wanted = get_parsing_context().dag_id
    # ... and the one task it runs: a load's DAG holds every dataset of its cycle, and building the other
    # 1,999 tasks, their dependencies and the DAG's documentation cost each load ~0.5 s at 2,000 datasets.
    # The task runner needs only its own task (the scheduler, which parsed everything, decides what runs).
    wanted_task = get_parsing_context().task_id  # a load's is "<owner>.<dataset>" (its department's TaskGroup)

    def want(dag_id: str) -> bool:
        return wanted is None or wanted == dag_id

    @task(retries=3, retry_delay=dt.timedelta(minutes=2), retry_exponential_backoff=True)
    def load(dataset: str) -> list[dict]:
        from onesource.tasks import load_dataset

        return load_dataset(dataset)

    @task(trigger_rule="all_done", doc_md=CONSISTENCY_DOC)
    def consistency() -> list[dict]:
        from onesource.tasks import check_consistency

        return check_consistency()

    kpi_assets = [Asset(name=d.name, uri=asset_uri(d.name), group="onesource") for d in registry.datasets
                  if d.platform]

    @task(trigger_rule="all_done", outlets=kpi_assets, retries=2, retry_delay=dt.timedelta(minutes=1),
          doc_md=METRICS_DOC)
    def metrics() -> dict:
        from onesource.tasks import publish_metrics

        return publish_metrics()

    def docs(doc: str, schedule: str, datasets: list[Dataset]) -> str:
        return (f"{doc}\n\n**Schedule:** {schedule}. Generated from the registry (version {registry.version}); "
                f"do not edit.\n\n" + dataset_docs(registry, datasets))

    def dag(dag_id: str, schedule: str | None, datasets: list[Dataset], tags: list[str], doc: str,
            with_consistency: bool = False):
        alone = [ds for ds in datasets if f"{ds.owner}.{ds.name}" == wanted_task]
        if alone:  # a load task's own process (above): its task, nothing else
            datasets, with_consistency, doc = alone, False, ""
        with DAG(dag_id=dag_id, schedule=schedule, start_date=START, catchup=False, max_active_runs=1,
                 tags=["onesource", "ingest", *tags],
                 # new DAGs start paused (airflow_cli); this one runs only when triggered, as the demo does
                 is_paused_upon_creation=False if schedule is None else None,
                 doc_md=docs(doc, f"`{schedule}`" if schedule else "none: run by hand (trigger)", datasets)
                 if doc else None) as d:
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
                            doc_md=None if alone else load_doc(registry, ds),
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
    for cycle in (c for c in UPDATE_CYCLES if c in by_cycle and want(dag_id_for(c))):
        dags[dag_id_for(cycle)] = dag(dag_id_for(cycle), UPDATE_CYCLES[cycle][0], by_cycle[cycle], [cycle],
                                      f"Loads the {len(by_cycle[cycle])} dataset(s) whose update cycle is **{cycle}**.")
    if registry.source_datasets:
        # Run by hand: the first load of a new city, or a catch-up after an outage (one run, every source).
        if want(ALL_DAG_ID):
            dags[ALL_DAG_ID] = dag(ALL_DAG_ID, None, list(registry.source_datasets), ["backfill"],
                                   "Loads every registered dataset once (authorities first), then compares copies "
                                   "of elements with their authorities: initial loads and catch-ups after an outage.",
                                   with_consistency=True)
        # Cross-source consistency runs whenever any shared table changes (data-aware, not on a clock).
        if want(CONSISTENCY_DAG_ID):
            with DAG(dag_id=CONSISTENCY_DAG_ID, start_date=START, catchup=False, max_active_runs=1,
                     schedule=AssetAny(*(Asset(name=d.name, uri=asset_uri(d.name), group="onesource")
                                         for d in registry.source_datasets)),
                     tags=["onesource", "quality"],
                     doc_md=docs("多元校核: compares copies of data elements with their authoritative dataset.",
                                 "whenever one of these shared tables changes (Assets)",
                                 list(registry.source_datasets))) as cdag:
                consistency()
            dags[CONSISTENCY_DAG_ID] = cdag
        # The KPIs: whenever a shared table changes (a load decides the sharing rate), and daily, since
        # time alone makes datasets overdue and requests late.
        if want(METRICS_DAG_ID):
            with DAG(dag_id=METRICS_DAG_ID, start_date=START, catchup=False, max_active_runs=1,
                     schedule=AssetOrTimeSchedule(
                         timetable=CronTriggerTimetable(METRICS_CRON, timezone="Asia/Shanghai"),
                         assets=AssetAny(*(Asset(name=d.name, uri=asset_uri(d.name), group="onesource")
                                           for d in registry.source_datasets))),
                     tags=["onesource", "metrics"],
                     doc_md=docs("The sharing KPIs of this month and the last, published to the shared KPI tables.",
                                 f"`{METRICS_CRON}` (Asia/Shanghai) and whenever one of these shared tables changes",
                                 list(registry.source_datasets))) as mdag:
                metrics()
            dags[METRICS_DAG_ID] = mdag

    @task(doc_md=MAINTENANCE_DOC)
    def maintenance() -> dict:
        from onesource.tasks import maintain_lake

        return maintain_lake()

    if want(MAINTENANCE_DAG_ID):
        with DAG(dag_id=MAINTENANCE_DAG_ID, start_date=START, catchup=False, max_active_runs=1,
                 schedule=CronTriggerTimetable(MAINTENANCE_CRON, timezone="Asia/Shanghai"), tags=["onesource", "lake"],
                 doc_md=docs("Merges small files, expires snapshots past the retention, deletes unreferenced files.",
                             f"`{MAINTENANCE_CRON}` (Asia/Shanghai)", list(registry.datasets))) as ldag:
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
