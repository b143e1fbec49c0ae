"""Ingestion benchmark: a CSV extract through the full path against raw DuckDB on the same file.

Full path = land (sha256 + immutable copy), standardize (typed columns, full-width, dates, code
lists), validate (the GX suite), publish (one DuckLake commit). Baseline = DuckDB's own
``COPY (FROM read_csv(file)) TO 'out.parquet'``. Each run is a fresh process; imports are warmed up
before the clock starts, so the figure is the work, not Python start-up.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.common import PEAK_RSS, figure, run_child

HEADER = ["统一社会信用代码", "企业名称", "登记状态", "注册资本", "人数", "成立日期"]

MAKE_CSV = """
import duckdb, sys
from schemas.formats import ORG_WEIGHTS, USCC_ALPHABET, USCC_WEIGHTS

# Valid credit codes, computed in SQL: the quality suite checks their GB 32100 / GB 11714 check digits.
org8 = "'M' || lpad(i::VARCHAR, 7, '0')"
def b36(expr, pos):
    c = f"substr({expr}, {pos}, 1)"
    return f"(CASE WHEN {c} BETWEEN '0' AND '9' THEN ascii({c}) - 48 ELSE ascii({c}) - 55 END)"
org_sum = " + ".join(f"{b36(org8, k + 1)} * {w}" for k, w in enumerate(ORG_WEIGHTS))
org = (f"({org8} || CASE 11 - ({org_sum}) % 11 WHEN 10 THEN 'X' WHEN 11 THEN '0' "
       f"ELSE CAST(11 - ({org_sum}) % 11 AS VARCHAR) END)")
head = f"('91430102' || {org})"
uscc_sum = " + ".join(f"(instr('{USCC_ALPHABET}', substr({head}, {k + 1}, 1)) - 1) * {w}"
                      for k, w in enumerate(USCC_WEIGHTS))
uscc = f"({head} || substr('{USCC_ALPHABET}', ((31 - ({uscc_sum}) % 31) % 31) + 1, 1))"
duckdb.sql(f'''COPY (SELECT {uscc} AS "统一社会信用代码",
                      '长沙' || (i % 9973) || '号科技有限公司' AS "企业名称",
                      CASE WHEN i % 2 = 0 THEN '1' ELSE '存续' END AS "登记状态",
                      (i % 100000) / 7.0 AS "注册资本", i % 5000 AS "人数",
                      DATE '2000-01-01' + (i % 9000)::INTEGER AS "成立日期"
               FROM range({int(sys.argv[2])}) t(i)) TO '{sys.argv[1]}' (HEADER, DELIMITER ',')''')
"""

RAW = f"""
import json, sys, time
import duckdb
con = duckdb.connect()
t, cpu = time.perf_counter(), time.process_time()
con.execute(f"COPY (FROM read_csv('{{sys.argv[1]}}')) TO '{{sys.argv[2]}}' (FORMAT parquet)")
seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
{PEAK_RSS}
print("RESULT" + json.dumps({{"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak}}))
"""

FULL = f"""
import json, os, sys, time
from pathlib import Path
import great_expectations, pandas, pyarrow  # warm imports: the clock measures the load, not start-up
from onesource.config import Settings
from schemas import load_registry
from lakehouse import run_dataset
from quality.validate import warm_up
warm_up()
settings = Settings(home=Path(sys.argv[1]))
registry = load_registry(settings.registry_dir)
t, cpu = time.perf_counter(), time.process_time()
[result] = run_dataset(settings, registry, "firms", os.environ)
seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
assert result.status == "published", result.message
{PEAK_RSS}
print("RESULT" + json.dumps({{"seconds": seconds, "cpu_seconds": cpu, "stages": result.seconds, "rows": result.rows,
                             "peak_rss_mb": peak}}))
"""


def _home(root: Path, csv: Path) -> Path:
    from tests.helpers import firms_dataset, write_registry

    home = Path(tempfile.mkdtemp(dir=root, prefix="home-"))
    ds = firms_dataset(connector={"kind": "file", "path": str(csv), "format": "csv"})
    write_registry(home / "registry", [ds])
    return home


def run(rows: int, runs: int, workdir: Path, log=print) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    csv = workdir / f"firms_{rows}.csv"
    if not csv.exists():
        log(f"  writing a {rows:,}-row CSV extract ...")
        run_child(MAKE_CSV + "\nprint('RESULT{}')", str(csv), str(rows))
    size_mb = csv.stat().st_size / 2**20
    raw, full, stages, raw_rss, full_rss = [], [], [], 0.0, 0.0
    raw_cpu, full_cpu = [], []
    for i in range(runs):
        out = workdir / "raw.parquet"
        r = run_child(RAW, str(csv), str(out))
        out.unlink(missing_ok=True)
        home = _home(workdir, csv)
        f = run_child(FULL, str(home))
        shutil.rmtree(home, ignore_errors=True)
        raw.append(r["seconds"])
        full.append(f["seconds"])
        raw_cpu.append(r["cpu_seconds"])
        full_cpu.append(f["cpu_seconds"])
        stages.append(f["stages"])
        raw_rss, full_rss = max(raw_rss, r["peak_rss_mb"]), max(full_rss, f["peak_rss_mb"])
        log(f"  run {i + 1}/{runs}: raw DuckDB {r['seconds']:.2f} s ({r['cpu_seconds']:.2f} CPU s), OneSource "
            f"{f['seconds']:.2f} s ({f['cpu_seconds']:.2f} CPU s) "
            f"({', '.join(f'{k} {v:.2f}' for k, v in f['stages'].items())})")
    ratios = [f / r for f, r in zip(full, raw, strict=True)]
    # CPU seconds (all threads): the work done, steadier than wall time on a shared host. Raw COPY keeps
    # both cores busy, so the wall ratio cannot go much below this one.
    cpu_ratios = [f / r for f, r in zip(full_cpu, raw_cpu, strict=True)]
    stage_names = stages[0].keys()
    import statistics

    per_stage = {k: round(statistics.median(s[k] for s in stages), 3) for k in stage_names}
    log(f"  {rows:,} rows, {size_mb:.0f} MiB: raw median {statistics.median(raw):.2f} s, OneSource median "
        f"{statistics.median(full):.2f} s -> ratio {statistics.median(ratios):.2f}x  (per stage: {per_stage}); "
        f"CPU seconds {statistics.median(full_cpu):.2f} vs {statistics.median(raw_cpu):.2f} -> "
        f"{statistics.median(cpu_ratios):.2f}x")
    return {
        "ingest_ratio": figure(ratios, "x raw DuckDB COPY", full_rss),
        "ingest_cpu_ratio": figure(cpu_ratios, "x raw DuckDB COPY's CPU seconds", full_rss),
        "ingest_seconds": {**figure(full, "s", full_rss), "rows": rows, "stages_median": per_stage},
        "ingest_raw_duckdb_seconds": figure(raw, "s", raw_rss),
    }
