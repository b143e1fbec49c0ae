"""Every failing row is marked with every check it failed, in quarantine.<dataset>, ops.quality_rows and
`onesource quality report --all`, however many rows fail (GX itself names only the first few).

The oracle is a plain Python recomputation of each check on the cells the department delivered."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from onesource.cli import main
from schemas.formats import FORMAT_RULES, USCC_ALPHABET, is_valid_uscc, org_code_check_char, uscc_check_char
from tests.helpers import HEADER, drop, firms_dataset, load, rows, write_registry

STATUS = {"1": "存续", "2": "注销"}
USCC_FORMAT = re.compile(FORMAT_RULES["uscc"].pattern)


def valid_codes(rng: random.Random, n: int) -> list[str]:
    codes: set[str] = set()
    while len(codes) < n:
        org8 = "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
        head = "91430100" + org8 + org_code_check_char(org8)
        codes.add(head + uscc_check_char(head))
    return sorted(codes)


def mistyped(code: str, rng: random.Random) -> str:
    """The code with its last character changed to another of the alphabet (a wrong check character)."""
    return code[:-1] + rng.choice(USCC_ALPHABET.replace(code[-1], ""))


def batch(n: int, seed: int, p: dict[str, float]) -> list[tuple[str, str, str]]:
    """(uscc, name, status) cells with defects at the given rates, chosen independently per row."""
    rng = random.Random(seed)
    codes = valid_codes(rng, n)
    cells = []
    for i, code in enumerate(codes):
        if i and rng.random() < p["duplicate"]:
            code = cells[rng.randrange(i)][0]  # a key delivered twice (possibly itself mistyped)
        elif rng.random() < p["check_digit"]:
            code = mistyped(code, rng)
        name = "" if rng.random() < p["missing_name"] else f"长沙{i}号商贸有限公司"
        status = rng.choice(["9", "X"]) if rng.random() < p["bad_status"] else rng.choice(["1", "2", "存续", "注销"])
        cells.append((code, name, status))
    return cells


def oracle(cells: list[tuple[str, str, str]]) -> set[tuple[int, str]]:
    """(1-based row, reason) for every failing row of the firms suite, computed on the delivered cells."""
    counts = Counter(code for code, _, _ in cells if code)
    pairs = set()
    for row, (code, name, status) in enumerate(cells, start=1):
        if code and counts[code] > 1:
            pairs.add((row, "key_unique:uscc"))
        if not code:
            pairs.add((row, "required:uscc"))
        if not name:
            pairs.add((row, "required:enterprise_name"))
        if status and status not in STATUS and status not in STATUS.values():
            pairs.add((row, "code_list:enterprise_status"))
        if code and not USCC_FORMAT.match(code):
            pairs.add((row, "format:uscc"))
        if code and not is_valid_uscc(code):
            pairs.add((row, "check_digit:uscc"))
    return pairs


def extract(cells: list[tuple[str, str, str]]) -> str:
    out = io.StringIO()
    out.write(HEADER)
    writer = csv.writer(out, lineterminator="\n")
    for code, name, status in cells:
        writer.writerow([code, name, status, "", "", ""])
    return out.getvalue()


def pairs_of(found: list[tuple[int, list[str]]]) -> set[tuple[int, str]]:
    out = set()
    for row, reasons in found:
        assert len(reasons) == len(set(reasons)), (row, reasons)  # a row is marked once per check
        out |= {(row, r) for r in reasons}
    return out


def by_check(pairs: set[tuple[int, str]]) -> Counter:
    return Counter(reason for _, reason in pairs)


@pytest.fixture
def home(tiny, monkeypatch):
    """The tiny home, which the CLI finds through ONESOURCE_HOME."""
    monkeypatch.setenv("ONESOURCE_HOME", str(tiny.home))
    return tiny


@pytest.mark.slow  # ~25 s of CPU: 130,000 rows generated, loaded, validated and read back three ways
def test_100000_failing_rows_are_all_marked_with_all_their_reasons(home, capsys):
    """A quarantined batch of 130,000 rows, more than 100,000 of them failing one to four checks
    (blocking and warning): every (row, reason) pair is in quarantine.firms, in ops.quality_rows and in
    `quality report --all`, and each check's count is the oracle's."""
    cells = batch(130_000, seed=19, p={"duplicate": 0.2, "check_digit": 0.5, "missing_name": 0.3, "bad_status": 0.3})
    expected = oracle(cells)
    assert len({row for row, _ in expected}) >= 100_000
    write_registry(home.registry_dir, [firms_dataset(quality={"severity": {"check_digit": "warning"}})])
    drop(home, "amr/firms/firms_1.csv", extract(cells))
    [result] = load(home)
    assert result.status == "quarantined"

    marked = rows(home, "SELECT _row, _reasons FROM quarantine.firms WHERE _reasons IS NOT NULL")
    assert pairs_of(marked) == expected
    assert rows(home, "SELECT count(*) FROM quarantine.firms") == [(len(cells),)]
    recorded = rows(home, "SELECT _row, _reasons FROM ops.quality_rows WHERE dataset = 'firms'")
    assert pairs_of(recorded) == expected
    counts = dict(rows(home, "SELECT check_name || ':' || column_name, unexpected_count FROM ops.quality_results "
                             "WHERE NOT success"))
    assert counts == dict(by_check(expected))

    assert main(["quality", "report", "firms", "--all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failing_total"] == len(report["failing_rows"]) == len({row for row, _ in expected})
    assert pairs_of([(r["_row"], r["_reasons"]) for r in report["failing_rows"]]) == expected
    # the checks' samples are the first failing rows, in order
    first = {f"{c['check_name']}:{c['column_name']}": c["sample_rows"] for c in report["checks"] if not c["success"]}
    assert first == {check: sorted(r for r, c in expected if c == check)[:5] for check in by_check(expected)}


def test_report_without_all_says_how_many_and_how_to_see_them(home, capsys):
    cells = batch(300, seed=3, p={"duplicate": 0.0, "check_digit": 0.0, "missing_name": 0.5, "bad_status": 0.0})
    drop(home, "amr/firms/firms_1.csv", extract(cells))
    [result] = load(home)
    assert result.status == "quarantined"
    missing = sum(1 for _, name, _ in cells if not name)
    assert main(["quality", "report", "firms"]) == 0
    out = capsys.readouterr().out
    assert f"{missing:,} failing row(s), the first 10; --all prints every one" in out
    assert main(["quality", "report", "firms", "--all"]) == 0
    printed = capsys.readouterr().out
    assert f"{missing:,} failing row(s) (SELECT" in printed and printed.count("required:enterprise_name") == missing


def test_a_published_batch_records_every_row_its_warnings_flag(home, capsys):
    """Warnings publish, so their rows are not in quarantine: ops.quality_rows names each with its key."""
    cells = batch(2_000, seed=5, p={"duplicate": 0.0, "check_digit": 0.4, "missing_name": 0.0, "bad_status": 0.0})
    write_registry(home.registry_dir, [firms_dataset(quality={"severity": {"check_digit": "warning"}})])
    drop(home, "amr/firms/firms_1.csv", extract(cells))
    [result] = load(home)
    assert result.status == "published"
    expected = oracle(cells)
    assert expected and {c for _, c in expected} == {"check_digit:uscc"}
    found = rows(home, "SELECT _row, _reasons, key_value FROM ops.quality_rows")
    assert pairs_of([(r, reasons) for r, reasons, _ in found]) == expected
    assert all(key == cells[r - 1][0] for r, _, key in found)
    assert main(["quality", "report", "firms", "--all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {(r["_row"], r["key_value"]) for r in report["failing_rows"]} == {(r, k) for r, _, k in found}


@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60),
       p=st.fixed_dictionaries({k: st.sampled_from([0.0, 0.1, 0.5, 1.0])
                                for k in ("duplicate", "check_digit", "missing_name", "bad_status")}))
def test_marks_equal_the_oracle_on_generated_batches(tmp_path_factory, seed, n, p):
    """validate_batch alone, on small generated batches: the marks are exactly the oracle's pairs."""
    import duckdb

    from quality import validate_batch
    from schemas import load_registry

    folder = tmp_path_factory.mktemp("marks")
    reg = load_registry(write_registry(folder / "registry"))
    cells = batch(n, seed, p)
    path = folder / "batch.parquet"
    con = duckdb.connect()
    con.execute("CREATE TABLE t (uscc VARCHAR, enterprise_name VARCHAR, enterprise_status VARCHAR)")
    code_of = {label: code for code, label in STATUS.items()}  # what standardize does to a label
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(c or None, nm or None, code_of.get(s, s)) for c, nm, s in cells])
    con.execute(f"""COPY (SELECT uscc, enterprise_name, enterprise_status, NULL::DECIMAL(18,2) AS capital,
                         NULL::BIGINT AS staff, NULL::DATE AS founded FROM t) TO '{path}' (FORMAT parquet)""")
    report = validate_batch(reg.dataset("firms"), reg, path)
    found = {(row + 1, reason) for row, reasons in report.row_reasons.items() for reason in reasons}
    assert found == oracle(cells)
    assert {f"{r.check}:{r.column}": r.unexpected_count for r in report.results if not r.success} == dict(by_check(found))
