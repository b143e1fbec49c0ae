"""`make bench` / `python -m bench [--rows N] [--runs N]`: run the benchmarks, print ratios, save JSON."""

from __future__ import annotations

import argparse
import json

from bench import bulk, cli, dagbag, delivery, ingest, kpi, publish, quality, scale_sim, security, sql, tpch
from bench.common import hardware, write_results
from core.config import Settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=5_000_000, help="rows of the CSV extract (the issue measures 5M)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quality-rows", type=int, default=2_000_000, help="rows of the validated batch")
    p.add_argument("--quality-runs", type=int, default=5)
    p.add_argument("--kpi-runs", type=int, default=3)
    p.add_argument("--publish-runs", type=int, default=3, help="idle/under-load pairs of the publish benchmark")
    p.add_argument("--cli-runs", type=int, default=15, help="fresh `onesource sql --as` processes timed")
    p.add_argument("--bulk-runs", type=int, default=5, help="interleaved pairs of 1M-row reads (HTTP, DuckDB)")
    p.add_argument("--tpch-sf", type=float, default=1.0, help="TPC-H scale factor (generated once, then cached)")
    p.add_argument("--tpch-runs", type=int, default=3, help="runs of each TPC-H query per side")
    p.add_argument("--delivery-runs", type=int, default=5, help="runs of a 1%% change of 1M rows delivered to PostgreSQL")
    p.add_argument("--security-runs", type=int, default=3, help="who-saw runs over 10,000 audited queries")
    p.add_argument("--only", choices=["ingest", "quality", "sql", "tpch", "publish", "kpi", "dagbag", "cli", "bulk",
                                      "delivery", "security", "scale", "cityday"], default=None,
                   help="one benchmark; `scale` (the 5 PB catalog simulation on PostgreSQL) runs only when named")
    p.add_argument("--scale-steps", default="0.01,0.03,0.1", help="fractions of the 5 PB lake the simulation builds")
    p.add_argument("--cityday-datasets", type=int, default=2000,
                   help="datasets of the city's day (87 departments; the full city is 2,000)")
    p.add_argument("--cityday-large", type=int, default=5, help="datasets of millions of rows in that day")
    p.add_argument("--cityday-large-rows", type=int, default=2_000_000)
    p.add_argument("--cityday-parallelism", type=int, default=2, help="loads at once (one per core)")
    args = p.parse_args()
    settings = Settings.from_env()
    print(f"OneSource benchmarks on {hardware()}")
    work = settings.home / "bench" / "work"
    figures = {}
    if args.only in (None, "ingest"):
        print("ingest: CSV -> land -> standardize -> validate (GX) -> publish (DuckLake), vs raw DuckDB COPY to Parquet"
              " and vs pandas read_csv + GX's pandas engine + pyarrow Parquet (the peer)")
        figures.update(ingest.run(args.rows, args.runs, work, peer=True))
    if args.only in (None, "sql"):
        print("governed SQL: the governance layer vs the same final SQL on DuckDB; Postgres-wire throughput")
        csv = work / "firms_1000000.csv"
        if not csv.exists():
            ingest.run(1_000_000, 1, work)  # writes the 1M-row extract the SQL benchmark loads
        figures.update(sql.run(csv, work))
    if args.only in (None, "cli"):
        print("CLI: `onesource sql --as DEPT` on a small query, each a fresh process (start, imports, lake, audit)")
        figures.update(cli.run(work, runs=args.cli_runs))
    if args.only in (None, "tpch"):
        print("TPC-H: the 22 queries through the governed engine, vs DuckDB on the same lake")
        figures.update(tpch.run(work, sf=args.tpch_sf, runs=args.tpch_runs))
    if args.only in (None, "bulk"):
        print("bulk reads: 1M governed rows to pandas over HTTP (Arrow IPC), vs DuckDB's fetch_df on the same lake")
        figures.update(bulk.run(work, runs=args.bulk_runs))
    if args.only in (None, "publish"):
        print("publish under load: a 1M-row load while 32 clients query over HTTP and the wire, vs the idle lake")
        csv = work / "firms_1000050.csv"
        if not csv.exists():
            publish.write_csv(csv, 1_000_050)
        figures.update(publish.run(csv, work, runs=args.publish_runs))
    if args.only in (None, "quality"):
        print("quality: the full GX suite on a staged batch, vs the same checks as hand-written DuckDB SQL")
        figures.update(quality.run(args.quality_rows, args.quality_runs, work))
    if args.only in (None, "kpi"):
        print("KPIs: every sharing KPI for 87 departments, 2,000 datasets, 10M audit events")
        figures.update(kpi.run(args.kpi_runs, work))
    if args.only in (None, "dagbag"):
        print("DAG parsing: the whole DagBag for 87 departments and 2,000 datasets")
        figures.update(dagbag.run(3, work))
    if args.only in (None, "delivery"):
        print("subscriptions: a 1% change of a 1M-row dataset delivered to a PostgreSQL subscriber, vs psycopg COPY")
        figures.update(delivery.run(work, runs=args.delivery_runs))
    if args.only in (None, "security"):
        print("security: who saw one resident's record, replaying 10,000 audited queries of its dataset")
        figures.update(security.run(work, runs=args.security_runs))
    if args.only == "scale":
        print("catalog at scale: a 5 PB lake's DuckLake catalog on PostgreSQL, the platform's queries through DuckDB")
        figures.update(scale_sim.figures(scale_sim.run([float(x) for x in args.scale_steps.split(",")]),
                                         settings.home / "bench" / "scale_sim.json"))
    if args.only in (None, "cityday"):
        from bench import cityday

        print("a city's day: every dataset of a city loaded once by its daily DAG under a real Airflow scheduler"
              " (LocalExecutor, PostgreSQL metadata and catalog)")
        figures.update(cityday.run(work, args.cityday_datasets, args.cityday_large, args.cityday_large_rows,
                                   parallelism=args.cityday_parallelism))
    path = write_results(settings.home, figures)
    print(json.dumps({k: {"median": v["median"], "unit": v["unit"]} for k, v in figures.items()}, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
