"""Check-digit rules of the national codes, and that the demo city generates valid ones."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.changsha.data import City, DemoConfig
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


def test_sql_check_digits_agree_with_python():
    """The DuckDB SQL the GX expectations run and the Python the generator uses give the same answers."""
    import duckdb

    from quality.checkdigits import org_code_sql, resident_id_sql, uscc_sql
    from quality.expectations import resident_id_ok

    city = City(DemoConfig(scale=0.1))
    usccs = [e.uscc for e in city.enterprises]
    ids = [r.resident_id for r in city.residents]
    broken_usccs = [c[:-1] + ("0" if c[-1] != "0" else "1") for c in usccs] + [c[:10] + "I" + c[11:] for c in usccs]
    broken_ids = [c[:-1] + ("0" if c[-1] != "0" else "1") for c in ids] + [c[:6] + "20990101" + c[14:] for c in ids]
    con = duckdb.connect()
    for values, sql, python in ((usccs + broken_usccs, uscc_sql("v"), is_valid_uscc),
                                (ids + broken_ids, resident_id_sql("v"), resident_id_ok),
                                ([c[8:17] for c in usccs] + ["710930318", "71093031X"], org_code_sql("v"),
                                 is_valid_org_code)):
        got = con.execute(f"SELECT v, coalesce({sql}, false) FROM unnest(?) t(v)", [values]).fetchall()
        assert {v: ok for v, ok in got} == {v: python(v) for v in values}
        assert any(ok for _, ok in got) and not all(ok for _, ok in got)


def check_digits(family):
    """One family of quality.checkdigits as a single check: its check-digit answers."""
    return lambda arr: family(arr)["check_digit"]


def _numpy_answers(check, values):
    import pyarrow as pa

    return dict(zip(values, check(pa.array(values, pa.string())).tolist(), strict=True))


def test_numpy_check_digits_agree_with_python():
    """The vectorised checks (GX's fast path) give the Python answers on valid, broken and odd values."""
    from quality import checkdigits
    from quality.expectations import resident_id_ok

    city = City(DemoConfig(scale=0.1))
    usccs = [e.uscc for e in city.enterprises]
    ids = [r.resident_id for r in city.residents]
    odd = ["", "x", "中文中文中文", "９１３３０１０６ＭＡ２Ｂ０Ｃ１Ｄ６８", "91330106MA2B0C1D6", "91330106MA2B0C1D688"]
    broken_usccs = [c[:-1] + ("0" if c[-1] != "0" else "1") for c in usccs] + [c[:10] + "I" + c[11:] for c in usccs]
    broken_usccs += [c[:16] + ("0" if c[16] != "0" else "1") + c[17:] for c in usccs]  # the embedded org check
    broken_ids = [c[:-1] + ("0" if c[-1] != "0" else "1") for c in ids] + [c[:6] + "20990101" + c[14:] for c in ids]
    broken_ids += [c[:6] + "19000229" + c[14:] for c in ids] + [c[:6] + "20000229" + c[14:] for c in ids]
    orgs = [c[8:17] for c in usccs] + ["710930318", "71093031X", "71093031-8", "7109303a8"]
    for check, python, values in ((check_digits(checkdigits.uscc), is_valid_uscc, usccs + broken_usccs + odd),
                                  (check_digits(checkdigits.resident_id), resident_id_ok, ids + broken_ids + odd),
                                  (check_digits(checkdigits.org_code), is_valid_org_code, orgs + odd)):
        got = _numpy_answers(check, values)
        want = {v: bool(re.fullmatch(r"[\x00-\x7f]*", v)) and python(v) for v in values}  # ASCII, as in SQL
        assert got == want, [v for v in values if got[v] != want[v]][:5]
        assert any(got.values()) and not all(got.values())
    assert check_digits(checkdigits.uscc)(pa.array([None, usccs[0]], pa.string())).tolist() == [True, True]  # NULL: not ours


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-X", min_size=8, max_size=19))
def test_numpy_check_digits_agree_on_any_code(text):
    from quality import checkdigits
    from quality.expectations import resident_id_ok

    for check, python in ((check_digits(checkdigits.uscc), is_valid_uscc), (check_digits(checkdigits.org_code), is_valid_org_code),
                          (check_digits(checkdigits.resident_id), resident_id_ok)):
        assert _numpy_answers(check, [text]) == {text: python(text)}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-X", min_size=8, max_size=19))
def test_sql_check_digits_agree_on_any_code(text):
    """The SQL forms, like the numpy ones, give schemas.formats' answers on any text (the definition is
    there once; quality.checkdigits builds both forms from its constants)."""
    import duckdb

    from quality.checkdigits import org_code_full_sql, resident_id_sql, uscc_sql
    from quality.expectations import resident_id_ok

    for sql, python in ((uscc_sql("v"), is_valid_uscc), (org_code_full_sql("v"), is_valid_org_code),
                        (resident_id_sql("v"), resident_id_ok)):
        [(got,)] = duckdb.execute(f"SELECT coalesce({sql}, false) FROM (SELECT ?::VARCHAR AS v)", [text]).fetchall()
        assert got == python(text), (text, sql[:40])


def test_numpy_check_digits_in_chunks(monkeypatch):
    """Large columns are checked in steps; the answers do not depend on where a step ends."""
    from quality import checkdigits

    city = City(DemoConfig(scale=0.1))
    values = [e.uscc for e in city.enterprises][:50]
    values[7] = values[7][:-1] + ("0" if values[7][-1] != "0" else "1")
    values[31] = None
    whole = check_digits(checkdigits.uscc)(pa.array(values, pa.string())).tolist()
    monkeypatch.setattr(checkdigits, "CHUNK", 8)
    assert check_digits(checkdigits.uscc)(pa.array(values, pa.string())).tolist() == whole
    assert whole.count(False) == 1 and whole[31] is True


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-Xa１ Ｉ", min_size=16, max_size=19),
                 st.text(max_size=20)))
def test_numpy_format_rules_agree_with_the_regular_expressions(text):
    """The families answer the USCC and resident ID format rules as the rules' regular expressions do
    in DuckDB (RE2: ASCII classes, whole value)."""
    import duckdb

    from quality import checkdigits
    from schemas.formats import FORMAT_RULES

    for family, rule in ((checkdigits.uscc, "uscc"), (checkdigits.resident_id, "resident_id")):
        [got] = family(pa.array([text], pa.string()))["format"].tolist()
        pattern = FORMAT_RULES[rule].pattern.removeprefix("^").removesuffix("$")
        [(want,)] = duckdb.execute("SELECT regexp_full_match(?, ?)", [text, pattern]).fetchall()
        assert got == want, (rule, text)


def test_numpy_format_rules_on_real_codes():
    from quality import checkdigits

    city = City(DemoConfig(scale=0.1))
    usccs = [e.uscc for e in city.enterprises][:200]
    ids = [r.resident_id for r in city.residents][:200]
    assert all(checkdigits.uscc(pa.array(usccs, pa.string()))["format"])
    assert all(checkdigits.resident_id(pa.array(ids, pa.string()))["format"])
    bad = [usccs[0][:10] + "I" + usccs[0][11:], usccs[0] + "1", "91ABCDEF" + "1" * 10, None]
    assert checkdigits.uscc(pa.array(bad, pa.string()))["format"].tolist() == [False, False, False, True]
