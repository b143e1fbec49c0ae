"""Quality benchmark: the full GX suite on a staged batch against the same checks as DuckDB SQL.

Both read the same staged Parquet batch (the firms dataset of the tests: key uniqueness, required
values, six type checks, a code list, the USCC format and its GB 32100 / GB 11714 check digits).
The SQL side is written by hand, check digits included, as a reviewer would to validate GX's figures.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.common import PEAK_RSS, figure, run_child

MAKE_BATCH = """
import sys, random
import duckdb, pyarrow as pa
from schemas.formats import USCC_ALPHABET, org_code_check_char, uscc_check_char
n, out = int(sys.argv[2]), sys.argv[1]
rng = random.Random(7)
alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
codes, seen = [], set()
while len(codes) < n:
    org8 = "MA" + "".join(rng.choice(alphabet) for _ in range(6))
    head = "91430102" + org8 + org_code_check_char(org8)
    code = head + uscc_check_char(head)
    if code not in seen:
        seen.add(code)
        codes.append(code)
con = duckdb.connect()
con.register("codes", pa.table({"uscc": codes}))
con.execute(f'''COPY (SELECT uscc, '长沙' || (row_number() OVER () % 9973) || '号科技有限公司' AS enterprise_name,
                      CASE WHEN random() < 0.5 THEN '1' ELSE '2' END AS enterprise_status,
                      (random() * 10000)::DECIMAL(18,2) AS capital, (random() * 5000)::BIGINT AS staff,
                      DATE '2000-01-01' + (random() * 9000)::INTEGER AS founded FROM codes) TO '{out}' (FORMAT parquet)''')
print("RESULT{}")
"""

GX = f"""
import json, sys, time
from pathlib import Path
from schemas import load_registry
from quality.validate import validate_batch, warm_up
warm_up()  # warm: GX import and context set-up are not the work being measured
registry = load_registry(Path(sys.argv[2]))
ds = registry.dataset("firms")
t = time.perf_counter()
report = validate_batch(ds, registry, Path(sys.argv[1]))
seconds = time.perf_counter() - t
assert report.passed, report.summary()
{PEAK_RSS}
print("RESULT" + json.dumps({{"seconds": seconds, "checks": len(report.results), "peak_rss_mb": peak}}))
"""

SQL = f"""
import json, sys, time
import duckdb
from schemas.formats import FORMAT_RULES
con = duckdb.connect()
alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
w_uscc = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
w_org = (3, 7, 9, 10, 5, 8, 4, 2)
uscc_sum = " + ".join(f"(instr('{{alphabet}}', substr(uscc, {{i + 1}}, 1)) - 1) * {{w}}" for i, w in enumerate(w_uscc))
org_val = lambda i: f"(CASE WHEN substr(uscc, {{9 + i}}, 1) BETWEEN '0' AND '9' THEN ascii(substr(uscc, {{9 + i}}, 1)) - 48 ELSE ascii(substr(uscc, {{9 + i}}, 1)) - 55 END)"
org_sum = " + ".join(f"{{org_val(i)}} * {{w}}" for i, w in enumerate(w_org))
org_check = f"CASE 11 - ({{org_sum}}) % 11 WHEN 10 THEN 'X' WHEN 11 THEN '0' ELSE CAST(11 - ({{org_sum}}) % 11 AS VARCHAR) END"
uscc_ok = (f"substr(uscc, 18, 1) = substr('{{alphabet}}', ((31 - ({{uscc_sum}}) % 31) % 31) + 1, 1) "
           f"AND substr(uscc, 17, 1) = {{org_check}}")
pattern = FORMAT_RULES["uscc"].pattern
query = f'''SELECT count(*) - count(DISTINCT uscc) AS dup_keys,
    count_if(uscc IS NULL) AS null_uscc, count_if(enterprise_name IS NULL) AS null_name,
    count_if(typeof(uscc) <> 'VARCHAR') + count_if(typeof(enterprise_name) <> 'VARCHAR')
      + count_if(typeof(enterprise_status) <> 'VARCHAR') + count_if(typeof(capital) <> 'DECIMAL(18,2)')
      + count_if(typeof(staff) <> 'BIGINT') + count_if(typeof(founded) <> 'DATE') AS bad_types,
    count_if(enterprise_status NOT IN ('1', '2')) AS bad_codes,
    count_if(NOT regexp_full_match(uscc, '{{pattern.strip("^$")}}')) AS bad_format,
    count_if(NOT ({{uscc_ok}})) AS bad_check_digits
  FROM read_parquet('{{sys.argv[1]}}')'''
t = time.perf_counter()
row = con.execute(query).fetchone()
seconds = time.perf_counter() - t
assert row == (0, 0, 0, 0, 0, 0, 0), row
{PEAK_RSS}
print("RESULT" + json.dumps({{"seconds": seconds, "peak_rss_mb": peak}}))
"""


def run(rows: int, runs: int, workdir: Path, log=print) -> dict:
    from tests.helpers import write_registry

    workdir.mkdir(parents=True, exist_ok=True)
    batch = workdir / f"staged_{rows}.parquet"
    if not batch.exists():
        log(f"  writing a {rows:,}-row staged batch with valid credit codes ...")
        run_child(MAKE_BATCH, str(batch), str(rows))
    registry = write_registry(workdir / "quality-registry")
    gx_s, sql_s, gx_rss, sql_rss = [], [], 0.0, 0.0
    for i in range(runs):
        g = run_child(GX, str(batch), str(registry))
        q = run_child(SQL, str(batch))
        gx_s.append(g["seconds"])
        sql_s.append(q["seconds"])
        gx_rss, sql_rss = max(gx_rss, g["peak_rss_mb"]), max(sql_rss, q["peak_rss_mb"])
        log(f"  run {i + 1}/{runs}: GX suite ({g['checks']} checks) {g['seconds']:.2f} s, DuckDB SQL {q['seconds']:.3f} s")
    ratios = [g / q for g, q in zip(gx_s, sql_s, strict=True)]
    log(f"  {rows:,} rows: GX median {statistics.median(gx_s):.2f} s (peak {gx_rss:.0f} MiB), SQL median "
        f"{statistics.median(sql_s):.3f} s (peak {sql_rss:.0f} MiB) -> ratio {statistics.median(ratios):.1f}x")
    return {
        "quality_ratio": figure(ratios, "x hand-written DuckDB SQL", gx_rss),
        "quality_seconds": {**figure(gx_s, "s", gx_rss), "rows": rows},
        "quality_sql_seconds": figure(sql_s, "s", sql_rss),
    }
