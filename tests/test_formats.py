"""Check-digit rules of the national codes, and that the demo city generates valid ones."""

from __future__ import annotations

import pytest

from onesource.demo.data import City, DemoConfig
from schemas.formats import FORMAT_RULES, is_valid_org_code, is_valid_resident_id, is_valid_uscc


@pytest.mark.parametrize("code", ["91350100M000100Y43", "911100007109303176", "91330106MA2B0C1D68"])
def test_valid_uscc(code):
    assert is_valid_uscc(code)


@pytest.mark.parametrize("code", [
    "91350100M000100Y44",   # wrong GB 32100 check character
    "91350100M000100Y4",    # too short
    "91350100M00O100Y43",   # O is not in the alphabet
    "911100007109303177",
])
def test_invalid_uscc(code):
    assert not is_valid_uscc(code)


def test_resident_id_check_digit_including_x():
    assert is_valid_resident_id("11010519491231002X")
    assert not is_valid_resident_id("110105194912310021")
    assert not is_valid_resident_id("11010519491231002")


def test_org_code_with_or_without_hyphen():
    assert is_valid_org_code("71093031-7") and is_valid_org_code("710930317")
    assert not is_valid_org_code("710930318")


def test_demo_city_codes_all_valid():
    city = City(DemoConfig(scale=0.1))
    assert all(is_valid_uscc(e.uscc) for e in city.enterprises)
    assert all(is_valid_resident_id(r.resident_id) for r in city.residents)
    # the birth date is part of the identity number
    assert all(r.resident_id[6:14] == r.birth.strftime("%Y%m%d") for r in city.residents)


def test_every_format_rule_has_a_pattern():
    import re

    for rule in FORMAT_RULES.values():
        re.compile(rule.pattern)
