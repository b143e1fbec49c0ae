"""schemathesis against the HTTP API's own OpenAPI document: whatever it generates, with a valid
department token or without one, the API never answers with a server error (5xx)."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from onesource.serve import create_app
from sharing.engine import GovernedEngine
from tests.helpers import demo_home

TOKEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    home, registry = demo_home(tmp_path_factory.mktemp("api") / "home",
                               ("mca_admin_divisions", "amr_enterprise_register", "psb_resident_register"), users=True)
    TOKEN["tax"] = json.loads((home.home / "demo-credentials.json").read_text())["tax"]["token"]
    engine = GovernedEngine(home, registry, persistent=True)
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(engine))
    engine.close()


def test_no_server_errors(api_schema):
    """Every operation of the document, with the cases schemathesis draws from its schema (its pytest
    plugin does not run on pytest 9, so the strategies are driven by hypothesis directly)."""
    from hypothesis import given
    from hypothesis import strategies as st

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/v1/query", "/api/v1/catalogue", "/api/v1/requests"}
    strategy = st.one_of(*(op.as_strategy() for op in operations))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy, authorized=st.booleans())
    def check(case, authorized):
        headers = {"Authorization": f"Bearer {TOKEN['tax']}"} if authorized else {}
        response = case.call(headers=headers)
        assert response.status_code < 500, \
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"

    check()
