"""The subscriptions DAG: whenever a shared dataset is published (its Airflow Asset is updated by the load
task, onesource.dagfactory), deliver to the subscribers of the datasets that changed.

Built from the registry like the ingestion DAGs; the DAG file (dags/onesource_subscriptions.py) only wires it.
A registry that cannot be read builds no subscriptions DAG: the ingestion DAG file reports that error once
(and no dataset is published until it is fixed).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

DAG_ID = "onesource_subscriptions"
DELIVER_DOC = """**Stage: deliver.** 数据回流: each active subscription of a dataset that was just published gets
what is new (sharing.subscriptions.deliver): the subscriber's governed view, whole or its changes, into its
PostgreSQL/MySQL table, drop folder or webhook; refused (grant revoked, frozen) and failed deliveries are in
the delivery ledger with the reason (`onesource subscriptions deliveries`). A failed delivery fails the task, which Airflow retries with backoff; the
same can be run by hand: `onesource subscriptions deliver`."""


def build_dag(registry_dir: Path, cache_dir: Path | None = None) -> dict:
    """``{DAG_ID: DAG}``, or ``{}`` when the registry cannot be read or has no source dataset."""
    from airflow.sdk import DAG, Asset, AssetAny, task

    from core.errors import OneSourceError
    from onesource.dagfactory import START, asset_uri, dataset_docs
    from schemas import load_registry

    try:
        registry = load_registry(registry_dir, cache_dir)
    except OneSourceError:  # reported by dags/onesource_ingest.py as its import error
        return {}
    sources = list(registry.source_datasets)
    if not sources:
        return {}

    @task(retries=3, retry_delay=dt.timedelta(minutes=1), retry_exponential_backoff=True, doc_md=DELIVER_DOC)
    def deliver() -> list[dict]:
        from airflow.sdk import get_current_context

        events = get_current_context().get("triggering_asset_events") or {}
        names = {getattr(asset, "name", None) for asset in events.keys()} - {None}
        return run_deliveries(names or None)  # triggered by hand: every subscription

    with DAG(dag_id=DAG_ID, start_date=START, catchup=False, max_active_runs=1, tags=["onesource", "subscriptions"],
             schedule=AssetAny(*(Asset(name=d.name, uri=asset_uri(d.name), group="onesource") for d in sources)),
             doc_md=("数据回流: delivers each published dataset to its subscribers (their own databases, drop folders, "
                     "webhooks), as each subscriber's governed view.\n\n**Schedule:** whenever one of these shared "
                     f"tables changes (Assets). Generated from the registry (version {registry.version}); do not "
                     "edit.\n\n" + dataset_docs(registry, sources))) as dag:
        deliver()
    return {DAG_ID: dag}


def run_deliveries(datasets: set[str] | None) -> list[dict]:
    """The task's work: deliver the subscriptions of ``datasets`` (None: all); a failed delivery fails the
    task (Airflow retries it), a refused one does not (nothing may be sent until a person acts)."""
    from dataclasses import asdict

    from airflow.sdk.exceptions import AirflowException

    from onesource.tasks import task_settings
    from schemas import load_registry
    from sharing.subscriptions.deliver import deliver_all

    settings = task_settings()
    registry = load_registry(settings.registry_dir, settings.cache_dir)
    outcomes = deliver_all(settings, registry, datasets=datasets)
    for o in outcomes:
        print(f"subscription {o.subscription_id}: {o.status} {o.kind or ''} {o.rows} row(s) {o.message}".rstrip())
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise AirflowException("; ".join(f"{o.subscription_id}: {o.message}" for o in failed))
    return [asdict(o) for o in outcomes]
