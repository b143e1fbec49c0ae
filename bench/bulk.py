"""Bulk reads: a million governed rows into a pandas DataFrame over HTTP, against DuckDB's own ``fetch_df``.

``bulk_read_ratio``: the median time for ``SELECT * FROM shared.firms`` (1M rows, 6 columns) to become a
pandas DataFrame in a client of ``onesource serve``, over the fastest endpoint (HTTP with a department's
token, ``Accept: application/vnd.apache.arrow.stream``, read from the socket with
``pyarrow.ipc.open_stream(response).read_pandas()``), divided by the median time DuckDB takes to run the same
query on the same lake in this process and hand it over with ``fetch_df()``. The runs are interleaved (a
shared host's speed drifts between two blocks of runs). Everything governance does is in the HTTP time:
the token, planning, the policy relation, the audit entry, the Arrow IPC stream. Target: at most 2.0.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.common import figure, run_child

QUERY = "SELECT * FROM shared.firms"
ROWS = 1_000_000


def _home(workdir: Path):
    """The governed-SQL benchmark's lake of 1M firms (bench/sql.py), its extract written first if missing."""
    from bench import sql
    from bench.ingest import MAKE_CSV

    csv = workdir / f"firms_{ROWS}.csv"
    if not csv.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        run_child(MAKE_CSV + "\nprint('RESULT{}')", str(csv), str(ROWS))
    return sql.lake_home(workdir, csv)


def _token(settings) -> str:
    from lakehouse import Lake
    from sharing.users import create_user

    with Lake(settings.lake) as lake:
        return create_user(lake, "tax", "bench_bulk")[1]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(settings, log_path: Path) -> tuple[subprocess.Popen, int]:
    import socket

    http_port, pg_port = _free_port(), _free_port()
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(http_port),
                             "--pg-port", str(pg_port)], env={**os.environ, "ONESOURCE_HOME": str(settings.home)},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
            return proc, http_port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"onesource serve did not start; see {log_path}")


def _over_http(port: int, token: str):
    import pyarrow as pa

    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/query",
                                     data=json.dumps({"sql": QUERY, "purpose": "bench"}).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                              "Accept": "application/vnd.apache.arrow.stream"}, method="POST")
    with urllib.request.urlopen(request, timeout=300) as response:
        return pa.ipc.open_stream(response).read_pandas()


def run(workdir: Path, runs: int = 5, log=print) -> dict:
    import resource

    from lakehouse import Lake

    settings = _home(workdir)
    token = _token(settings)
    proc, port = _serve(settings, workdir / "bulk-serve.log")
    try:
        with Lake(settings.lake, read_only=True) as lake:
            lake.con.execute("SET enable_progress_bar = false")  # it prints, and costs time, in a terminal
            direct = lambda: lake.con.execute("SELECT * FROM lake.shared.firms").fetch_df()  # noqa: E731
            governed = lambda: _over_http(port, token)  # noqa: E731
            first, mine = direct(), governed()  # warm both (the server's slots, the file cache), and check
            assert len(first) == len(mine) == ROWS and list(first.columns) == list(mine.columns), \
                (len(first), len(mine), list(mine.columns))
            del first, mine
            times: dict[str, list[float]] = {"direct": [], "http": []}
            for _ in range(runs):
                for name, fn in (("direct", direct), ("http", governed)):
                    started = time.perf_counter()
                    frame = fn()
                    times[name].append(time.perf_counter() - started)
                    del frame
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ratios = [h / d for h, d in zip(times["http"], times["direct"], strict=True)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = statistics.median(times["http"]) / statistics.median(times["direct"])
    log(f"  1M rows to pandas: HTTP Arrow IPC {statistics.median(times['http']):.2f} s, DuckDB fetch_df "
        f"{statistics.median(times['direct']):.2f} s (medians of {runs}), ratio {ratio:.2f} (target <= 2.0)")
    out = {"bulk_read_ratio": figure(ratios, "x", peak),
           "bulk_read_http_seconds": figure(times["http"], "s", peak),
           "bulk_read_direct_seconds": figure(times["direct"], "s", peak)}
    out["bulk_read_ratio"]["median"] = round(ratio, 4)  # the ratio of the medians (each pair's ratio: min, max)
    return out
