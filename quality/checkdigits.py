"""The national check digits' machine forms: over a whole column at once (numpy), and in DuckDB SQL.

The check digits are defined once, in :mod:`schemas.formats` (alphabets, weights, check characters, and
the Python checks that generate and verify codes); both forms here are built from those constants and
tested against those checks (tests/test_formats.py, tests/test_codes.py: hypothesis over any text). The
SQL is what GX evaluates when no fast path runs (the reference) and the fast path's fallback.

In SQL the arithmetic needs one ``substr`` per character, and DuckDB spends ~12 ns on each: 2.2 s
for the USCC check on 5M codes, more than raw DuckDB takes to convert the whole CSV. Here the
column's bytes are viewed as an (n, width) matrix and every character is weighed in one vectorised
step: ~0.5 s. The answers are those of :mod:`schemas.formats` (the tests hold them to it).

Each family takes a pyarrow string array and returns, per check it answers, a numpy bool array: True
where the value passes or is NULL (another check owns missing values).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from schemas.formats import ID_CHECK, ID_WEIGHTS, ORG_WEIGHTS, USCC_ALPHABET, USCC_WEIGHTS

_BAD = 10_000  # in a lookup table: not a character of this alphabet. Any weighted sum that includes
# one reaches _BAD (every weight is >= 1), while valid sums stay below it (at most 30 x 279 for the
# USCC), so one comparison of the total replaces a validity test per character.

Bools = npt.NDArray[np.bool_]
Verdicts = dict[str, Bools]
"""A family's answers: check name -> per value, whether it passes (or is NULL)."""
Family = Callable[..., Verdicts]
"""A vectorised family of checks: a pyarrow text array (and the family's options) -> its verdicts."""


def _table(alphabet: str) -> npt.NDArray[np.uint32]:
    lut = np.full(256, _BAD, dtype=np.uint32)
    for i, ch in enumerate(alphabet):
        lut[ord(ch)] = i
    return lut


_USCC = _table(USCC_ALPHABET)
_DIGIT = _table("0123456789")
_B36 = _table("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LUTS = {"uscc": _USCC, "digit": _DIGIT, "b36": _B36}
_ORG_CHECK: npt.NDArray[np.uint8] = np.frombuffer(b"_123456789X0", dtype=np.uint8)  # 11 - sum % 11 -> character (1..11)


def _columns(arr: pa.Array, width: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]:
    """The values of exactly ``width`` bytes as a (width, k) uint8 matrix, one contiguous row per
    character position (so each position is weighed in one pass over memory), and their indexes."""
    arr = arr.cast(pa.large_string()) if pa.types.is_large_string(arr.type) else arr.cast(pa.string())
    fits = pc.fill_null(pc.equal(pc.binary_length(arr), width), False).to_numpy(zero_copy_only=False)
    index = np.flatnonzero(fits)
    if len(index) == 0:
        return np.empty((width, 0), dtype=np.uint8), index
    picked = arr.take(pa.array(index)) if len(index) < len(arr) else arr
    offsets_type = np.int64 if pa.types.is_large_string(picked.type) else np.int32
    offsets = np.frombuffer(picked.buffers()[1], dtype=offsets_type)[picked.offset:picked.offset + len(picked) + 1]
    data = np.frombuffer(picked.buffers()[2], dtype=np.uint8)
    # every picked value is exactly `width` bytes, so the values sit back to back
    rows = data[offsets[0]:offsets[0] + width * len(picked)].reshape(-1, width)
    return np.ascontiguousarray(rows.T), index


def _result(arr: pa.Array, index: npt.NDArray[np.intp], good: Bools) -> Bools:
    out = np.zeros(len(arr), dtype=bool)
    out[index] = good
    out |= pc.is_null(arr).to_numpy(zero_copy_only=False)
    return out


@functools.cache
def _weighted(lut_id: str, weight: int) -> npt.NDArray[np.uint32]:
    """``weight x`` a lookup table: one gather and one add per position instead of three passes.
    Characters outside the alphabet still sum to at least _BAD (weights are >= 1)."""
    return _LUTS[lut_id] * np.uint32(weight)


def _weigh(chars: npt.NDArray[np.uint8], luts: list[str], weights: tuple[int, ...]) -> tuple[npt.NDArray[np.int64], Bools]:
    """(sum of weight x value over the first positions, whether every character was in its table).
    One gather and one add per position over contiguous memory, the weight folded into the table (a
    BLAS product of the block, tried, is 3x slower: converting 85M values to float costs more than
    the arithmetic)."""
    total = _weighted(luts[0], weights[0])[chars[0]]
    for k in range(1, len(weights)):
        total += _weighted(luts[k], weights[k])[chars[k]]
    return total.astype(np.int64), total < _BAD


def _org_ok(chars: npt.NDArray[np.uint8]) -> Bools:
    """GB 11714 on 9 positions: 8 body characters (0-9, A-Z) and the check character."""
    total, ok = _weigh(chars, ["b36"] * 8, ORG_WEIGHTS)
    valid: Bools = ok & (_ORG_CHECK[11 - np.where(ok, total, 0) % 11] == chars[8])  # numpy types == as Any
    return valid


CHUNK = 1 << 18
"""Values per step. On the whole column at once every temporary array is fresh memory: 5M codes took
1.5 s in a new process; in steps of 256K, whose buffers the allocator reuses, 0.6 s."""


def _in_chunks(family: Family) -> Family:
    @functools.wraps(family)
    def run(arr: pa.Array, *args: object) -> Verdicts:
        if len(arr) <= CHUNK:
            return family(arr, *args)
        parts = [family(arr.slice(i, CHUNK), *args) for i in range(0, len(arr), CHUNK)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    return run


# Families: one pass over a column answers several checks ("format": the format rule's regular
# expression; "check_digit": the whole national standard), so a column with both is read once.

@_in_chunks
def uscc(arr: pa.Array) -> Verdicts:
    """GB 32100-2015: the USCC alphabet, digits in positions 3-8 (the format rule), and both check
    characters."""
    chars, index = _columns(arr, 18)
    total, ok = _weigh(chars, ["uscc"] * 2 + ["digit"] * 6 + ["uscc"] * 9, USCC_WEIGHTS)
    last = _USCC[chars[17]]
    valid = ok & (last == (31 - total % 31) % 31) & _org_ok(chars[8:17])
    return {"format": _result(arr, index, ok & (last < _BAD)), "check_digit": _result(arr, index, valid)}


@_in_chunks
def org_code(arr: pa.Array) -> Verdicts:
    """GB 11714, with or without the hyphen before the check character."""
    chars, index = _columns(pc.replace_substring(arr, "-", ""), 9)
    return {"check_digit": _result(arr, index, _org_ok(chars))}


@_in_chunks
def resident_id(arr: pa.Array, today: dt.date | None = None) -> Verdicts:
    """GB 11643-1999: 17 digits and a digit or X (the format rule); the MOD 11-2 check character and
    a real birth date (positions 7-14) from 1900 up to today."""
    chars, index = _columns(arr, 18)
    total, ok = _weigh(chars, ["digit"] * 17, ID_WEIGHTS)
    formatted = ok & ((_DIGIT[chars[17]] < _BAD) | (chars[17] == ord("X")))
    ok &= np.frombuffer(ID_CHECK.encode(), dtype=np.uint8)[np.where(ok, total, 0) % 11] == chars[17]
    d = [np.where(ok, chars[k].astype(np.int32) - 48, 0) for k in range(6, 14)]
    year = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3]
    month, day = d[4] * 10 + d[5], d[6] * 10 + d[7]
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 0, 12)]
    month_days = month_days + ((month == 2) & leap)
    limit = today or dt.date.today()
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    ok &= (year >= 1900) & (year * 10000 + month * 100 + day <= limit.year * 10000 + limit.month * 100 + limit.day)
    return {"format": _result(arr, index, formatted), "check_digit": _result(arr, index, ok)}



# -- the check digits in DuckDB SQL (GX's reference, the fast path's fallback) ---------------------------------------------------------------

def _char(col: str, pos: int) -> str:
    return f"substr({col}, {pos}, 1)"


def _b36(col: str, pos: int) -> str:
    """Value of a digit or capital letter (0-9, A=10 .. Z=35), as GB 11714 counts it."""
    c = _char(col, pos)
    return f"(CASE WHEN {c} BETWEEN '0' AND '9' THEN ascii({c}) - 48 ELSE ascii({c}) - 55 END)"


def org_code_sql(col: str, start: int = 1) -> str:
    """SQL true when the 9 characters from ``start`` are an organisation code with a valid check character."""
    total = " + ".join(f"{_b36(col, start + i)} * {w}" for i, w in enumerate(ORG_WEIGHTS))
    check = f"(11 - ({total}) % 11)"
    expected = f"(CASE {check} WHEN 10 THEN 'X' WHEN 11 THEN '0' ELSE CAST({check} AS VARCHAR) END)"
    return f"({_char(col, start + 8)} = {expected})"


def _all(*conditions: str) -> str:
    """Every condition true. Written as a sum, not an AND chain: DuckDB then evaluates each part as
    one vectorised pass (measured 2.7x faster than `regex AND digits AND org` on 2M codes); the parts
    must therefore be safe on any input (TRY_CAST, no errors)."""
    return "(" + " + ".join(f"coalesce(({c})::INTEGER, 0)" for c in conditions) + f" = {len(conditions)})"


def uscc_sql(col: str) -> str:
    total = " + ".join(f"(instr('{USCC_ALPHABET}', {_char(col, i + 1)}) - 1) * {w}" for i, w in enumerate(USCC_WEIGHTS))
    return _all(f"regexp_full_match({col}, '[0-9A-HJ-NPQRTUWXY]{{2}}[0-9]{{6}}[0-9A-HJ-NPQRTUWXY]{{10}}')",
                f"{_char(col, 18)} = substr('{USCC_ALPHABET}', ((31 - ({total}) % 31) % 31) + 1, 1)",
                org_code_sql(col, 9))


def resident_id_sql(col: str, today: dt.date | None = None) -> str:
    total = " + ".join(f"TRY_CAST({_char(col, i + 1)} AS INTEGER) * {w}" for i, w in enumerate(ID_WEIGHTS))
    born = f"try_strptime(substr({col}, 7, 8), '%Y%m%d')"
    limit = (today or dt.date.today()).isoformat()
    return _all(f"regexp_full_match({col}, '[0-9]{{17}}[0-9X]')",
                f"{_char(col, 18)} = substr('{ID_CHECK}', (({total}) % 11) + 1, 1)",
                f"{born} BETWEEN TIMESTAMP '1900-01-01' AND TIMESTAMP '{limit} 23:59:59'")


def org_code_full_sql(col: str) -> str:
    """An organisation code, with or without the hyphen before its check character."""
    bare = f"replace({col}, '-', '')"
    return _all(f"regexp_full_match({bare}, '[0-9A-Z]{{8}}[0-9X]')", org_code_sql(bare))
