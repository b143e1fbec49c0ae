"""`make bench` / `python -m bench [--rows N] [--runs N]`: run the benchmarks, print ratios, save JSON."""

from __future__ import annotations

import argparse
import json

from bench import ingest
from bench.common import hardware, write_results
from onesource.config import Settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the CSV extract (issue target: 5,000,000)")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    settings = Settings.from_env()
    print(f"OneSource benchmarks on {hardware()}")
    print("ingest: CSV -> land -> standardize -> validate (GX) -> publish (DuckLake), vs raw DuckDB COPY to Parquet")
    figures = ingest.run(args.rows, args.runs, settings.home / "bench" / "work")
    path = write_results(settings.home, figures)
    print(json.dumps({k: {"median": v["median"], "unit": v["unit"]} for k, v in figures.items()}, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
