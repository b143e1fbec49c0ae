"""who-saw (sharing.security.replay) against an oracle that knows where every row came from.

Two small datasets hold the element ``person_id``: ``people`` (one row a person) and ``visits`` (some
persons have two). Each row carries a row id ``rid`` that the grants always give and the generated queries
may order by but need not select. Hypothesis draws grants (columns, row filters; the element is masked for
the consuming department) and queries (projections, filters on other columns, joins and self-joins,
aggregates, ORDER BY/LIMIT, OFFSET pages, window functions beside the rows, and aggregates that pack the
element's values: list, string_agg, to_json(list)) as structures; each is rendered twice: the query a user sends, and the same
query with lineage: the ``rid`` of every table reference (``list(rid)`` per group for aggregates). Both run
through the real engine (a server's: file scans, pins). The oracle, from the kept lineage alone: a kept row
of a projection or join came from the record when one of its rids is a record row's; a kept group held the
record when every row of it, through some reference, is a record row (an aggregate over others too is not
the record's), and a group whose packed list holds the element of a record row held it too. who-saw, run once
over the whole audit, must list exactly the user queries the oracle says.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from lakehouse import Lake
from onesource.cli import main
from schemas import load_registry
from sharing.engine import GovernedEngine
from sharing.grants import add_grant, revoke_grant
from sharing.security.replay import CLIPPED, EXPIRED, NO_SNAPSHOT, recipients, scans, who_saw
from tests.support.replay import RECORD, VALUE, make_home, person_id


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Settings:
    return make_home(tmp_path_factory.mktemp("whosaw"))


# --- queries as structures, rendered with and without lineage -------------------------------------------------

TABLES = {"p": "people", "q": "people", "v": "visits"}
SHAPES = {"p": ["p"], "v": ["v"], "pv": ["p", "v"], "pq": ["p", "q"]}
FROMS = {"p": "shared.people p", "v": "shared.visits v",
         "pv": "shared.people p JOIN shared.visits v ON p.pid = v.pid",
         "pq": "shared.people p JOIN shared.people q ON p.district = q.district AND p.rid < q.rid"}
COLUMNS = {"people": ["pid", "name", "district", "age"], "visits": ["pid", "clinic", "cost"]}
CONDITIONS = {"people": ["{a}.age > 35", "{a}.age <= 44", "{a}.district = 'A'", "{a}.district <> 'B'"],
              "visits": ["{a}.cost < 60", "{a}.clinic = '诊所1'", "{a}.cost >= 30"]}
ROW_FILTERS = {"people": [None, "age > 25", "district <> 'C'", "age < 50 OR district = 'B'"],
               "visits": [None, "cost > 15", "clinic <> '诊所2'"]}


@st.composite
def grants(draw):
    out = {}
    for table, columns in COLUMNS.items():
        kept = draw(st.lists(st.sampled_from(columns), unique=True, min_size=1))
        out[table] = (["rid", *kept], draw(st.sampled_from(ROW_FILTERS[table])))
    return out


@st.composite
def queries(draw, granted):
    usable = {s: a for s, a in SHAPES.items()
              if all(c in granted[TABLES[x]][0] for x in a for c in (["pid"] if s == "pv" else
                                                                      ["district"] if s == "pq" else []))}
    shape = draw(st.sampled_from(sorted(usable)))
    aliases = SHAPES[shape]
    cols = [f"{a}.{c}" for a in aliases for c in granted[TABLES[a]][0] if c != "rid"]
    conditions = [c.format(a=a) for a in aliases for c in CONDITIONS[TABLES[a]]
                  if c.split()[0].split(".")[1] in granted[TABLES[a]][0]]
    where = draw(st.lists(st.sampled_from(conditions), unique=True, max_size=2)) if conditions else []
    kind = draw(st.sampled_from(["rows", "rows", "agg", "window", "pack"]))
    limit = draw(st.none() | st.integers(1, 4))
    chosen = draw(st.lists(st.sampled_from(cols), unique=True, min_size=1 if kind in ("rows", "window") else 0,
                           max_size=3))
    pids = [f"{a}.pid" for a in aliases if f"{a}.pid" in cols]
    if kind == "pack" and not pids:
        kind = "agg"
    if kind == "window" and not pids:
        kind = "rows"
    if kind in ("rows", "window") and (limit is not None or kind == "window"):
        # LIMIT and windows keep rows that identify their person (see who-saw's doc)
        chosen += [c for c in pids if c not in chosen]
        if not pids:
            limit = None
    offset = draw(st.integers(1, 3)) if kind in ("rows", "window") and limit is not None and draw(st.booleans()) else None
    window = draw(st.sampled_from(["count(*) OVER ()", "row_number() OVER (ORDER BY {rids})",
                                   "sum(1) OVER (ORDER BY {rids} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)"]))
    pack = draw(st.sampled_from(pids)) if kind == "pack" else None
    how = draw(st.sampled_from(["list({c})", "string_agg({c}, ',')", "to_json(list({c}))"]))
    return {"shape": shape, "aliases": aliases, "where": where, "kind": kind, "cols": chosen, "limit": limit,
            "offset": offset, "window": window, "pack": pack, "how": how}


def render(q: dict, lineage: bool) -> str:
    cols, aliases = q["cols"], q["aliases"]
    rids = ", ".join(f"{a}.rid" for a in aliases)
    where = f" WHERE {' AND '.join(q['where'])}" if q["where"] else ""
    if q["kind"] in ("rows", "window"):
        select = list(cols) + ([q["window"].format(rids=rids) + " AS w"] if q["kind"] == "window" else [])
        select += [f"{a}.rid AS lin_{a}" for a in aliases] if lineage else []
        order = [*cols, *(f"{a}.rid" for a in aliases)]  # total: LIMIT keeps the same rows in both renderings
        if q["offset"]:  # paging through the rows in their ids' order (a page may skip the record's rows)
            order = [*(f"{a}.rid" for a in aliases), *cols]
        tail = f" ORDER BY {', '.join(order)} LIMIT {q['limit']}" if q["limit"] else ""
        tail += f" OFFSET {q['offset']}" if q["offset"] else ""
        return f"SELECT {', '.join(select)} FROM {FROMS[q['shape']]}{where}{tail}"
    packed = [q["how"].format(c=q["pack"]) + " AS packed"] if q["kind"] == "pack" else []
    select = [*cols, "count(*) AS n", *packed] + ([f"list({a}.rid) AS lin_{a}" for a in aliases] if lineage else [])
    group = f" GROUP BY {', '.join(cols)}" if cols else ""
    tail = f" ORDER BY {', '.join(cols)} LIMIT {q['limit']}" if cols and q["limit"] else ""
    return f"SELECT {', '.join(select)} FROM {FROMS[q['shape']]}{where}{group}{tail}"


def oracle(q: dict, result, record: dict[str, set[int]]) -> bool:
    """Whether the kept result held the record, from its lineage columns alone."""
    at = {name: i for i, name in enumerate(result.columns)}
    for row in result.rows:
        for a in q["aliases"]:
            rids = row[at[f"lin_{a}"]]
            mine = record[TABLES[a]]
            if q["kind"] in ("rows", "window") and rids in mine:
                return True
            if q["kind"] in ("agg", "pack") and rids and all(r in mine for r in rids):
                return True
            if q["kind"] == "pack" and q["pack"] == f"{a}.pid" and any(r in mine for r in rids):
                return True  # the record's ID (masked or not) is packed into the group's value
    return False


def record_rids(home: Settings) -> dict[str, set[int]]:
    with Lake(home.lake, read_only=True) as lake:
        return {t: {r[0] for r in lake.con.execute(f"SELECT rid FROM lake.shared.{t} WHERE pid = ?", [VALUE]).fetchall()}
                for t in ("people", "visits")}


def test_who_saw_lists_exactly_the_queries_whose_kept_results_held_the_record(home):
    registry = load_registry(home.registry_dir)
    engine = GovernedEngine(home, registry, persistent=True)
    record = record_rids(home)
    assert len(record["people"]) == 1 and len(record["visits"]) == 2
    cases: list[tuple[int, bool, str]] = []
    kinds: Counter = Counter()  # (kind, OFFSET or not, held) of the generated queries
    writer = Lake(home.lake)  # the owners' grants and revocations (one connection: opening one costs a second)

    @settings(max_examples=16, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.data())
    def run(data):
        granted = data.draw(grants())
        ids = [add_grant(writer, registry, "tax", t, columns=c, row_filter=f) for t, (c, f) in granted.items()]
        try:
            for q in data.draw(st.lists(queries(granted), min_size=3, max_size=6)):
                traced = engine.query("tax", render(q, lineage=True), user="oracle")
                kept = engine.query("tax", render(q, lineage=False), user="analyst", purpose="核查")
                seq = engine.audit.entries()[-1]["seq"]
                lineage = {f"lin_{a}" for a in q["aliases"]}
                plain = [tuple(v for c, v in zip(traced.columns, r, strict=True) if c not in lineage)
                         for r in traced.rows]
                assert Counter(map(repr, plain)) == Counter(map(repr, kept.rows)), render(q, False)
                cases.append((seq, oracle(q, traced, record), render(q, False)))
                kinds[(q["kind"], bool(q["offset"]), cases[-1][1])] += 1
        finally:
            for grant in ids:
                revoke_grant(writer, grant)

    try:
        run()
    finally:
        engine.close()
        writer.close()
    report = who_saw(home, registry, "person_id", VALUE)
    found = {h.seq for h in report.hits if h.user == "analyst"}
    expected = {seq for seq, held, _ in cases if held}
    wrong = [(seq, held, sql) for seq, held, sql in cases if (seq in found) != held]
    assert not wrong, wrong
    assert found == expected and 0 < len(expected) < len(cases)  # both answers occur
    # windows and packed aggregates are among both answers, and OFFSET pages among the queries
    assert all(kinds[(k, o, h)] for k in ("window", "pack") for h in (True, False) for o in [False]), kinds
    assert any(o for _, o, _ in kinds), kinds
    assert report.unreplayed == {} and report.datasets == ("people", "visits")
    assert all(h.user == "oracle" or h.seq in expected for h in report.hits)
    assert all(set(h.masked) <= set(h.columns) for h in report.hits)
    assert any("people.pid" in h.masked for h in report.hits)  # masked, and still the record's row


def test_scans_skip_literals_and_keep_a_querys_own_time_travel():
    text = ('SELECT \'"lake"."shared"."people" AS "__os_scan"\' FROM (SELECT 1 FROM "lake"."shared"."people" AS '
            '"__os_scan" AT (VERSION => 3)) AS p, (SELECT 2 FROM "lake"."shared"."visits" AS "__os_scan") AS "it\'s"')
    found = scans(text)
    assert [(s.dataset, s.at) for s in found] == [("people", "VERSION => 3"), ("visits", None)]
    assert text[found[0].start:found[0].end].endswith("AT (VERSION => 3)")


def test_entries_that_cannot_be_replayed_are_counted_with_the_reason(home):
    registry = load_registry(home.registry_dir)
    engine = GovernedEngine(home, registry)  # the CLI's engine: its own transaction, no file scans
    engine.query("psb", "SELECT name FROM shared.people WHERE age > 20", user="cli")
    entry = engine.audit.entries()[-1]
    assert entry["snapshot"] is not None and "sql_lake" not in entry  # it read the table, not files
    old = {k: v for k, v in entry.items() if k not in ("seq", "at", "prev", "hash", "snapshot")}
    engine.audit.append(**old)  # an entry from before snapshots were recorded
    engine.audit.append(**{**old, "sql_run": old["sql_run"][:40] + " …", "sql_run_bytes": 9999,
                           "snapshot": entry["snapshot"]})
    mine = [e for e in engine.audit.entries() if e.get("user") == "cli"]
    report = who_saw(home, registry, "person_id", VALUE, entries=mine)
    assert [h.seq for h in report.hits] == [entry["seq"]] and report.hits[0].user == "cli"
    assert report.unreplayed == {NO_SNAPSHOT: [entry["seq"] + 1], CLIPPED: [entry["seq"] + 2]}
    with Lake(home.lake) as lake:  # maintenance expires the snapshot the query read (a later one exists)
        revoke_grant(lake, add_grant(lake, registry, "tax", "visits"))
        lake.con.execute("CALL ducklake_expire_snapshots('lake', versions => [?])", [entry["snapshot"]])
    report = who_saw(home, registry, "person_id", VALUE, entries=mine)
    assert report.hits == [] and report.unreplayed[EXPIRED] == [entry["seq"]]
    assert who_saw(home, registry, "person_id", person_id(99)).hits == []  # nobody's record: nobody saw it
    after = dt.datetime.fromisoformat(entry["at"]) + dt.timedelta(microseconds=1)
    assert who_saw(home, registry, "person_id", VALUE, entries=mine, until=after).examined == 1
    assert who_saw(home, registry, "person_id", VALUE, entries=mine, since=after).examined == 2


def test_cli_who_saw_and_dataset_recipients(home, monkeypatch, capsys):
    registry = load_registry(home.registry_dir)
    with Lake(home.lake) as lake:
        grant = add_grant(lake, registry, "tax", "people", columns=["rid", "pid", "district"])
    try:
        engine = GovernedEngine(home, registry, persistent=True)
        engine.query("tax", "SELECT pid, district FROM shared.people", user="wang", purpose="稽查")
        engine.query("tax", "SELECT count(*) FROM shared.people", user="wang")
        engine.query("psb", "SELECT pid, name FROM shared.people WHERE age < 30", user="li")  # the owner: unmasked
        engine.close()
    finally:
        with Lake(home.lake) as lake:
            revoke_grant(lake, grant)
    monkeypatch.setenv("ONESOURCE_HOME", str(home.home))
    assert main(["security", "who-saw", "--element", "person_id", "--value", VALUE, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    users = {(h["department"], h["user"], h["purpose"]) for h in out["hits"]}
    assert ("tax", "wang", "稽查") in users and ("psb", "li", None) in users
    assert not any(h["user"] == "wang" and h["rows"] == 1 for h in out["hits"])  # the count held nobody
    found, _ = recipients(home, registry, "people")
    by = {(r.department, r.user): r for r in found}
    assert by[("psb", "li")].sensitive_values == 2 * by[("psb", "li")].rows > 0  # pid and name, unmasked
    assert by[("tax", "wang")].sensitive_values == 0 and by[("tax", "wang")].queries == 2
    assert main(["security", "who-saw", "--dataset", "people"]) == 0
    assert "psb / li" in capsys.readouterr().out
    assert main(["security", "who-saw", "--element", "nothing", "--value", "x"]) == 1
    assert "nothing" in capsys.readouterr().err


PLAIN_AGGREGATES = [  # over many records each (person 3 is one of district A's four, and of two clinics' visits)
    "SELECT district, sum(age) AS s, avg(age) AS a, max(age) AS oldest, count(*) AS n FROM shared.people "
    "GROUP BY district",
    "SELECT count(DISTINCT pid) AS persons, sum(cost) AS s, stddev(cost) AS sd FROM shared.visits",
    "SELECT clinic, count(*) AS n, avg(cost) AS a, list(cost > 15) AS dear FROM shared.visits GROUP BY clinic "
    "HAVING count(*) > 2",
    "SELECT district, n, sum(n) OVER () AS everyone FROM (SELECT district, count(*) AS n FROM shared.people "
    "GROUP BY district) ORDER BY district LIMIT 2 OFFSET 0",
    "SELECT list(DISTINCT district ORDER BY district) AS districts, string_agg(DISTINCT clinic, ',') AS clinics "
    "FROM shared.people p, shared.visits v WHERE p.rid < 7 AND v.rid < 112",  # every value from others too
    # (with p.rid < 4, district A is the record's alone: held, as SELECT DISTINCT district would be)
]


def test_plain_aggregates_over_many_records_are_not_reported(home):
    """The second rule (sentinels) runs on these shapes (GROUP BY, HAVING, windows, OFFSET, list/string_agg):
    none of them carries a value of the record alone, so none held it (people's owner; visits granted, its pid masked)."""
    registry = load_registry(home.registry_dir)
    with Lake(home.lake) as lake:
        grant = add_grant(lake, registry, "psb", "visits")
    engine = GovernedEngine(home, registry, persistent=True)
    try:
        seqs = {}
        for n, sql in enumerate(PLAIN_AGGREGATES):
            rows = engine.query("psb", sql, user=f"agg{n}").rows
            assert rows and not any(VALUE in repr(r) or f"人{RECORD}'" in repr(r) for r in rows), rows
            seqs[engine.audit.entries()[-1]["seq"]] = sql
    finally:
        engine.close()
        with Lake(home.lake) as lake:
            revoke_grant(lake, grant)
    mine = [e for e in GovernedEngine(home, registry).audit.entries() if e["seq"] in seqs]
    report = who_saw(home, registry, "person_id", VALUE, entries=mine)
    assert report.examined == len(PLAIN_AGGREGATES) and report.unreplayed == {}
    assert [seqs[h.seq] for h in report.hits] == []
