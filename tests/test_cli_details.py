"""The CLI's details (issue 20, item 7): a progress that adds up, IDs never cut, --json that round-trips,
KPI figures never rounded across their target, CSV with LF line ends, an honest "nothing new", exports
outside the repository, unknown names with every known one accounted for, a busy demo port named with its fix.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
import re
import socket
import subprocess
import sys
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rich.console import Console

from core.config import Settings
from core.output import json_array, percent, print_table, target_text
from examples.changsha.runner import TaskCount, all_dag_tasks
from lakehouse import Lake
from onesource import airflow_cli
from onesource.cli import main
from schemas import load_registry
from schemas.model import KNOWN_SHOWN, unknown_name_message
from sharing import requests
from sharing.grants import add_grant
from tests.helpers import ELEMENTS, csv_text, drop, firms_dataset, load, write_registry

FEW = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home with a conditional ``firms`` (3 rows, owned by amr, names masked) loaded, shared by the module's
    tests (each adds what it reads by its own IDs)."""
    made = Settings(home=tmp_path_factory.mktemp("cli-details") / "home")
    elements = copy.deepcopy(ELEMENTS)  # the names masked for consumers: a grant may match values against them
    next(e for e in elements["elements"] if e["name"] == "enterprise_name")["sensitivity"] = 3
    write_registry(made.registry_dir, [firms_dataset(share_type="conditional", conditions="按需申请")],
                   elements=elements)
    drop(made, "amr/firms/a.csv", csv_text())
    [result] = load(made)
    assert result.status == "published", result.message
    return made


@pytest.fixture
def loaded(home, monkeypatch):
    """The module's home, the CLI pointed at it."""
    monkeypatch.setenv("ONESOURCE_HOME", str(home.home))
    return home


# -- progress: "17/15" ---------------------------------------------------------------------------------------

# lines of a real `airflow dags test onesource_ingest_all` run (Airflow 3.3)
LOG = """\
2026-11-29T06:22:03.169211Z [info     ] Task instance state updated    [airflow.api_fastapi.execution_api.routes.task_instances] correlation_id=01a2 loc=task_instances.py:485 new_state=success rows_affected=1 ti_id=01a225f7
2026-11-29T06:22:03.181390Z [info     ] [DAG TEST] end task task_id=mca.mca_admin_divisions map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-11-29T06:22:03.192615Z [info     ] [DAG TEST] starting task_id=hotline.hotline_tickets map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-11-29T06:22:04.631543Z [info     ] [DAG TEST] end task task_id=hotline.hotline_tickets map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-11-29T06:22:42.879394Z [info     ] [DAG TEST] end task task_id=consistency map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-11-29T06:22:45.185962Z [info     ] [DAG TEST] end task task_id=metrics map_index=3 [airflow.sdk.definitions.dag] loc=dag.py:1563
"""


def test_each_task_of_a_dag_run_is_counted_once_against_the_dags_own_task_count(settings):
    assert [airflow_cli.task_ended(line) for line in LOG.splitlines()] == [
        None, "mca.mca_admin_divisions", None, "hotline.hotline_tickets", "consistency", "metrics[3]"]
    # the total is the DAG's: a load per source dataset, then consistency and metrics (it was the loads only)
    from examples.changsha.data import DemoConfig
    from examples.changsha.generate import write_registry as write_demo_registry

    write_demo_registry(settings.registry_dir, DemoConfig())
    registry = load_registry(settings.registry_dir)
    code = ("import sys; from pathlib import Path; from onesource.dagfactory import ALL_DAG_ID, build_dags; "
            "print('TASKS', len(build_dags(Path(sys.argv[1]))[ALL_DAG_ID].task_ids))")
    proc = subprocess.run([sys.executable, "-c", code, str(settings.registry_dir)], capture_output=True, text=True,
                          env={**settings.environ(), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert f"TASKS {all_dag_tasks(registry)}\n" in proc.stdout, proc.stderr[-2000:]


@given(expected=st.integers(0, 20), ends=st.lists(st.integers(0, 25), max_size=60))
def test_progress_never_counts_past_its_total(expected, ends):
    """Retries end a task again, and a run may hold tasks nobody expected: n/total never has n > total."""
    count = TaskCount(expected)
    for task in ends:
        count.done(f"t{task}")
        assert count.completed <= count.total
    assert count.completed == len(set(ends)) and count.total == max(expected, len(set(ends)))


# -- grants and requests: whole IDs, --json ------------------------------------------------------------------

def test_grants_list_shows_ids_whole_and_json_holds_every_field(loaded, capsys):
    registry = load_registry(loaded.registry_dir)
    with Lake(loaded.lake) as lake:
        ids = [add_grant(lake, registry, "tax", "firms", row_filter="staff >= 10 AND enterprise_status = '1'",
                         purpose="信用监管：一个很长很长的用途说明，" * 4, match=["enterprise_name"], match_quota=7)
               for _ in range(3)]
        expected = lake.con.execute("SELECT * FROM lake.ops.grants ORDER BY granted_at, grant_id").fetchall()
    assert main(["grants", "list"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and all(re.search(rf"\b{i}\b", out) for i in ids)  # on one line, as revoke wants it
    assert main(["grants", "list", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [g["grant_id"] for g in got] == [r[0] for r in expected]
    assert [[g[k] for k in list(g)[:len(r)]] for g, r in zip(got, expected, strict=True)] == [
        [v.isoformat() if isinstance(v, dt.datetime) else v for v in r] for r in expected]
    assert got[0]["match"] == [{"column": "enterprise_name", "daily_quota": 7}]
    assert main(["grants", "revoke", "--grant-id", got[0]["grant_id"]]) == 0  # the ID shown is the ID revoke takes


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(purposes=st.lists(st.text(min_size=1, max_size=80).filter(lambda s: s.strip() and "\x00" not in s),
                         min_size=1, max_size=4))
def test_requests_json_round_trips_any_text_exactly(loaded, capsys, purposes):
    registry = load_registry(loaded.registry_dir)
    with Lake(loaded.lake) as lake:
        made = [requests.create(lake, registry, "tax", "firms", purpose=p, requested_by="tax_analyst") for p in purposes]
    assert main(["requests", "list", "--json"]) == 0
    got = {r["request_id"]: r for r in json.loads(capsys.readouterr().out)}
    for m in made:
        assert got[m.request_id]["purpose"] == m.purpose and got[m.request_id]["status"] == m.status
        assert got[m.request_id]["requested_at"] == m.requested_at.isoformat() and not got[m.request_id]["overdue"]
    assert main(["requests", "list"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and all(m.request_id in out for m in made)


cells = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40)
ids = st.from_regex(r"[0-9a-f]{8,40}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(30, 200), rows=st.lists(st.tuples(ids, cells, cells, ids), min_size=1, max_size=5))
def test_tables_never_cut_a_value(width, rows):
    """At any terminal width: no ellipsis, every ID on one line, no line wider than the terminal (a table),
    or one block per row when the IDs alone do not fit."""
    console = Console(width=width, file=io.StringIO(), color_system=None)
    print_table(console, ["id", "name", "note", "other id"], [list(r) for r in rows], whole=("id", "other id"))
    out = console.file.getvalue()
    assert "…" not in out
    for r in rows:
        assert any(r[0] in line for line in out.splitlines()) and any(r[3] in line for line in out.splitlines())
    if "┃" in out:
        assert max(map(len, out.splitlines())) <= width


records = st.lists(st.fixed_dictionaries({
    "id": ids, "text": st.text(), "n": st.integers() | st.none(), "tags": st.lists(st.text(), max_size=3),
    "at": st.datetimes(), "flag": st.booleans()}), max_size=5)


@given(records)
def test_json_output_round_trips(recs):
    got = json.loads(json_array(recs))
    assert got == [{**r, "at": r["at"].isoformat()} for r in recs]
    assert [list(g) for g in got] == [list(r) for r in recs]  # every field, in the record's order


# -- metrics: never rounded across a target; no truncation --------------------------------------------------

@given(value=st.one_of(st.floats(0, 1), st.sampled_from([0.995, 0.9995, 0.89995, 0.8999, 0.10004, 0.0999])),
       target=st.one_of(st.sampled_from([0.9, 0.1, 0.8, 1.0]), st.decimals("0", "1", places=4).map(float)),
       lower=st.booleans(), digits=st.integers(0, 2))
def test_a_shown_percentage_reaches_its_target_only_when_the_value_does(value, target, lower, digits):
    shown = Decimal(percent(value, target, lower, digits).removesuffix("%"))
    exact, goal = Decimal(repr(value)) * 100, Decimal(repr(target)) * 100
    assert (shown <= goal if lower else shown >= goal) == (exact <= goal if lower else exact >= goal)
    assert abs(shown - exact) <= Decimal(1).scaleb(-digits)  # off by less than one shown digit


def test_percent_examples():
    assert percent(0.995) == "99.5%" and percent(0.9995, 1.0) == "99.9%" and percent(0.10004, 0.1, True) == "10.1%"
    assert target_text(0.9) == ">= 90%" and target_text(0.1, True) == "<= 10%" and target_text(0.925) == ">= 92.5%"
    assert percent(Decimal("0.8995"), Decimal("0.9")) == "89.9%" and percent(None) == "-"  # a DECIMAL column's value


def test_metrics_table_shows_one_decimal_and_cuts_nothing(loaded, capsys):
    assert main(["metrics"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and max(map(len, out.splitlines())) <= 140
    assert re.search(r"\d+\.\d%", out) and ">= 90%" in out


# -- sql --format csv: LF ------------------------------------------------------------------------------------

values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"), max_size=20)


@FEW
@given(rows=st.lists(st.tuples(values, values), min_size=1, max_size=8))
def test_csv_is_lf_and_parses_back_to_the_same_rows(loaded, capsys, tmp_path, rows):
    def lit(v):
        return "'" + v.replace("'", "''") + "'"

    query = "SELECT * FROM (VALUES " + ", ".join(f"({lit(a)}, {lit(b)})" for a, b in rows) + ") t(a, b)"
    assert main(["sql", "--format", "csv", query]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out
    assert list(csv.reader(io.StringIO(out, newline=""))) == [["a", "b"], *map(list, rows)]
    path = tmp_path / "out.csv"
    assert main(["sql", "--output", str(path), query]) == 0
    data = path.read_bytes()
    assert b"\r" not in data and list(csv.reader(io.StringIO(data.decode(), newline=""))) == [["a", "b"], *map(list, rows)]
    capsys.readouterr()


# -- ingest with nothing new ---------------------------------------------------------------------------------

def test_ingest_without_a_new_extract_says_what_is_shared(loaded, capsys):
    assert main(["ingest", "firms"]) == 0
    out = capsys.readouterr().out
    assert "firms: no new extract in " in out and "(last load " in out and "published; 3 rows shared)" in out
    assert "0 rows" not in out
    # where the extract is looked for, so a file dropped one folder off is found (newcomer walkthrough)
    assert str(loaded.sources_dir / firms_dataset()["connector"]["path"]) in "".join(out.split())  # rich wraps


# -- registry export -----------------------------------------------------------------------------------------

def test_registry_export_writes_into_the_home_and_says_where(loaded, capsys, tmp_path, monkeypatch):
    cwd = tmp_path / "repo"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["registry", "export", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    path = loaded.reports_dir / "catalogue.csv"
    assert path.exists() and list(cwd.iterdir()) == [] and str(path) in out.replace("\n", "")
    other = tmp_path / "elsewhere" / "cat.xlsx"
    assert main(["registry", "export", "--output", str(other)]) == 0 and other.exists()


# -- unknown names: every known one accounted for ------------------------------------------------------------

@given(names=st.sets(st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True), max_size=80),
       name=st.from_regex(r"[a-z]{3,10}", fullmatch=True))
def test_unknown_name_lists_all_or_says_how_many_more_and_where(names, name):
    assume(name not in names)
    message = unknown_name_message("dataset", name, names)
    listed = message.split("): ", 1)[1].split(", and ")[0].split(", ") if names else []
    assert f"known ({len(names)})" in message or not names
    if len(names) <= KNOWN_SHOWN:
        assert sorted(listed) == sorted(names) and "more" not in message
    else:
        assert len(listed) == KNOWN_SHOWN and set(listed) <= names
        assert f"and {len(names) - KNOWN_SHOWN} more (all of them: onesource registry list)" in message


def test_unknown_dataset_on_the_cli_suggests_the_close_one(loaded, capsys):
    assert main(["quality", "report", "firm"]) == 1
    assert "did you mean 'firms'?" in capsys.readouterr().err


# -- make demo on a busy hotline port ------------------------------------------------------------------------

def test_demo_on_a_busy_hotline_port_names_the_option_before_any_work(settings, monkeypatch, capsys):
    monkeypatch.setenv("ONESOURCE_HOME", str(settings.home))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--api-port", str(port)]) == 1
    err = capsys.readouterr().err.replace("\n", "")
    assert f"127.0.0.1:{port}: the port is already in use" in err
    assert re.search(r'make demo ARGS="--api-port \d+"', err) and "Traceback" not in err
    assert not settings.registry_dir.exists()  # refused before the city was written


# -- registry history of a name the registry does not have ------------------------------------------------

def test_registry_history_of_a_misspelt_name_is_an_error_with_a_guess(loaded, capsys):
    assert main(["registry", "history", "firm"]) == 1
    err = capsys.readouterr().err
    assert "unknown dataset or element 'firm'; did you mean 'firms'?" in err and "Traceback" not in err
    assert main(["registry", "history", "firms"]) == 0  # a registered dataset still lists its versions
    assert "versions of firms" in capsys.readouterr().out
