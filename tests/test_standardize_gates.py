"""The clean-up's cheaper gates give the clean-up's answers: the end characters' code points instead of a regex
(when an extract holds no full-width character), and the byte look that says it holds none."""

from __future__ import annotations

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.landing import WIDE_BYTES, holds_wide_forms
from lakehouse.standardize import BLANK, FULL, WIDE_ASCII, TextHints, clean_text, may_be_blank, with_ends
from tests.helpers import NAMED_BLANKS, oracle_clean

# Characters near every edge the gates draw: blanks of every kind, ASCII, Latin-1, combining marks, Arabic
# and Indic format characters, CJK punctuation (U+3001, U+3002), kana, ideographs, Hangul, presentation and
# half-width forms, tags, emoji and other planes.
SPECIAL = NAMED_BLANKS + ["\u0600", "\u061c", "\u06dd", "\u070f", "\u08e2", "\u1680", "\u2000", "\u200e", "\u202f",
                          "\u205f", "\u2066", "\ufff9", "\U000110bd", "\U00013430", "\U0001bca0", "\U0001d173",
                          "\U000e0001", "\U000e007f", "\u0301", "\u3001", "\u3002", "\u30a2", "\ud7a3", "\uf900",
                          "\ufe0f", "\ufeff", "\uff61", "\uffef", "\U0001f600", "\U00020000", "é", "ß", "长", "沙", "a", "7"]
chars = st.one_of(st.sampled_from(SPECIAL), st.characters(exclude_categories=("Cs",)))


def cleaned(values: list[str], hints: bool, wide: bool) -> list[str | None]:
    """clean_text over ``values`` in DuckDB: with the code points from an inner projection, or as written alone."""
    if not hints:
        sql = f"SELECT {clean_text('v', None, None)} FROM unnest(?) WITH ORDINALITY t(v, i) ORDER BY i"
    else:
        source, ends = with_ends("(SELECT * FROM unnest(?) WITH ORDINALITY t(v, i))", ["v"])
        sql = f"SELECT {clean_text('v', None, None, TextHints(ends['v'], wide))} FROM {source} ORDER BY i"
    return [r[0] for r in duckdb.execute(sql, [values]).fetchall()]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.text(chars, max_size=8), min_size=1, max_size=40))
def test_the_end_points_gate_cleans_as_the_regex_does(values):
    """Any text, blanks anywhere: with the end characters' code points and no full-width character in the
    extract, every value is what the oracle and the regex-gated clean-up make of it."""
    values = [v for v in values if not set(v) & set(FULL)] or [""]
    want = [oracle_clean(v) for v in values]
    assert cleaned(values, hints=False, wide=True) == want
    assert cleaned(values, hints=True, wide=False) == want


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.text(st.one_of(chars, st.sampled_from(FULL)), max_size=8), min_size=1, max_size=40))
def test_with_the_end_points_and_full_width_characters_the_clean_up_is_unchanged(values):
    assert cleaned(values, hints=True, wide=True) == [oracle_clean(v) for v in values]


def test_every_blank_of_duckdbs_regex_passes_the_end_points_gate():
    """Over every code point: each one the clean-up's regex calls blank is one may_be_blank lets through (the
    gate may let more through; never fewer, or a blank would stay on a value)."""
    in_regex = f"regexp_full_match(chr(i::INTEGER), '{BLANK}')"
    code_points = "range(0, 1114112) t(i) WHERE i NOT BETWEEN 55296 AND 57343"  # no surrogates
    blanks, missed = duckdb.execute(
        f"SELECT count(*) FILTER (WHERE {in_regex}), count(*) FILTER (WHERE {in_regex} AND NOT {may_be_blank('i')}) "
        f"FROM {code_points}").fetchone()
    assert blanks > 200 and missed == 0


def test_every_character_the_clean_up_translates_starts_with_a_wide_byte_sequence():
    for ch in FULL + WIDE_ASCII:
        assert any(ch.encode().startswith(seq) for seq in WIDE_BYTES), ch


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.one_of(chars, st.sampled_from(FULL + WIDE_ASCII)), max_size=40),
       chunk=st.integers(1, 16))
def test_the_byte_look_finds_every_wide_sequence_across_chunks(tmp_path_factory, text, chunk):
    """Found wherever it lies, chunk boundaries included, and only there; a text with a character the
    clean-up translates is always found."""
    path = tmp_path_factory.mktemp("wide") / "extract.csv"
    data = text.encode()
    path.write_bytes(data)
    found = holds_wide_forms(path, chunk=chunk)
    assert found == any(seq in data for seq in WIDE_BYTES)
    if set(text) & set(FULL + WIDE_ASCII):
        assert found


def test_a_file_the_look_cannot_read_may_hold_anything(tmp_path):
    """No verdict from a file it cannot map (missing, a folder): the clean-up then keeps its regex."""
    assert holds_wide_forms(tmp_path / "gone.csv") and holds_wide_forms(tmp_path)
    (tmp_path / "empty.csv").write_bytes(b"")
    assert not holds_wide_forms(tmp_path / "empty.csv")
