"""What an Airflow task runs: the edge where settings are built and results become task states.

published -> success (the task's Asset event tells consumer DAGs);
unchanged -> skipped (no Asset event: nothing new to consume);
quarantined / failed at the source -> failed without retries (the message says what to fix);
a transient error (catalog lock, source timeout) -> raised as is, so Airflow retries.
"""

from __future__ import annotations

import os
from dataclasses import asdict


def load_dataset(dataset: str) -> list[dict]:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from lakehouse.load import run_dataset
    from onesource.config import Settings
    from schemas import load_registry

    settings = Settings.from_env()
    registry = load_registry(settings.registry_dir)
    results = run_dataset(settings, registry, dataset, os.environ)
    bad = [r for r in results if not r.ok]
    if bad:
        raise AirflowFailException("\n".join(r.message for r in bad))
    if all(r.status == "unchanged" for r in results):
        raise AirflowSkipException(f"{dataset}: no new data since the last load")
    return [asdict(r) for r in results]


def check_consistency() -> list[dict]:
    """多元校核 over the whole lake: compare every copy of an element with its authority."""
    from lakehouse import Lake
    from onesource.config import Settings
    from quality.consistency import run_consistency
    from schemas import load_registry

    settings = Settings.from_env()
    registry = load_registry(settings.registry_dir)
    with Lake(settings.lake) as lake:
        run_id, rates = run_consistency(lake, registry)
    for r in rates:
        print(f"consistency {run_id} {r.dataset}.{r.element}: {r.equal}/{r.compared} equal to {r.authority}")
    return [asdict(r) for r in rates]
