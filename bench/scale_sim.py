"""A 5 PB lake's catalog, simulated on PostgreSQL: its size and the time of the queries the platform makes.

A real DuckLake is made first on a fresh PostgreSQL database (87 department schemas, one table of
``columns`` columns, one load), so every catalog table has DuckLake's own shape; then its tables are scaled
up in bulk inside PostgreSQL (``INSERT ... SELECT`` from that template) to a fraction of the counts a
5 PB lake would hold (:class:`Plan`). DuckDB's ducklake extension then attaches that catalog as it would a
real one and the platform's queries are timed through it: opening the lake, listing tables, looking up a
snapshot, time travel to one, a table's file list, planning a filtered scan (file statistics), and the
maintenance calls (expire snapshots, the file clean-up's dry run). The data files themselves do not exist:
nothing timed here reads a Parquet file.

``python -m bench.scale_sim [--steps 0.01,0.03,0.10]`` or ``python -m bench --only scale``; the figures
are in docs/scale.md. Each step drops and re-creates the database ``onesource_scale_sim``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

DATABASE = "onesource_scale_sim"
SERVER = "host=127.0.0.1 port=5432 user=postgres"


@dataclass(frozen=True)
class Plan:
    """The counts assumed for the full 5 PB lake; a step builds ``fraction`` of its tables (and so of its
    files, statistics and snapshots: a table's own counts stay those of the full lake)."""

    lake_bytes: int = 5 * 2**50
    """5 PiB of Parquet, live (what the current snapshot reads)."""
    file_bytes: int = 512 * 2**20
    """Target file size after compaction: 5 PiB / 512 MiB = 10,485,760 live files."""
    departments: int = 87
    """One DuckLake schema per department (the per-department partitioning of the catalog)."""
    tables: int = 5_000
    """2,000 datasets now, with districts' and streets' copies and history tables: 5,000 tables."""
    columns: int = 25
    """Columns per table (the demo city's registry averages 12-30)."""
    retention_days: int = 90
    """Snapshots kept for time travel; ``ducklake_expire_snapshots`` drops older ones."""
    loads_per_day: int = 1
    """Each table is loaded daily: one snapshot per table per day."""
    compaction_every: int = 7
    """Every 7th day a table's small files are merged (one more snapshot), ending the files it replaced."""
    replaced_share: float = 0.2
    """Files ended by compaction or a full-snapshot reload but still within retention, per live file."""
    rows_per_file: int = 4_000_000
    """~128 bytes a row in a 512 MiB file."""
    expired_days: int = 10
    """Days of snapshots past retention when the maintenance call runs (the simulated lake spans
    retention_days + expired_days)."""

    @property
    def live_files(self) -> int:
        return math.ceil(self.lake_bytes / self.file_bytes)

    def counts(self, fraction: float) -> dict[str, int]:
        tables = max(1, round(self.tables * fraction))
        per_table = math.ceil(self.live_files / self.tables)
        dead = math.ceil(per_table * self.replaced_share)
        days = self.retention_days + self.expired_days
        events = days * self.loads_per_day + days // self.compaction_every
        return {"tables": tables, "live_files_per_table": per_table, "replaced_files_per_table": dead,
                "data_files": tables * (per_table + dead), "file_column_stats": tables * (per_table + dead) * self.columns,
                "columns": tables * self.columns, "snapshots": tables * events, "events_per_table": events,
                "days": days}


def _psql(dbname: str):
    import psycopg

    return psycopg.connect(f"{SERVER} dbname={dbname}", autocommit=True)


def drop_database() -> None:
    with _psql("postgres") as pg:
        pg.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def _fresh_database() -> None:
    with _psql("postgres") as pg:
        pg.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        pg.execute(f"CREATE DATABASE {DATABASE}")


def _attach(con, data_path: str | None, read_only: bool = False) -> float:
    """ATTACH the catalog as ``lake``; ``data_path`` None: the one the catalog records."""
    t = time.perf_counter()
    opts = ([f"DATA_PATH '{data_path}'"] if data_path else []) + ["DATA_INLINING_ROW_LIMIT 0"] + \
        (["READ_ONLY"] if read_only else [])
    con.execute(f"ATTACH 'ducklake:postgres:dbname={DATABASE} {SERVER}' AS lake ({', '.join(opts)})")
    return time.perf_counter() - t


def _connect():
    from core.duck import connect

    return connect(extensions=("postgres_scanner", "ducklake"))


def make_template(plan: Plan, data_path: str) -> dict[str, int]:
    """The real lake: department schemas d00..d86, table d00.t00000 with ``plan.columns`` columns and one
    load of a few rows (one data file, its column statistics, table statistics). Returns its ids."""
    con = _connect()
    _attach(con, data_path)
    for d in range(plan.departments):
        con.execute(f"CREATE SCHEMA lake.d{d:02d}")
    cols = ", ".join(f"c{i:02d} {('BIGINT', 'VARCHAR', 'DATE', 'DECIMAL(18,2)')[i % 4]}" for i in range(plan.columns))
    con.execute(f"CREATE TABLE lake.d00.t00000 ({cols})")
    exprs = ("i", "'v' || i", "DATE '2024-01-01' + i::INT", "i / 3")
    values = ", ".join(exprs[k % 4] for k in range(plan.columns))
    con.execute(f"INSERT INTO lake.d00.t00000 SELECT {values} FROM range(100) t(i)")
    con.close()
    with _psql(DATABASE) as pg:
        table_id, snapshot = pg.execute("SELECT table_id, begin_snapshot FROM ducklake_table").fetchone()
        insert_snapshot, file_id = pg.execute("SELECT begin_snapshot, data_file_id FROM ducklake_data_file").fetchone()
        schema_version = pg.execute("SELECT schema_version FROM ducklake_snapshot WHERE snapshot_id = %s",
                                    [insert_snapshot]).fetchone()[0]
    return {"table_id": table_id, "created": snapshot, "last_snapshot": insert_snapshot, "file_id": file_id,
            "schema_version": schema_version}


def _scale_sql(plan: Plan, fraction: float, t: dict[str, int]) -> tuple[list[tuple[str, str]], int]:
    """(what, SQL) run in order inside PostgreSQL: the template's rows copied to the step's counts.

    Tables k = 1..T-1 get ids table_id + k, spread over the department schemas. Snapshots are one per
    (table, event) in time order: event e of table k is snapshot base + e * T + k + 1, where every
    ``compaction_every``-th event is a compaction. A table's live files begin at its load snapshots;
    its replaced files began at a load and ended at the next compaction after it. Snapshot times span
    ``days`` days up to now, so the oldest ``expired_days`` fall past retention."""
    c = plan.counts(fraction)
    tables, events, per_live, per_dead = c["tables"], c["events_per_table"], c["live_files_per_table"], \
        c["replaced_files_per_table"]
    tid, base, every = t["table_id"], t["last_snapshot"], plan.compaction_every + 1
    n_snap = tables * events
    snap = f"({base} + (e) * {tables} + (k) + 1)"  # the snapshot of event e of table k (0-based)
    last_id = base + n_snap
    # compaction events: e % every = every - 1; the next compaction at or after event e
    next_compaction = f"(LEAST(((e) / {every}) * {every} + {every - 1}, {events - 1}))"
    first_file = t["file_id"] + 1
    return [
        ("tables", f"""INSERT INTO ducklake_table
            SELECT {tid} + k, gen_random_uuid(), {t['created']}, NULL, s.schema_id, 't' || lpad(k::text, 5, '0'),
                   't' || lpad(k::text, 5, '0') || '/', true
            FROM generate_series(1, {tables - 1}) k
            JOIN ducklake_schema s ON s.schema_name = 'd' || lpad((k % {plan.departments})::text, 2, '0')"""),
        ("columns", f"""INSERT INTO ducklake_column
            SELECT c.column_id, c.begin_snapshot, c.end_snapshot, {tid} + k, c.column_order, c.column_name,
                   c.column_type, c.initial_default, c.default_value, c.nulls_allowed, c.parent_column,
                   c.default_value_type, c.default_value_dialect
            FROM ducklake_column c, generate_series(1, {tables - 1}) k WHERE c.table_id = {tid}"""),
        ("schema_versions", f"""INSERT INTO ducklake_schema_versions
            SELECT {t['created']}, {t['schema_version']}, {tid} + k FROM generate_series(1, {tables - 1}) k"""),
        ("snapshots", f"""INSERT INTO ducklake_snapshot
            SELECT {snap.replace('(e)', 'g / ' + str(tables)).replace('(k)', 'g % ' + str(tables))},
                   now() - interval '{c['days']} days' + (g + 1) * interval '{c['days']} days' / {n_snap + 1},
                   {t['schema_version']}, {tid + tables}, {first_file + c['data_files']}
            FROM generate_series(0, {n_snap - 1}) g"""),
        ("snapshot_changes", f"""INSERT INTO ducklake_snapshot_changes
            SELECT {base} + g + 1, 'inserted_into_table:' || ({tid} + g % {tables}),
                   'onesource', CASE WHEN (g / {tables}) % {every} = {every - 1} THEN 'compaction' ELSE 'load' END,
                   NULL
            FROM generate_series(0, {n_snap - 1}) g"""),
        # file m of table k: live (m < per_live) from the load event m * events / per_live, never ended;
        # replaced (m >= per_live): began at a load, ended at the next compaction
        ("data_files", f"""INSERT INTO ducklake_data_file
            SELECT {first_file} + k * {per_live + per_dead} + m, {tid} + k,
                   {snap.replace('(e)', 'ev').replace('(k)', 'k')},
                   CASE WHEN m >= {per_live} THEN {snap.replace('(e)', next_compaction.replace('(e)', 'ev')).replace('(k)', 'k')} END,
                   NULL, 'ducklake-' || gen_random_uuid() || '.parquet', true, 'parquet',
                   {plan.rows_per_file}, {plan.file_bytes} - (m % 97) * 65536, 40000,
                   m::bigint * {plan.rows_per_file}, NULL, NULL, NULL, NULL
            FROM generate_series(0, {tables - 1}) k, generate_series(0, {per_live + per_dead - 1}) m,
                 LATERAL (SELECT CASE WHEN m < {per_live} THEN (m::bigint * {events}) / {per_live}
                                      ELSE ((m - {per_live})::bigint * {events}) / {per_dead} END AS ev0) a,
                 LATERAL (SELECT CASE WHEN m >= {per_live} AND a.ev0 % {every} = {every - 1}
                                      THEN GREATEST(a.ev0 - 1, 0) ELSE a.ev0 END AS ev) b"""),
        ("file_column_stats", f"""INSERT INTO ducklake_file_column_stats
            SELECT f.data_file_id, f.table_id, s.column_id, s.column_size_bytes * 40000, {plan.rows_per_file}, 0,
                   CASE WHEN s.column_id = 1 THEN (f.data_file_id * 1000)::text ELSE s.min_value END,
                   CASE WHEN s.column_id = 1 THEN (f.data_file_id * 1000 + 99)::text ELSE s.max_value END,
                   s.contains_nan, s.extra_stats
            FROM ducklake_data_file f JOIN ducklake_file_column_stats s ON s.data_file_id = {t['file_id']}
            WHERE f.data_file_id >= {first_file}"""),
        ("table_stats", f"""INSERT INTO ducklake_table_stats
            SELECT {tid} + k, {plan.rows_per_file}::bigint * {per_live}, {plan.rows_per_file}::bigint * {per_live + per_dead},
                   {plan.file_bytes}::bigint * {per_live}
            FROM generate_series(1, {tables - 1}) k"""),
        ("table_column_stats", f"""INSERT INTO ducklake_table_column_stats
            SELECT {tid} + k, s.column_id, s.contains_null, s.contains_nan, s.min_value,
                   CASE WHEN s.column_id = 1 THEN ({first_file + c['data_files']} * 1000)::text ELSE s.max_value END,
                   s.extra_stats
            FROM ducklake_table_column_stats s, generate_series(1, {tables - 1}) k WHERE s.table_id = {tid}"""),
        # the real lake's own snapshots (schemas, the template table) come first in time too
        ("template_times", f"""UPDATE ducklake_snapshot SET snapshot_time = now() - interval '{c['days']} days'
            - interval '1 hour' + snapshot_id * interval '1 second' WHERE snapshot_id <= {base}"""),
        ("analyze", "ANALYZE"),
    ], last_id


def _timed(fn: Callable[[], object], runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return _spread(times)


def _spread(times: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(times), 4), "min": round(min(times), 4), "max": round(max(times), 4)}


def catalog_size() -> dict[str, int]:
    with _psql(DATABASE) as pg:
        rows = pg.execute("""SELECT relname, pg_total_relation_size(oid) FROM pg_class
                             WHERE relkind = 'r' AND relname LIKE 'ducklake%' ORDER BY 2 DESC""").fetchall()
        total = pg.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"database_bytes": total, **{name: size for name, size in rows[:6]}}


def _first_schema_listing(schema: str, runs: int) -> dict[str, float]:
    """The platform's listing (lakehouse.lake.list_tables: one schema, from ``information_schema.columns``) as
    the first query of a fresh connection, which is what every CLI command and Airflow task pays. DuckDB's
    table listing (``information_schema.tables``, ``duckdb_tables()``) asks DuckLake each table's size, two
    statistics queries per table; the column listing does not (the row below it)."""
    from lakehouse.lake import list_tables

    times = []
    for _ in range(runs):  # the listing alone, after the attach (as first_table_listing_s is timed)
        con = _connect()
        _attach(con, None, read_only=True)
        t = time.perf_counter()
        list_tables(con, schema)
        times.append(time.perf_counter() - t)
        con.close()
    return _spread(times)


def measure(plan: Plan, fraction: float, data_path: str, runs: int, last_id: int, t: dict[str, int],
            log=print) -> dict[str, object]:
    """The platform's catalog queries, each on a fresh connection where its first call is what a
    process pays (opening the lake: the snapshot and the whole schema at it)."""
    c = plan.counts(fraction)
    mid_table = f"t{(c['tables'] // 2):05d}"
    mid_schema = f"d{((c['tables'] // 2) % plan.departments):02d}"
    # a snapshot halfway back in retention that the middle table's load wrote
    back = last_id - (plan.retention_days // 2) * c["tables"]
    figures: dict[str, object] = {}

    def fresh():
        con = _connect()
        return con, _attach(con, data_path, read_only=True)

    figures["schema_listing_first_s"] = _first_schema_listing(mid_schema, runs)
    opens = []
    for _ in range(runs):
        con, seconds = fresh()
        t0 = time.perf_counter()
        n = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake'").fetchone()[0]
        opens.append((seconds, time.perf_counter() - t0))
        con.close()
    assert n == c["tables"], (n, c["tables"])
    figures["attach_s"] = round(statistics.median(o[0] for o in opens), 4)
    figures["first_table_listing_s"] = round(statistics.median(o[1] for o in opens), 4)
    con, _ = fresh()
    con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake'").fetchone()
    figures["table_listing_s"] = _timed(lambda: con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall(), runs)
    figures["current_snapshot_s"] = _timed(lambda: con.execute("FROM ducklake_current_snapshot('lake')").fetchall(), runs)
    figures["snapshot_list_s"] = _timed(lambda: con.execute(
        "SELECT max(snapshot_id) FROM ducklake_snapshots('lake') WHERE snapshot_time <= now() - INTERVAL 45 DAYS"
    ).fetchall(), runs)
    files = con.execute(f"SELECT count(*) FROM ducklake_list_files('lake', '{mid_table}', schema => '{mid_schema}')"
                        ).fetchone()[0]
    assert files == c["live_files_per_table"], (files, c)
    figures["table_file_list_s"] = _timed(lambda: con.execute(
        f"SELECT count(*) FROM ducklake_list_files('lake', '{mid_table}', schema => '{mid_schema}')").fetchall(), runs)
    old = con.execute(f"SELECT count(*) FROM ducklake_list_files('lake', '{mid_table}', schema => '{mid_schema}', "
                      f"snapshot_version => {back})").fetchone()[0]
    figures["time_travel_files"] = old
    figures["time_travel_file_list_s"] = _timed(lambda: con.execute(
        f"SELECT count(*) FROM ducklake_list_files('lake', '{mid_table}', schema => '{mid_schema}', "
        f"snapshot_version => {back})").fetchall(), runs)
    # A filtered scan that runs to the end without opening a data file: c00 of file i lies in
    # [1000 i, 1000 i + 99] (the table's statistics span them all), so c00 = 1000 i + 500 is ruled out
    # file by file from the file statistics; its time is the catalog's part of a filtered scan.
    pruned = f"SELECT count(*) FROM lake.{mid_schema}.{mid_table}"
    some_file = con.execute(f"SELECT data_file_id FROM __ducklake_metadata_lake.ducklake_data_file "
                            f"WHERE table_id = {t['table_id'] + c['tables'] // 2} AND end_snapshot IS NULL "
                            "LIMIT 1").fetchone()[0]
    try:  # the oracle that pruning is per file: a value inside one file's range makes DuckDB open that file
        con.execute(f"{pruned} WHERE c00 = {some_file * 1000 + 5}").fetchall()
        raise AssertionError("a scan the file statistics do not rule out read no file")
    except Exception as exc:  # noqa: BLE001 - duckdb.IOException: the synthetic file does not exist
        assert "ducklake-" in str(exc), exc
    assert con.execute(f"{pruned} WHERE c00 = {some_file * 1000 + 500}").fetchone()[0] == 0
    figures["pruned_scan_s"] = _timed(lambda: con.execute(
        f"{pruned} WHERE c00 = {some_file * 1000 + 500}").fetchall(), runs)
    figures["time_travel_pruned_scan_s"] = _timed(lambda: con.execute(
        f"{pruned} AT (VERSION => {back}) WHERE c00 = {some_file * 1000 + 500}").fetchall(), runs)
    con.close()
    # maintenance: last, since it changes the catalog (a writable attach)
    con = _connect()
    _attach(con, data_path)
    cutoff = f"now() - INTERVAL {plan.retention_days} DAYS"
    t0 = time.perf_counter()
    expirable = con.execute(f"CALL ducklake_expire_snapshots('lake', dry_run => true, older_than => {cutoff})"
                            ).fetchall()
    figures["expire_dry_run_s"] = round(time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    con.execute(f"CALL ducklake_expire_snapshots('lake', older_than => {cutoff})").fetchall()
    figures["expire_s"] = round(time.perf_counter() - t0, 4)
    figures["expired_snapshots"] = len(expirable)
    t0 = time.perf_counter()
    scheduled = con.execute("CALL ducklake_cleanup_old_files('lake', dry_run => true, cleanup_all => true)").fetchall()
    figures["cleanup_dry_run_s"] = round(time.perf_counter() - t0, 4)
    figures["files_scheduled_for_deletion"] = len(scheduled)
    con.close()
    return figures


def step(plan: Plan, fraction: float, runs: int, log=print) -> dict[str, object]:
    c = plan.counts(fraction)
    log(f"  step {fraction:.0%} of 5 PB: {c['tables']:,} tables, {c['data_files']:,} data files, "
        f"{c['file_column_stats']:,} file column statistics, {c['snapshots']:,} snapshots")
    _fresh_database()
    data_path = tempfile.mkdtemp(prefix="onesource-scale-")
    template = make_template(plan, data_path)
    statements, last_id = _scale_sql(plan, fraction, template)
    build = {}
    with _psql(DATABASE) as pg:
        for what, sql in statements:
            t0 = time.perf_counter()
            pg.execute(sql)
            build[what] = round(time.perf_counter() - t0, 2)
    log(f"    built in {sum(build.values()):.0f} s ({build})")
    size = catalog_size()
    log(f"    catalog {size['database_bytes'] / 2**30:.2f} GiB ({', '.join(f'{k} {v / 2**20:.0f} MiB' for k, v in size.items() if k != 'database_bytes')})")
    try:
        figures = measure(plan, fraction, data_path, runs, last_id, template, log)
    finally:
        shutil.rmtree(data_path, ignore_errors=True)  # the template table's one real file
    log(f"    {json.dumps(figures)}")
    return {"fraction": fraction, "counts": c, "build_s": build, "size": size, "queries": figures,
            "load": _load()}


def _load() -> str:
    try:
        return ", ".join(Path("/proc/loadavg").read_text().split(" ", 3)[:3])
    except OSError:
        return "?"


def run(steps: list[float], runs: int = 3, log=print, plan: Plan | None = None, indexes: bool = True) -> dict:
    """Each step on a fresh database; ``indexes``: then the largest step again with :data:`INDEXES`."""
    plan = plan or Plan()
    log(f"  plan: {json.dumps(asdict(plan))}; full lake: {plan.live_files:,} live files, {plan.counts(1.0)}")
    results = [step(plan, f, runs, log) for f in steps]
    out = {"plan": asdict(plan), "steps": results}
    if indexes:
        out["indexed"] = {"fraction": steps[-1], **with_indexes(plan, steps[-1], runs, log)}
    return {"scale_sim": out}


def figures(result: dict, path: Path) -> dict[str, dict]:
    """`make bench`'s figures from the largest step (every step's figures go to ``path`` as JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    last = result["scale_sim"]["steps"][-1]
    at = f"at {last['fraction']:.0%} of 5 PB ({last['counts']['data_files']:,} files), host load {last['load']}"
    out = {"scale_catalog_gib": {"median": round(last["size"]["database_bytes"] / 2**30, 3), "unit": f"GiB {at}",
                                 "runs": 1}}
    for name, value in last["queries"].items():
        if name.endswith("_s"):
            value = value if isinstance(value, dict) else {"median": value, "min": value, "max": value}
            out[f"scale_{name[:-2]}_seconds"] = {**value, "unit": f"s {at}"}
    for name, value in result["scale_sim"].get("indexed", {}).items():
        if name.endswith("_s") and name != "index_build_s":
            value = value if isinstance(value, dict) else {"median": value, "min": value, "max": value}
            out[f"scale_indexed_{name[:-2]}_seconds"] = {**value, "unit": f"s with INDEXES {at}"}
    return out


INDEXES = (
    "CREATE INDEX IF NOT EXISTS onesource_data_file_table ON ducklake_data_file (table_id, begin_snapshot)",
    "CREATE INDEX IF NOT EXISTS onesource_file_column_stats_file ON ducklake_file_column_stats (data_file_id)",
    "CREATE INDEX IF NOT EXISTS onesource_file_column_stats_table ON ducklake_file_column_stats (table_id, column_id)",
)
"""What DuckLake does not create on a PostgreSQL catalog (it makes primary keys only) and a catalog past a
few hundred thousand files needs: a table's files, a file's statistics, a table's statistics by column."""


def with_indexes(plan: Plan, fraction: float, runs: int = 3, log=print) -> dict[str, object]:
    """On the catalog a step left (after its expiry), add :data:`INDEXES` and time again a table's file list,
    the pruned scan and one more expiry of the same span (the next ``expired_days`` of snapshots)."""
    c = plan.counts(fraction)
    build = {}
    with _psql(DATABASE) as pg:
        for sql in INDEXES:
            t0 = time.perf_counter()
            pg.execute(sql)
            build[sql.split()[5]] = round(time.perf_counter() - t0, 2)
        pg.execute("ANALYZE")
        tid = pg.execute("SELECT min(table_id) FROM ducklake_table").fetchone()[0]
        back = pg.execute("SELECT max(snapshot_id) FROM ducklake_snapshot").fetchone()[0] - \
            (plan.retention_days // 2) * c["tables"]
        some_file = pg.execute("SELECT min(data_file_id) FROM ducklake_data_file WHERE table_id = %s AND "
                               "end_snapshot IS NULL", [tid + c["tables"] // 2]).fetchone()[0]
    mid_table, mid_schema = f"t{(c['tables'] // 2):05d}", f"d{((c['tables'] // 2) % plan.departments):02d}"
    con = _connect()
    _attach(con, None, read_only=True)
    pruned = f"SELECT count(*) FROM lake.{mid_schema}.{mid_table} WHERE c00 = {some_file * 1000 + 500}"
    figures: dict[str, object] = {"index_build_s": build,
                                  "schema_listing_first_s": _first_schema_listing(mid_schema, runs)}
    figures["table_file_list_s"] = _timed(lambda: con.execute(
        f"SELECT count(*) FROM ducklake_list_files('lake', '{mid_table}', schema => '{mid_schema}')").fetchall(), runs)
    figures["pruned_scan_s"] = _timed(lambda: con.execute(pruned).fetchall(), runs)
    figures["time_travel_pruned_scan_s"] = _timed(lambda: con.execute(
        pruned.replace(" WHERE", f" AT (VERSION => {back}) WHERE")).fetchall(), runs)
    con.close()
    con = _connect()
    _attach(con, None)
    t0 = time.perf_counter()
    expired = con.execute("CALL ducklake_expire_snapshots('lake', older_than => now() - INTERVAL "
                          f"{plan.retention_days - plan.expired_days} DAYS)").fetchall()
    figures["expire_s"] = round(time.perf_counter() - t0, 4)
    figures["expired_snapshots"] = len(expired)
    con.close()
    figures["size"] = catalog_size()
    log(f"    with indexes: {json.dumps(figures)}")
    return figures


ROWS = (("catalog size (PostgreSQL database)", lambda s: f"{s['size']['database_bytes'] / 2**30:.2f} GiB"),
        ("build (INSERT ... SELECT)", lambda s: f"{sum(s['build_s'].values()):.0f} s"),
        ("ATTACH", lambda s: f"{s['queries']['attach_s']:.2f} s"),
        ("first query of a process (DuckDB's table listing)", lambda s: f"{s['queries']['first_table_listing_s']:.2f} s"))
QUERIES = (("a schema's tables (the platform's listing), first query of a process", "schema_listing_first_s"),
           ("table listing, warm", "table_listing_s"), ("current snapshot", "current_snapshot_s"),
           ("snapshot by time (ducklake_snapshots)", "snapshot_list_s"), ("a table's file list", "table_file_list_s"),
           ("its file list 45 days back", "time_travel_file_list_s"), ("filtered scan, pruned per file", "pruned_scan_s"),
           ("the same 45 days back", "time_travel_pruned_scan_s"), ("expire snapshots (dry run)", "expire_dry_run_s"),
           ("expire snapshots", "expire_s"), ("clean-up of old files (dry run)", "cleanup_dry_run_s"))


def markdown(result: dict) -> str:
    """The steps side by side, as docs/scale.md shows them (medians; one run for maintenance)."""
    steps = result["scale_sim"]["steps"]
    def cell(v):
        return "—" if v is None else f"{(v['median'] if isinstance(v, dict) else v):.3f} s"
    lines = ["| | " + " | ".join(f"{s['fraction'] * 100:g}%: {s['counts']['tables']:,} tables, "
                                 f"{s['counts']['data_files']:,} files" for s in steps) + " |",
             "| --- |" + " --- |" * len(steps)]
    lines += [f"| {label} | " + " | ".join(fn(s) for s in steps) + " |" for label, fn in ROWS]
    lines += [f"| {label} | " + " | ".join(cell(s["queries"].get(key)) for s in steps) + " |" for label, key in QUERIES]
    if "indexed" in result["scale_sim"]:
        ix = result["scale_sim"]["indexed"]
        lines.append(f"| with INDEXES, at {ix['fraction'] * 100:g}%: file list / pruned scan / 45 days back / expire | "
                     + " | ".join("" for _ in steps[:-1]) + ("| " if len(steps) > 1 else "")
                     + " / ".join(cell(ix[k]) for k in ("table_file_list_s", "pruned_scan_s", "time_travel_pruned_scan_s",
                                                         "expire_s")) + " |")
    lines.append("| host load (1, 5, 15 min) | " + " | ".join(str(s["load"]) for s in steps) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", default="0.01,0.03,0.1", help="fractions of the 5 PB lake, in order")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--indexes-only", type=float, default=None,
                   help="only add the indexes to the catalog a step of this fraction left, and time again")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = p.parse_args()
    if args.indexes_only:
        print(json.dumps(with_indexes(Plan(), args.indexes_only, args.runs), indent=1))
        return
    out = run([float(s) for s in args.steps.split(",")], args.runs)
    text = json.dumps(out, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)
    print(markdown(out))


if __name__ == "__main__":
    main()
