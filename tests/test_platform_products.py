"""Platform products are data: the registry's ``platform`` kind (schemas.kinds) and the products metrics makes
(metrics.publish.PRODUCTS) name the same products, the way tests/test_connector_kinds.py checks the connectors."""

from __future__ import annotations

import pytest

from metrics.publish import PRODUCTS, product
from schemas.kinds import KINDS


def test_the_registry_and_metrics_know_the_same_platform_products():
    assert set(PRODUCTS) == set(dict(KINDS["platform"].choices)["product"])
    assert {name for name, p in PRODUCTS.items() if p.sliced} == {  # the KPI history: one slice per period
        "kpi_figures", "kpi_members", "kpi_dataset_status", "kpi_duplicate_pairs"}


def test_an_unknown_product_is_refused():
    with pytest.raises(ValueError, match="unknown platform product 'kpi_weather'"):
        product("kpi_weather")
