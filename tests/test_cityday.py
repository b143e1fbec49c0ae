"""A load's breakdown (what bench/cityday.py reports) and the GX import without its unused modules.

* the load task returns, per load, where its time went; the parts are measured, not derived, so they
  must fit inside the task's own time, and the task's CPU is the process's (every thread);
* quality.gximport: GX imported with scipy.stats and altair deferred loads neither, and the stand-ins
  then answer exactly as the real modules do (a fresh interpreter: this session may have them already).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.cityday import STEPS, _breakdown
from tests.helpers import csv_text, drop, write_registry


def test_the_breakdown_splits_validate_and_adds_the_task_end():
    stages = {"task_start": 1.0, "imports": 0.1, "validate": 2.0, "references": 0.25, "gx_context": 1.5,
              "recheck": 0.01, "publish": 0.3, "in_task": 3.0}
    out = _breakdown(4.5, stages)
    assert list(out) == [k for k in STEPS if k not in ("checks", "task_end")] + ["checks", "task_end"]
    assert out["checks"] == pytest.approx(2.0 - 0.25 - 1.5 + 0.01)
    assert out["task_end"] == pytest.approx(4.5 - 1.0 - 3.0)
    assert _breakdown(1.0, {"task_start": 0.8, "in_task": 0.5})["task_end"] == 0.0  # clocks never go negative


@pytest.mark.slow
def test_a_load_task_returns_where_its_time_went(tiny, monkeypatch):
    from onesource.tasks import load_dataset

    write_registry(tiny.registry_dir)
    drop(tiny, "amr/firms/1.csv", csv_text())
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    [result] = load_dataset("firms")
    assert result["status"] == "published"
    seconds = result["seconds"]
    fixed = ("imports", "registry", "lake_open", "versions", "ledger", "extract")
    stages = ("standardize", "validate", "recheck", "publish")
    for key in (*fixed, *stages, "references", "gx_context", "task_start", "in_task", "task_cpu"):
        assert seconds[key] >= 0, (key, seconds)
    # every part was timed inside the task, one after the other: together no longer than the task
    assert sum(seconds[k] for k in (*fixed, *stages)) <= seconds["in_task"] + 0.01, seconds
    assert seconds["references"] + seconds["gx_context"] <= seconds["validate"] + 0.01, seconds
    assert seconds["task_start"] < 600  # this process's age: pytest's, not a clock error of years


DEFERRED = r"""
import sys
from pathlib import Path
from quality.validate import _ready
_ready(Path(sys.argv[1]))  # what a load's set-up thread does: GX imported, its file context made
loaded = [m for m in ("scipy.stats._stats_py", "altair.vegalite") if m in sys.modules]
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
from scipy import stats
import scipy.stats.distributions as dist
import altair as alt
print(loaded, kl.stats.entropy([0.5, 0.5], [0.9, 0.1]), stats.entropy([0.2, 0.8], [0.5, 0.5]),
      dist.norm.cdf(1.0), alt.Chart.__name__, kl.alt is alt or kl.alt.Chart is alt.Chart)
"""

REAL = r"""
from scipy import stats
import scipy.stats.distributions as dist
import altair as alt
print([], stats.entropy([0.5, 0.5], [0.9, 0.1]), stats.entropy([0.2, 0.8], [0.5, 0.5]), dist.norm.cdf(1.0),
      alt.Chart.__name__, True)
"""


@pytest.mark.slow
def test_gx_imports_without_scipy_stats_and_altair_until_they_are_used(tmp_path):
    def last_line(code: str) -> str:
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.strip().splitlines()[-1]

    deferred, real = last_line(DEFERRED), last_line(REAL)
    assert deferred.startswith("[] "), deferred  # neither was imported by GX's own import
    assert deferred == real  # the same answers from the stand-ins as from the modules


def test_a_task_process_builds_only_its_own_dag_and_the_same_one(tiny, monkeypatch):
    """Airflow's task runner names the DAG it parses for (the parsing context): build_dags builds only that
    one, task for task and edge for edge the DAG the dag-processor serialized; no context, every DAG."""
    from onesource.dagfactory import build_dags

    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", raising=False)
    every = build_dags(tiny.registry_dir, tiny.cache_dir)
    assert len(every) > 2

    def shape(dag):
        return {t.task_id: (sorted(t.upstream_task_ids), t.trigger_rule, [o.uri for o in t.outlets])
                for t in dag.tasks}

    for dag_id, dag in every.items():
        monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", dag_id)
        only = build_dags(tiny.registry_dir, tiny.cache_dir)
        assert list(only) == [dag_id]
        assert shape(only[dag_id]) == shape(dag)
        assert only[dag_id].doc_md == dag.doc_md
        assert type(only[dag_id].timetable) is type(dag.timetable)
