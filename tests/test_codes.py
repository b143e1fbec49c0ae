"""Text clean-up trims every Unicode blank at both ends, and a national code has one spelling before keys and
checks see it: the standardize rules (lakehouse.standardize) in DuckDB against plain-Python oracles."""

from __future__ import annotations

import random

import duckdb
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from lakehouse.standardize import FULL, HYPHENS, text_sql
from schemas import load_registry
from schemas.formats import (
    ID_CHECK,
    USCC_ALPHABET,
    is_valid_org_code,
    is_valid_resident_id,
    is_valid_uscc,
    org_code_check_char,
    resident_id_check_char,
    uscc_check_char,
)
from tests.helpers import BLANK_CATEGORIES, HEADER, NAMED_BLANKS, drop, load, oracle_clean, rows, write_registry


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    return load_registry(write_registry(tmp_path_factory.mktemp("registry")))


def standardized(reg, fmt: str | None, values: list[str]) -> list[str | None]:
    """The text rules of a string column (with format rule ``fmt``, if given) applied to ``values`` in DuckDB."""
    from schemas.model import Column

    col = Column(name="v", source="v", type="string", format=fmt)
    return [r[0] for r in duckdb.execute(f"SELECT {text_sql('v', col, reg)} FROM unnest(?) WITH ORDINALITY t(v, i) "
                                         "ORDER BY i", [values]).fetchall()]


pads = st.text(st.one_of(st.sampled_from(NAMED_BLANKS), st.characters(categories=BLANK_CATEGORIES,
                                                                     exclude_characters="\ud800")), max_size=4)
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.tuples(pads, texts, pads), min_size=1, max_size=30))
def test_clean_up_trims_every_blank_at_both_ends(reg, data):
    values = [left + text + right for left, text, right in data]
    assert standardized(reg, None, values) == [oracle_clean(v) for v in values]


@given(value=st.sampled_from(["长沙市岳麓区人民政府", "91430100MA4L0QWE3B", "a b", "Ｘ１"]), left=pads, right=pads)
@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_padded_value_is_the_value(reg, value, left, right):
    assert standardized(reg, None, [left + value + right]) == [oracle_clean(value)]


# -- national codes -------------------------------------------------------------------------------------

def widen(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@st.composite
def org_codes(draw) -> str:
    body = draw(st.text(st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"), min_size=8, max_size=8))
    return body + "-" + org_code_check_char(body)


@st.composite
def usccs(draw) -> str:
    org8 = draw(st.text(st.sampled_from("0123456789ABCDEFGHJKLMNPQRTUWXY"), min_size=8, max_size=8))
    head = draw(st.sampled_from(["91430100", "12430000", "52430102"])) + org8 + org_code_check_char(org8)
    return head + uscc_check_char(head)


@st.composite
def resident_ids(draw) -> str:
    area = draw(st.sampled_from(["430102", "430104", "110105"]))
    born = draw(st.dates(min_value=__import__("datetime").date(1920, 1, 1),
                         max_value=__import__("datetime").date(2020, 12, 31)))
    body = area + born.strftime("%Y%m%d") + f"{draw(st.integers(0, 999)):03d}"
    return body + resident_id_check_char(body)


@st.composite
def spelled(draw, codes, kind: str) -> tuple[str, str]:
    """(canonical code, one way a department may type it)."""
    code = draw(codes)
    variant = code
    if kind == "org_code":
        hyphen = draw(st.sampled_from(list(HYPHENS) + [""]))
        variant = variant.replace("-", hyphen)
    if draw(st.booleans()):
        variant = variant.lower()
    if draw(st.booleans()):  # the whole code, or some characters, typed full-width
        variant = "".join(widen(c) if draw(st.booleans()) else c for c in variant)
    return code, draw(pads) + variant + draw(pads)


KINDS = {"org_code": (org_codes(), is_valid_org_code), "uscc": (usccs(), is_valid_uscc),
         "resident_id": (resident_ids(), is_valid_resident_id)}


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), kind=st.sampled_from(sorted(KINDS)))
def test_every_spelling_of_a_valid_code_is_the_one_canonical_code(reg, data, kind):
    codes, valid = KINDS[kind]
    pairs = data.draw(st.lists(spelled(codes, kind), min_size=1, max_size=20))
    got = standardized(reg, kind, [v for _, v in pairs])
    assert got == [code for code, _ in pairs]
    assert all(valid(c) for c in got)


def test_the_organisation_codes_of_the_issue_are_one_key(reg):
    assert set(standardized(reg, "org_code", ["77091453-8", "770914538", "77091453－8", "77091453—8",
                                               "\t77091453−8\u00a0", "７７０９１４５３‐８"])) == {"77091453-8"}
    # the code is its 9 characters: a hyphen elsewhere is punctuation too (as schemas.formats reads it)
    assert standardized(reg, "org_code", ["7709145-38"]) == ["77091453-8"]
    # not 9 code characters: left as sent (after the clean-up), for the format check to name
    assert standardized(reg, "org_code", ["77091453-88", "abc", "7709145３"]) == ["77091453-88", "ABC", "77091453"]


def test_check_digit_verdicts_agree_with_the_python_oracle():
    """The vectorised and SQL check digits (quality.checkdigits) against schemas.formats,
    on canonical codes and on each with one character changed."""
    import pyarrow as pa

    from quality import checkdigits
    from quality.checkdigits import org_code_full_sql, resident_id_sql, uscc_sql

    rng = random.Random(11)
    families = {"org_code": (checkdigits.org_code, org_code_full_sql, is_valid_org_code, "0123456789X"),
                "uscc": (checkdigits.uscc, uscc_sql, is_valid_uscc, USCC_ALPHABET),
                "resident_id": (checkdigits.resident_id, resident_id_sql, is_valid_resident_id, ID_CHECK)}
    for kind, (family, sql, oracle, alphabet) in families.items():
        good = [_example(kind, rng) for _ in range(300)]
        bad = [c[:-1] + rng.choice(alphabet.replace(c[-1], "")) for c in good]
        values = good + bad
        fast = family(pa.array(values))["check_digit"].tolist()
        in_sql = [r[0] for r in duckdb.execute(f"SELECT {sql('v')} FROM unnest(?) WITH ORDINALITY t(v, i) ORDER BY i",
                                               [values]).fetchall()]
        expected = [oracle(v) for v in values]
        assert fast == expected and in_sql == expected and all(expected[:300]) and not any(expected[300:])


def _example(kind: str, rng: random.Random) -> str:
    if kind == "org_code":
        body = "".join(rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(8))
        return body + "-" + org_code_check_char(body)
    if kind == "uscc":
        org8 = "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
        head = "91430100" + org8 + org_code_check_char(org8)
        return head + uscc_check_char(head)
    body = "430102" + f"{rng.randint(1930, 2015)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    return body + resident_id_check_char(body)


def test_padded_and_wide_codes_load_as_one_key_and_pass(tiny):
    """Through a real load: a tab, NBSP, BOM, zero-width space or CR around a valid credit code, or the code
    typed full-width or in lower case, is the code; the same code twice in such spellings is a duplicate key."""
    good = ["91330106MA2B0C1D68", "91330105MA28A00029", "91330108MA27U0000F"]
    spellings = ["\t" + good[0], good[1] + "\u00a0", "\ufeff\u200b" + widen(good[2].lower()) + "\r"]
    text = HEADER + "".join(f'"{code}",企业{i},1,,,\n' for i, code in enumerate(spellings))
    drop(tiny, "amr/firms/firms_1.csv", text)
    [result] = load(tiny)
    assert result.status == "published", result.message
    assert sorted(r[0] for r in rows(tiny, "SELECT uscc FROM shared.firms")) == sorted(good)
    assert rows(tiny, "SELECT count(*) FROM ops.quality_results WHERE NOT success") == [(0,)]

    drop(tiny, "amr/firms/firms_2.csv", HEADER + f'"{good[0]}",甲,1,,,\n" {widen(good[0])}\t",乙,1,,,\n')
    [result] = load(tiny)
    assert result.status == "quarantined" and "key_unique" in result.message
    assert rows(tiny, "SELECT _row, _reasons FROM quarantine.firms ORDER BY _row") == [
        (1, ["key_unique:uscc"]), (2, ["key_unique:uscc"])]


# -- a code list's own spellings skip the clean-up: the same answers as every rule ------------------------

# (no NUL: DuckDB reads a statement as a C string, so no SQL literal can hold one; nor can a registry's YAML)
# (st.text over a one_of alphabet drew no full-width character in 200 lists: the characters are drawn one by one)
code_texts = st.lists(st.one_of(st.sampled_from(list(FULL + "".join(NAMED_BLANKS).replace("\x00", ""))),
                                st.sampled_from(list("1234ABCab存续吊销")),
                                st.characters(exclude_categories=("Cs",), exclude_characters="\x00")),
                      max_size=6).map("".join)


@st.composite
def code_lists(draw) -> dict[str, str]:
    """code -> label, drawn to hold every case: labels equal to codes, padded or full-width ones, empty ones."""
    codes = draw(st.lists(code_texts, min_size=1, max_size=6, unique=True))
    return {code: draw(st.one_of(code_texts, st.sampled_from(codes))) for code in codes}


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), codes=code_lists(), fmt=st.sampled_from([None, "division"]))
def test_a_code_list_column_gives_what_every_rule_gives(reg, data, codes, fmt):
    """Oracle: the Python clean-up, then labels mapped to their codes (the first code of a shared label), then
    the format's upper case; values drawn from the list's own codes and labels, padded, widened or not."""
    import dataclasses

    from schemas.model import CodeList, Column

    known = list(codes) + list(codes.values())
    values = known + data.draw(st.lists(st.one_of(st.tuples(pads, st.sampled_from(known), pads).map("".join),
                                                   st.sampled_from(known).map(widen), texts), max_size=20))
    registry = dataclasses.replace(reg, code_lists=(CodeList(name="t", codes=codes), *reg.code_lists))
    col = Column(name="v", source="v", type="string", code_list="t", format=fmt)
    got = [r[0] for r in duckdb.execute(f"SELECT {text_sql('v', col, registry)} FROM unnest(?) WITH ORDINALITY t(v, i) "
                                        "ORDER BY i", [values]).fetchall()]
    to_code: dict[str, str] = {}
    for code, label in codes.items():
        if label != code:
            to_code.setdefault(label, code)

    def want(value: str) -> str | None:
        cleaned = oracle_clean(value)
        mapped = cleaned if cleaned is None else to_code.get(cleaned, cleaned)
        if fmt and mapped is not None:  # DuckDB's own upper case (utf8proc's: 'ß' -> 'ẞ', where Python gives 'SS')
            return duckdb.execute("SELECT upper(?)", [mapped]).fetchone()[0]
        return mapped

    assert got == [want(v) for v in values]
