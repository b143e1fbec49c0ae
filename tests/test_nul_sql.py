"""SQL text holding a NUL character is refused before anything reads it, on every endpoint's engine.

DuckDB reads a statement as a C string: the planner's checks would see the whole text while DuckDB's
parse (verify) and its run saw only what comes before the NUL. PostgreSQL refuses such a query too.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.exceptions import InvalidSQL
from tests.helpers import csv_text, drop, firms_dataset, load, write_registry

QUERIES = ["SELECT count(*) AS n FROM shared.firms WHERE uscc = 'a'",
           "SELECT uscc /* note */ FROM shared.firms -- trailing",
           "SELECT enterprise_status, count(*) FROM shared.firms GROUP BY 1"]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    home = Settings(home=tmp_path_factory.mktemp("nul") / "home")
    write_registry(home.registry_dir, [firms_dataset()])
    drop(home, "amr/firms/a.csv", csv_text())
    assert [r.status for r in load(home)] == ["published"]
    cli = GovernedEngine(home, load_registry(home.registry_dir))
    server = GovernedEngine(home, load_registry(home.registry_dir), persistent=True)
    yield cli, server
    server.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=st.sampled_from(QUERIES), at=st.integers(0, 200), extra=st.text(max_size=5))
def test_a_nul_anywhere_is_refused_as_invalid_sql(engines, sql, at, extra):
    at = min(at, len(sql))
    text = sql[:at] + "\x00" + extra + sql[at:]
    for engine in engines:
        with pytest.raises(InvalidSQL, match="NUL"):
            engine.query("amr", text)
    assert all(engine.query("amr", sql).columns for engine in engines)  # control: without it, answered
