"""Security benchmark: ``who_saw_seconds``, who saw one resident's record over 10,000 audited queries.

Set-up (not timed, kept in the work folder between runs): a resident register of ``ROWS`` rows with the
element ``resident_id`` (masked for consumers), loaded into a bench lake; then ``QUERIES`` real governed
queries through the server's engine (file scans, pins, the audit as the servers write it), all reading that
dataset: the owner's lookups by resident ID, consumers' filters (a district and an age range, the ID masked,
one consumer under a row filter), and aggregates; a grant changes every 2,500 queries (new snapshots, the same
data). Some of them hold the chosen resident's record.

Timed: :func:`sharing.security.replay.who_saw` for that resident (verifying the audit log, replaying every
query), in a fresh process each run; the median of ``runs``. Target: at most 60 s on 2 cores.
"""

from __future__ import annotations

import random
from pathlib import Path

from bench.common import figure, run_child

ROWS, QUERIES = 100_000, 10_000
DISTRICTS = ("430102", "430103", "430104", "430105", "430111", "430112")

DATASET = {
    "name": "residents", "title": "人口基本信息", "owner": "psb", "system": "psb_sys", "update_cycle": "daily",
    "share_type": "conditional", "conditions": "依法履职", "key": ["resident_id"], "load_mode": "snapshot",
    "connector": {"kind": "file", "path": "residents.csv", "format": "csv", "encoding": "utf-8"},
    "columns": [
        {"name": "resident_id", "source": "resident_id", "element": "resident_id", "required": True},
        {"name": "person_name", "source": "person_name", "element": "person_name"},
        {"name": "district", "source": "district", "type": "string"},
        {"name": "age", "source": "age", "type": "integer"},
    ],
}
ELEMENTS = {"elements": [
    {"name": "resident_id", "name_zh": "公民身份号码", "name_en": "Resident ID", "type": "string",
     "authority": "residents", "format": "resident_id", "sensitivity": 3},
    {"name": "person_name", "name_zh": "姓名", "name_en": "Name", "type": "string", "authority": "residents",
     "sensitivity": 3},
], "code_lists": {"status": {"1": "存续"}}}
DEPARTMENTS = {"departments": [
    {"code": c, "name": n, "name_en": e, "systems": [{"code": f"{c}_sys", "name": "业务系统"}]} for c, n, e in (("psb", "公安局", "Public Security"), ("tax", "税务局", "Tax"), ("hrss", "人社局", "HR"),
                    ("civ", "民政局", "Civil Affairs"))]}


def resident_id(n: int) -> str:
    """Resident ``n``'s ID (GB 11643: division, birth date, sequence, check character), unique for n < 1M."""
    import datetime as dt

    from schemas.formats import resident_id_check_char

    born = dt.date(1950, 1, 1) + dt.timedelta(days=n // 1000)
    body = f"{DISTRICTS[n % len(DISTRICTS)]}{born:%Y%m%d}{n % 1000:03d}"
    return body + resident_id_check_char(body)


def _home(workdir: Path):
    """The bench lake with its audit of QUERIES governed queries (made once, then kept)."""
    from core.config import Settings
    from ingest import run_dataset
    from lakehouse import Lake
    from schemas import load_registry
    from sharing.engine import GovernedEngine
    from sharing.grants import add_grant, revoke_grant
    from tests.helpers import dump

    settings = Settings(home=workdir / "security-home")
    if (settings.home / "ready").exists():
        return settings
    dump(settings.registry_dir / "departments.yaml", DEPARTMENTS)
    dump(settings.registry_dir / "elements.yaml", ELEMENTS)
    dump(settings.registry_dir / "datasets" / "psb" / "residents.yaml", DATASET)
    ids = [resident_id(n) for n in range(ROWS)]
    if len(set(ids)) != ROWS:
        raise RuntimeError("bench resident IDs are not unique")
    path = settings.sources_dir / "residents.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        out.write("resident_id,person_name,district,age\n")
        out.writelines(f"{ids[n]},居民{n},{DISTRICTS[n % len(DISTRICTS)]},{_age(n)}\n" for n in range(ROWS))
    registry = load_registry(settings.registry_dir)
    [result] = run_dataset(settings, registry, "residents", {})
    assert result.status == "published", result.message
    with Lake(settings.lake) as lake:
        add_grant(lake, registry, "tax", "residents", columns=["resident_id", "district", "age"])
        add_grant(lake, registry, "hrss", "residents", row_filter=f"district = '{DISTRICTS[1]}'")
    engine = GovernedEngine(settings, registry, persistent=True)
    rng = random.Random(23)
    value = ids[VALUE_AT]
    churn = None
    try:
        for i in range(QUERIES):
            if i % 2500 == 1250:  # a grant comes and goes: new snapshots, the same data
                with Lake(settings.lake) as lake:
                    if churn is None:
                        churn = add_grant(lake, registry, "civ", "residents", columns=["district", "age"])
                    else:
                        revoke_grant(lake, churn)
                        churn = None
            department, sql = _query(rng, ids, value)
            engine.query(department, sql, user=f"{department}_user{rng.randrange(5)}", purpose="bench")
    finally:
        engine.close()
    (settings.home / "ready").write_text(value)
    return settings


VALUE_AT = 12_345
"""The chosen resident (district 430105, age 53)."""


def _age(n: int) -> int:
    return n // 7 % 90  # not a function of the district (n % 6)


def _query(rng: random.Random, ids: list[str], value: str) -> tuple[str, str]:
    kind = rng.random()
    if kind < 0.4:  # the owner looks residents up (1 in 50 of them the chosen one)
        who = value if rng.random() < 0.02 else ids[rng.randrange(len(ids))]
        return "psb", f"SELECT resident_id, person_name, district, age FROM shared.residents WHERE resident_id = '{who}'"
    if kind < 0.8:  # consumers filter a district and an age range (the ID masked); hrss under its row filter
        low = rng.randrange(85)
        department = rng.choice(("tax", "hrss"))
        return department, (f"SELECT resident_id, age FROM shared.residents WHERE district = "
                            f"'{rng.choice(DISTRICTS)}' AND age BETWEEN {low} AND {low + rng.randrange(1, 11)} "
                            "ORDER BY age, resident_id LIMIT 2000")
    return rng.choice((("tax", "SELECT district, count(*) AS n FROM shared.residents GROUP BY district"),
                       ("tax", f"SELECT age, count(*) AS n FROM shared.residents WHERE district = '{rng.choice(DISTRICTS)}' "
                               "GROUP BY age ORDER BY age"),
                       ("hrss", "SELECT avg(age) AS mean_age, count(*) AS n FROM shared.residents")))


CHILD = """
import json, sys, time
from pathlib import Path
from core.config import Settings
from schemas import load_registry
from sharing.security.replay import who_saw
settings = Settings(home=Path(sys.argv[1]))
value = (settings.home / "ready").read_text()
registry = load_registry(settings.registry_dir)
t = time.perf_counter()
cpu = time.process_time()
report = who_saw(settings, registry, "resident_id", value)
seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
import resource
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT" + json.dumps({"seconds": seconds, "cpu": cpu, "examined": report.examined, "hits": len(report.hits),
                             "replayed": report.replayed, "unreplayed": sum(map(len, report.unreplayed.values())),
                             "peak_rss_mb": peak}))
"""


def run(workdir: Path, runs: int = 3, log=print) -> dict:
    settings = _home(workdir)
    results = [run_child(CHILD, str(settings.home)) for _ in range(runs)]
    for r in results:
        log(f"  who-saw over {r['examined']:,} queries: {r['seconds']:.1f} s ({r['cpu']:.1f} s CPU), "
            f"{r['replayed']:,} replays, {r['hits']} held the record, {r['unreplayed']} not replayable")
    return {"who_saw_seconds": {**figure([r["seconds"] for r in results], "s, who saw one record over 10,000 "
                                         "audited queries (target <= 60)", max(r["peak_rss_mb"] for r in results)),
                                "queries": results[0]["examined"], "hits": results[0]["hits"],
                                "replays": results[0]["replayed"],
                                "cpu_seconds": round(sorted(r["cpu"] for r in results)[len(results) // 2], 2)}}
