"""A load task's own process builds only its task (onesource.dagfactory): Airflow's parsing context names the
DAG and the task; every other reader (the dag-processor, `dags test`) gets every DAG whole, and a task that is
not a load (consistency, metrics), or a dataset whose name is such a task's, gets its DAG whole too."""

from __future__ import annotations

import pytest
from airflow.sdk.definitions.context import _AIRFLOW_PARSING_CONTEXT_DAG_ID, _AIRFLOW_PARSING_CONTEXT_TASK_ID

from onesource.dagfactory import ALL_DAG_ID, build_dags
from tests.helpers import firms_dataset, write_registry


@pytest.fixture
def registry_dir(tmp_path):
    datasets = [firms_dataset(), firms_dataset(name="consistency", title="a dataset named like a task")]
    write_registry(tmp_path / "registry", datasets)
    return tmp_path / "registry"


def _tasks(dags: dict) -> dict[str, set[str]]:
    return {dag_id: set(d.task_dict) for dag_id, d in dags.items()}


def test_a_load_tasks_process_builds_its_task_alone(registry_dir, monkeypatch):
    whole = _tasks(build_dags(registry_dir))
    owner = firms_dataset()["owner"]
    assert {f"{owner}.firms", f"{owner}.consistency", "consistency", "metrics"} <= whole[ALL_DAG_ID]
    for task_id in (f"{owner}.firms", f"{owner}.consistency"):
        monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_DAG_ID, ALL_DAG_ID)
        monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_TASK_ID, task_id)
        assert _tasks(build_dags(registry_dir)) == {ALL_DAG_ID: {task_id}}
    for task_id in ("consistency", "metrics"):  # not loads: the DAG whole
        monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_TASK_ID, task_id)
        assert _tasks(build_dags(registry_dir)) == {ALL_DAG_ID: whole[ALL_DAG_ID]}
