"""Ingestion benchmark: a CSV extract through the full path against raw DuckDB on the same file.

Full path = land (sha256 + immutable copy), standardize (typed columns, full-width, dates, code
lists), validate (the GX suite), publish (one DuckLake commit). Baseline = DuckDB's own
``COPY (FROM read_csv(file)) TO 'out.parquet'``. With ``peer``, also the way a team without OneSource
would do the same load (``PEER``: pandas, GX's pandas engine with the registry's suite, pyarrow), for
``ingest_peer_ratio``. Each run is a fresh process; imports are warmed up before the clock starts, so the
figure is the work, not Python start-up. The load timed is a day's delivery into a lake that exists: a
1,000-row delivery the day before (untimed) created the lake and its catalog, registered the registry and
published firms' first snapshot, one-time costs no later load of a city pays (0.25 s of a first load here).
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
from core.config import Settings
from schemas import load_registry
from ingest import run_dataset
from quality.validate import warm_up
warm_up()
settings = Settings(home=Path(sys.argv[1]))
registry = load_registry(settings.registry_dir)
# The day before: the lake exists, the registry is registered and firms has a snapshot, as for every load of a
# city after its first. A small earlier delivery makes them (one-time costs, untimed, as imports are).
drop, extract = Path(sys.argv[2]), Path(sys.argv[3])
with open(extract, encoding="utf-8") as src, open(drop / "day-0.csv", "w", encoding="utf-8") as out:
    out.writelines(line for _, line in zip(range(1001), src))
[earlier] = run_dataset(settings, registry, "firms", os.environ)
assert earlier.status == "published", earlier.message
os.link(extract, drop / "day-1.csv")  # today's delivery: the 5M-row extract, the only new file
t, cpu = time.perf_counter(), time.process_time()
[result] = run_dataset(settings, registry, "firms", os.environ)
seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
assert result.status == "published", result.message
{PEAK_RSS}
print("RESULT" + json.dumps({{"seconds": seconds, "cpu_seconds": cpu, "stages": result.seconds, "rows": result.rows,
                             "peak_rss_mb": peak}}))
"""

# The peer: the same extract and checks the way a team without OneSource would run them. pandas reads the
# CSV (text columns as strings, stripped; code-list labels mapped to their codes; dates parsed), GX 1.x's
# pandas engine validates it with the suite the registry generates for the dataset (quality.suite, the
# custom national-code expectations in their pandas form; the DuckDB storage-type check becomes GX's
# ExpectColumnValuesToBeOfType with the pandas dtype) through a real ValidationDefinition, and pyarrow
# writes the Parquet file. GX's context is made before the clock, as OneSource's warm_up does.
PEER = f"""
import dataclasses, json, logging, sys, time
from pathlib import Path
import great_expectations as gx, pandas as pd, pyarrow
from great_expectations.data_context.types.base import ProgressBarsConfig
import quality.expectations  # registers the custom expectations (their pandas forms run here)
from core.config import Settings
from quality.suite import build_suite, suite_specs
from schemas import load_registry
logging.getLogger("great_expectations").setLevel(logging.ERROR)
context = gx.get_context(mode="ephemeral")
context.variables.progress_bars = ProgressBarsConfig(globally=False)
home, out = Path(sys.argv[1]), sys.argv[2]
PANDAS_TYPES = {{"VARCHAR": "str", "BIGINT": "int64", "DECIMAL(18,2)": "float64", "DATE": "datetime64[ns]"}}
t, cpu = time.perf_counter(), time.process_time()
registry = load_registry(Settings(home=home).registry_dir)
ds = registry.dataset("firms")
specs = [dataclasses.replace(s, expectation="ExpectColumnValuesToBeOfType",
                             kwargs={{"column": s.kwargs["column"], "type_": PANDAS_TYPES[s.kwargs["type_"]]}})
         if s.expectation == "ExpectColumnValuesToHaveStorageType" else s for s in suite_specs(ds, registry)]
csv = ds.connector.settings["path"]
df = pd.read_csv(csv, dtype={{c.source: str for c in ds.columns if c.duck_type == "VARCHAR"}})
df = df.rename(columns={{c.source: c.name for c in ds.columns}})
for c in ds.columns:
    if c.duck_type == "VARCHAR":
        df[c.name] = df[c.name].str.strip()
    code_list = c.code_list or (c.element and registry.element(c.element).code_list)
    if code_list:
        df[c.name] = df[c.name].replace({{label: code for code, label in registry.code_list(code_list).codes.items()}})
    if c.duck_type == "DATE":
        df[c.name] = pd.to_datetime(df[c.name], format="%Y-%m-%d")
read = time.perf_counter() - t
suite = context.suites.add(build_suite(ds, specs))
batch = context.data_sources.add_pandas("peer").add_dataframe_asset("firms").add_batch_definition_whole_dataframe("all")
definition = context.validation_definitions.add(gx.ValidationDefinition(name="firms", data=batch, suite=suite))
result = definition.run(batch_parameters={{"dataframe": df}})
failed = [r.expectation_config.type for r in result.results if not r.success]
assert result.success and len(result.results) == len(specs), failed
validate = time.perf_counter() - t - read
df.to_parquet(out, engine="pyarrow", index=False)
seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
{PEAK_RSS}
print("RESULT" + json.dumps({{"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "checks": len(specs),
                             "stages": {{"read": read, "validate": validate, "write": seconds - read - validate}}}}))
"""


def _home(root: Path, csv: Path) -> Path:
    """A home whose firms dataset reads ``csv`` (the peer reads the extract from there)."""
    return _home_at(Path(tempfile.mkdtemp(dir=root, prefix="home-")), csv)


def _drop_home(root: Path) -> tuple[Path, Path]:
    """A home whose firms dataset reads the CSV files of its drop folder (OneSource's run: a delivery a day)."""
    home = Path(tempfile.mkdtemp(dir=root, prefix="home-"))
    (home / "drop").mkdir()
    return _home_at(home, home / "drop" / "*.csv"), home / "drop"


def _home_at(home: Path, path: Path) -> Path:
    from tests.helpers import firms_dataset, write_registry

    write_registry(home / "registry", [firms_dataset(connector={"kind": "file", "path": str(path), "format": "csv"})])
    return home


def run(rows: int, runs: int, workdir: Path, log=print, peer: bool = False) -> dict:
    """``peer``: also time the pandas + GX + pyarrow way in each run (ingest_peer_ratio); the SQL
    benchmark only needs the extract written."""
    workdir.mkdir(parents=True, exist_ok=True)
    csv = workdir / f"firms_{rows}.csv"
    if not csv.exists():
        log(f"  writing a {rows:,}-row CSV extract ...")
        run_child(MAKE_CSV + "\nprint('RESULT{}')", str(csv), str(rows))
    size_mb = csv.stat().st_size / 2**20
    raw, full, stages, raw_rss, full_rss = [], [], [], 0.0, 0.0
    raw_cpu, full_cpu = [], []
    peers: list[dict] = []
    for i in range(runs):
        out = workdir / "raw.parquet"
        r = run_child(RAW, str(csv), str(out))
        out.unlink(missing_ok=True)
        home, drop = _drop_home(workdir)
        f = run_child(FULL, str(home), str(drop), str(csv))
        if peer:
            out = workdir / "peer.parquet"
            peer_home = _home(workdir, csv)
            peers.append(run_child(PEER, str(peer_home), str(out)))
            out.unlink(missing_ok=True)
            shutil.rmtree(peer_home, ignore_errors=True)
            log(f"  run {i + 1}/{runs}: pandas + GX + pyarrow {peers[-1]['seconds']:.2f} s "
                f"({peers[-1]['cpu_seconds']:.2f} CPU s, peak {peers[-1]['peak_rss_mb']:.0f} MB) "
                f"({', '.join(f'{k} {v:.2f}' for k, v in peers[-1]['stages'].items())})")
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
    peer_figures = {}
    if peers:
        peer_s = [p["seconds"] for p in peers]
        peer_ratios = [p / f for p, f in zip(peer_s, full, strict=True)]  # how many times OneSource is faster
        # CPU seconds too: on a host shared at load 10-20 the wall figures swing several-fold
        peer_cpu_ratios = [p["cpu_seconds"] / f for p, f in zip(peers, full_cpu, strict=True)]
        peer_rss = max(p["peak_rss_mb"] for p in peers)
        log(f"  pandas + GX ({peers[0]['checks']} checks) + pyarrow median {statistics.median(peer_s):.2f} s "
            f"-> OneSource {statistics.median(peer_ratios):.2f}x faster (target 4x); CPU seconds "
            f"{statistics.median(p['cpu_seconds'] for p in peers):.2f} -> {statistics.median(peer_cpu_ratios):.2f}x; "
            f"peak RSS {peer_rss:.0f} MB")
        peer_figures = {
            "ingest_peer_ratio": figure(peer_ratios, "x: pandas + GX + pyarrow seconds / OneSource's", full_rss),
            "ingest_peer_cpu_ratio": figure(peer_cpu_ratios, "x: pandas + GX + pyarrow CPU seconds / OneSource's",
                                            full_rss),
            "ingest_peer_seconds": {**figure(peer_s, "s", peer_rss), "rows": rows, "stages_median": {
                k: round(statistics.median(p["stages"][k] for p in peers), 3) for k in peers[0]["stages"]}},
        }
    return {
        **peer_figures,
        "ingest_ratio": figure(ratios, "x raw DuckDB COPY", full_rss),
        "ingest_cpu_ratio": figure(cpu_ratios, "x raw DuckDB COPY's CPU seconds", full_rss),
        "ingest_seconds": {**figure(full, "s", full_rss), "rows": rows, "stages_median": per_stage},
        "ingest_raw_duckdb_seconds": figure(raw, "s", raw_rss),
    }
