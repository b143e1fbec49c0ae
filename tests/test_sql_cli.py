"""`onesource sql` and `onesource status`: read-only, one statement, no file access."""

from __future__ import annotations

import json

import pytest

from onesource.cli import main
from tests.helpers import csv_text, drop, load


@pytest.fixture
def loaded(tiny, monkeypatch):
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    drop(tiny, "amr/firms/a.csv", csv_text())
    load(tiny)
    return tiny


def test_query_as_json_and_csv(loaded, capsys):
    assert main(["sql", "--format", "json", "SELECT enterprise_name, staff FROM shared.firms ORDER BY staff"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"enterprise_name": "杭州乙贸易有限公司", "staff": 3}, {"enterprise_name": "杭州甲科技有限公司", "staff": 12},
        {"enterprise_name": "杭州丙建设有限公司", "staff": 1024}]
    assert main(["sql", "--format", "csv", "SELECT count(*) AS n FROM shared.firms"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "3"]


@pytest.mark.parametrize("sql, reason", [
    ("SELECT 1; SELECT 2", "one statement at a time"),
    ("DELETE FROM shared.firms", "DELETE was refused"),
    ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
    ("ATTACH '/tmp/x.duckdb' AS x", "refused"),
    ("SELECT * FROM shared.nope", "onesource registry list"),
    ("INSTALL httpfs", "INSTALL was refused"),
    ("SET enable_external_access = true", "SET was refused"),
])
def test_refusals_exit_non_zero_and_say_why(loaded, capsys, sql, reason):
    assert main(["sql", sql]) == 1
    assert reason in capsys.readouterr().err
    assert main(["sql", "SELECT count(*) FROM shared.firms", "--format", "csv"]) == 0  # nothing was changed
    assert capsys.readouterr().out.splitlines()[1] == "3"


def test_describe_is_allowed(loaded, capsys):
    assert main(["sql", "--format", "csv", "DESCRIBE shared.firms"]) == 0
    assert "enterprise_name" in capsys.readouterr().out


def test_status_json(loaded, capsys):
    assert main(["status", "--json"]) == 0
    [status] = json.loads(capsys.readouterr().out)
    assert (status["dataset"], status["rows"], status["last_status"], status["loads"]) == ("firms", 3, "published", 1)
