"""KPI benchmark: every sharing KPI for 87 departments, 2,000 datasets and 10M audit events.

The city is synthetic but shaped like the real one: each department owns ~23 datasets, ~200 data
elements each have one authoritative dataset, and every dataset collects 6 elements (some its own,
some re-collected). The ledgers hold two months of daily loads and quality runs, 5,000 access
requests and 10M governed-query audit events in ``ops.audit_events``. ``kpi_seconds`` is
:func:`metrics.kpis.compute` for one month in a fresh process (registry already loaded, as in the
metrics DAG's task); the ratio compares it with raw DuckDB counting the same month's distinct
consumer pairs from the same 10M events, the one step that reads them all.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.common import PEAK_RSS, figure, run_child
from lakehouse import ledger

DEPARTMENTS, DATASETS, ELEMENTS, EVENTS = 87, 2000, 200, 10_000_000

SETUP = """
import datetime as dt, random, sys
from pathlib import Path
import yaml
from lakehouse import ledger
from lakehouse.lake import Lake
from core.config import Settings
home, n_dept, n_ds, n_el, n_events = Path(sys.argv[1]), *map(int, sys.argv[2:6])
settings = Settings(home=home)
reg = settings.registry_dir
rng = random.Random(11)
depts = [f"d{i:02d}" for i in range(n_dept)]
def dump(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
dump(reg / "departments.yaml", {"departments": [{"code": d, "name": f"部门{d}", "name_en": d,
     "systems": [{"code": f"{d}_sys", "name": "业务系统"}]} for d in depts]})
owners = [depts[i % n_dept] for i in range(n_ds)]
names = [f"ds{i:04d}" for i in range(n_ds)]
authority = {f"e{j:03d}": names[j * (n_ds // n_el)] for j in range(n_el)}
dump(reg / "elements.yaml", {"elements": [{"name": e, "name_zh": f"数据元{e}", "name_en": e, "type": "string",
     "authority": a} for e, a in authority.items()], "code_lists": {"flag": {"1": "是"}}})
own = {a: e for e, a in authority.items()}
cycles = ["daily"] * 6 + ["weekly", "monthly"]
for i, (name, owner) in enumerate(zip(names, owners)):
    elements = ([own[name]] if name in own else []) + rng.sample(sorted(authority), 5)
    elements = list(dict.fromkeys(elements))
    share = "not_shared" if i % 23 == 0 else ("conditional" if i % 3 == 0 else "unconditional")
    entry = {"name": name, "title": f"数据集{i}", "owner": owner, "system": f"{owner}_sys",
             "update_cycle": rng.choice(cycles), "share_type": share, "key": ["id"],
             "connector": {"kind": "file", "path": f"{owner}/{name}/*.csv", "format": "csv"},
             "columns": [{"name": "id", "source": "编号", "type": "string", "required": True}]
                        + [{"name": e, "source": e, "element": e} for e in elements]}
    if share == "conditional":
        entry["conditions"] = "履职使用"
    if share == "not_shared":
        entry["legal_basis"] = "法律法规"
    dump(reg / "datasets" / owner / f"{name}.yaml", entry)
now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
start = (now.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
with Lake(settings.lake) as lake:
    con = lake.con
    con.execute(f'''CREATE TEMP TABLE bench_loads AS
        SELECT 'b-' || d || '-' || day AS load_id, 'ds' || lpad(d::VARCHAR, 4, '0') AS dataset,
               'd' || lpad((d % {n_dept})::VARCHAR, 2, '0') AS owner,
               CASE WHEN random() < 0.93 THEN 'published' ELSE 'quarantined' END AS status, 'bench' AS source,
               'sha-' || d || '-' || day AS sha256, 'v' AS registry_version, 1000 AS rows_in, 1000 AS rows_published,
               ts - INTERVAL 1 MINUTE AS started_at, ts AS finished_at
        FROM (SELECT d, day, TIMESTAMP '{start:%Y-%m-%d}' + INTERVAL (day) DAY + INTERVAL (d % 360) MINUTE AS ts
              FROM range({n_ds}) r(d), range(0, 58) s(day) WHERE random() < 0.9) WHERE ts < TIMESTAMP '{now}' ''')
    con.execute("BEGIN")
    ledger.insert_select(con, "loads", "SELECT * FROM bench_loads")
    ledger.insert_select(con, "quality_runs", '''
        SELECT load_id, dataset, owner, finished_at AS run_at, 'quality' AS stage, 1000 AS rows,
               status = 'published' AS passed, 12 AS checks, (status <> 'published')::INT AS blocking_failed,
               0 AS warnings, 0 AS skipped, 'v' AS suite_version, 'v' AS registry_version FROM bench_loads''')
    ledger.insert_select(con, "access_requests", f'''
        SELECT 'r' || i AS request_id, 'd' || lpad(((i * 7) % {n_dept})::VARCHAR, 2, '0') AS department,
               'ds' || lpad(((i * 13) % {n_ds})::VARCHAR, 4, '0') AS dataset,
               'd' || lpad((((i * 13) % {n_ds}) % {n_dept})::VARCHAR, 2, '0') AS owner, 'conditional' AS share_type,
               NULL AS columns, NULL AS row_filter, 'bench' AS purpose, 365 AS period_days,
               CASE WHEN i % 5 = 0 THEN 'refused' ELSE 'approved' END AS status, 'u' AS requested_by,
               req_at AS requested_at, req_at + INTERVAL 7 DAY AS due_at, req_at + INTERVAL (i % 9) DAY AS decided_at,
               'o' AS decided_by, CASE WHEN i % 5 = 0 THEN '理由' END AS reason, NULL AS grant_id
        FROM (SELECT i, TIMESTAMP '{start:%Y-%m-%d}' + INTERVAL (i % 55) DAY AS req_at FROM range(5000) r(i))''')
    ledger.insert_select(con, "audit_events", f'''
        SELECT i AS seq, TIMESTAMP '{start:%Y-%m-%d}' + INTERVAL (i % (58 * 86400)) SECOND AS event_at,
               'd' || lpad(((i * 31) % {n_dept})::VARCHAR, 2, '0') AS department, 'u' AS user_name,
               CASE WHEN i % 10 = 0 THEN 'refused' ELSE 'allowed' END AS decision,
               ['ds' || lpad(((i * 7919) % {n_ds})::VARCHAR, 4, '0')] AS tables, 10 AS rows
        FROM range({n_events}) r(i)''')
    con.execute("COMMIT")
    con.execute("DROP TABLE bench_loads")
(home / "ready").write_text("ok")
print("RESULT{}")
"""

KPI = f"""
import datetime as dt, json, sys, time
from pathlib import Path
from lakehouse.lake import Lake
from metrics.kpis import Period, compute
from core.config import Settings
from schemas import load_registry
settings = Settings(home=Path(sys.argv[1]))
t = time.perf_counter()
registry = load_registry(settings.registry_dir)
registry_seconds = time.perf_counter() - t
period = Period.month()
with Lake(settings.lake, read_only=True) as lake:
    t = time.perf_counter()
    result = compute(lake, registry, period)
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    raw = lake.con.execute('''SELECT count(*) FROM (SELECT DISTINCT department, unnest(tables) AS dataset
        FROM {ledger.ref('audit_events')} WHERE decision = 'allowed' AND event_at >= ? AND event_at < ?)''',
        [period.start, period.end]).fetchone()
    raw_seconds = time.perf_counter() - t
{PEAK_RSS}
print("RESULT" + json.dumps({{"seconds": seconds, "raw_seconds": raw_seconds, "registry_seconds": registry_seconds,
       "departments": len(result["departments"]), "datasets": len(result["datasets"]),
       "sharing_rate": result["city"]["sharing_rate"]["value"], "peak_rss_mb": peak}}))
"""


def run(runs: int, workdir: Path, log=print) -> dict:
    home = workdir / "kpi-home"
    if not (home / "ready").exists():
        log(f"  writing a city of {DEPARTMENTS} departments, {DATASETS:,} datasets and {EVENTS:,} audit events ...")
        run_child(SETUP, str(home), str(DEPARTMENTS), str(DATASETS), str(ELEMENTS), str(EVENTS))
    seconds, raw, rss = [], [], 0.0
    for i in range(runs):
        r = run_child(KPI, str(home))
        seconds.append(r["seconds"])
        raw.append(r["raw_seconds"])
        rss = max(rss, r["peak_rss_mb"])
        log(f"  run {i + 1}/{runs}: all KPIs for {r['departments']} departments / {r['datasets']:,} datasets "
            f"{r['seconds']:.2f} s (registry load {r['registry_seconds']:.2f} s); raw DuckDB consumer count "
            f"{r['raw_seconds']:.2f} s; sharing rate {r['sharing_rate']}")
    ratios = [s / q for s, q in zip(seconds, raw, strict=True)]
    log(f"  kpi_seconds median {statistics.median(seconds):.2f} s (target <= 10 s), peak {rss:.0f} MiB, "
        f"{statistics.median(ratios):.1f}x the raw DuckDB scan of the audit events")
    return {"kpi_seconds": {**figure(seconds, "s", rss), "departments": DEPARTMENTS, "datasets": DATASETS,
                            "audit_events": EVENTS},
            "kpi_ratio": figure(ratios, "x raw DuckDB consumer count over the same events", rss)}
