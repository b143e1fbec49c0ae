"""Publishing under query traffic: loads of a 1M-row dataset while departments query it.

A city's lake is read all day, so a load must publish while the servers answer queries, and no query may
fail because a load commits. Everything runs as the real processes: ``onesource serve`` (HTTP and the
Postgres wire) and ``onesource ingest`` for each load, each a fresh process.

* ``publish_under_load_ratio``: an ``onesource ingest`` of a new 1M-row extract while 32 clients (half
  HTTP, half the Postgres wire) query the same dataset, against the same load on the idle lake (the server
  running, nobody querying): median of paired runs. The issue's limit is 1.5x.
* ``pg_qps_under_load``: governed queries per second the wire clients got answered while loads ran.

The clients query as departments do (a small grouped count, a query now and then a full scan), each
waiting ``think`` seconds between its queries: 32 clients make about 60 queries/s, the traffic the issue
saw fail loads (16 clients, 40-66 queries/s). Every answer is checked; any error counts.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import figure

SMALL = "SELECT enterprise_status, count(*) AS n FROM shared.firms GROUP BY 1"
SCAN = "SELECT count(DISTINCT enterprise_name) AS names, sum(capital) AS capital FROM shared.firms"


@dataclass
class Home:
    """A home whose ``firms`` dataset is published, department users to query it, and extracts to load."""

    settings: object
    base: Path
    drops: Path
    users: list[tuple[str, str, str]] = field(default_factory=list)
    """(user, password, token): one per client, as each analyst signs in as themself (the servers' limits
    are per user)."""
    _made: int = 0

    def next_extract(self) -> Path:
        """A new extract (other bytes, so a new load): the base file's first 1M + k rows."""
        self._made += 1
        data = self.base.read_bytes()
        # cut after the (1M + k)-th data line (line 0 is the header)
        cut, pos = 1_000_000 + self._made, 0
        for _ in range(cut + 1):
            pos = data.index(b"\n", pos) + 1
        path = self.drops / f"firms-{self._made:03d}.csv"
        path.write_bytes(data[:pos])
        return path


def prepare(workdir: Path, csv: Path, clients: int = 32, name: str = "publish-home") -> Home:
    """A fresh home (in ``workdir``) with ``firms`` published once from ``csv`` (at least 1M + 20 rows), and a
    user for each of ``clients`` (departments tax and amr in turn)."""
    import shutil

    from lakehouse import Lake
    from onesource.config import Settings
    from sharing.users import create_user
    from tests.helpers import firms_dataset, write_registry

    root = workdir / name
    shutil.rmtree(root, ignore_errors=True)
    settings = Settings(home=root / "home", audit_key_file=root / "keys" / "audit.key")
    drops = settings.sources_dir / "amr" / "firms"
    drops.mkdir(parents=True)
    write_registry(settings.registry_dir, [firms_dataset(connector={"kind": "file", "path": "amr/firms/*.csv",
                                                                     "format": "csv"})])
    home = Home(settings, csv, drops)
    home.next_extract()
    out = ingest(settings)
    assert out.ok, out.output
    with Lake(settings.lake) as lake:
        for i in range(clients):
            user = f"analyst{i:02d}"
            home.users.append((user, *create_user(lake, ("tax", "amr")[i % 2], user)))
    return home


def write_csv(path: Path, rows: int) -> Path:
    """The benchmark's extract (valid credit codes, as bench.ingest writes them), ``rows`` rows."""
    from bench.common import run_child
    from bench.ingest import MAKE_CSV

    path.parent.mkdir(parents=True, exist_ok=True)
    run_child(MAKE_CSV + "\nprint('RESULT{}')", str(path), str(rows))
    return path


def env_of(settings) -> dict[str, str]:
    return {**os.environ, **settings.environ()}


@dataclass
class Ingest:
    seconds: float
    ok: bool
    output: str


def ingest(settings, timeout: float = 600) -> Ingest:
    """``onesource ingest firms`` as its own process, timed from start to exit."""
    os.sync()  # the extract just written: its write-back must not land in the load's clock
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "onesource.cli", "ingest", "firms"], env=env_of(settings),
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t
    output = proc.stdout + proc.stderr
    return Ingest(seconds, proc.returncode == 0 and "published" in output, output)


class Server:
    """``onesource serve`` on free ports, as a child process."""

    def __init__(self, settings):
        from tests.conftest import free_port
        from tests.helpers import wait_for_port

        self.http_port, self.pg_port = free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(self.http_port),
             "--pg-port", str(self.pg_port)], env=env_of(settings), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        wait_for_port(self.http_port, self.proc)
        wait_for_port(self.pg_port, self.proc)

    def stop(self) -> str:
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out or ""


@dataclass
class Traffic:
    """``clients`` threads querying the server, half over HTTP and half over the Postgres wire."""

    home: Home
    server: Server
    clients: int = 32
    think: float = 0.5
    scan_every: int = 50
    answered: dict[str, int] = field(default_factory=lambda: {"http": 0, "pg": 0})
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _window: dict[str, float] = field(default_factory=dict)

    def start(self) -> Traffic:
        for i in range(self.clients):
            target = self._http if i % 2 == 0 else self._pg
            th = threading.Thread(target=self._guard, args=(target, i), name=f"client-{i}", daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=60)

    def mark(self) -> dict[str, int]:
        """The counts so far (to measure a window)."""
        with self._lock:
            return dict(self.answered)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.answered[kind] += 1

    def _fail(self, text: str) -> None:
        with self._lock:
            self.errors.append(text[:500])

    def _guard(self, target, i: int) -> None:
        try:
            target(i)
        except Exception as exc:  # a client that dies is an error too
            self._fail(f"client {i}: {type(exc).__name__}: {exc}")

    def _sql(self, n: int) -> str:
        return SCAN if self.scan_every and n % self.scan_every == self.scan_every - 1 else SMALL

    def _pause(self, i: int, n: int) -> None:
        # spread the clients' queries over time (not all at once), about `think` seconds apart
        self._stop.wait(self.think * (0.5 + ((i * 7919 + n * 104729) % 1000) / 1000))

    def _http(self, i: int) -> None:
        import httpx

        url = f"http://127.0.0.1:{self.server.http_port}/api/v1/query"
        headers = {"Authorization": f"Bearer {self.home.users[i][2]}"}
        with httpx.Client(timeout=120) as client:
            n = 0
            while not self._stop.is_set():
                try:
                    r = client.post(url, json={"sql": self._sql(n), "purpose": "bench"}, headers=headers)
                    if r.status_code != 200 or not r.json().get("rows"):
                        self._fail(f"HTTP {r.status_code}: {r.text}")
                    else:
                        self._count("http")
                except httpx.HTTPError as exc:
                    self._fail(f"HTTP client: {type(exc).__name__}: {exc}")
                n += 1
                self._pause(i, n)

    def _pg(self, i: int) -> None:
        import psycopg

        user, password, _ = self.home.users[i]
        dsn = (f"host=127.0.0.1 port={self.server.pg_port} dbname=onesource user={user} password={password} "
               "connect_timeout=60")
        n = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    while not self._stop.is_set():
                        rows = conn.execute(self._sql(n)).fetchall()
                        if not rows:
                            self._fail("wire: no rows")
                        else:
                            self._count("pg")
                        n += 1
                        self._pause(i, n)
            except psycopg.Error as exc:
                self._fail(f"wire: {type(exc).__name__}: {exc}")
                n += 1
                self._pause(i, n)


def run(csv: Path, workdir: Path, runs: int = 3, clients: int = 32, think: float = 0.5, log=print) -> dict:
    """Paired runs: a load on the idle lake, then a load while ``clients`` query; the median ratio."""
    import resource

    home = prepare(workdir, csv, clients)
    server = Server(home.settings)
    idle, busy, ratios, qps, failed = [], [], [], [], []
    try:
        for i in range(runs):
            home.next_extract()
            quiet = ingest(home.settings)
            if not quiet.ok:
                failed.append(quiet.output)
            traffic = Traffic(home, server, clients=clients, think=think).start()
            time.sleep(2)  # the clients are signed in and querying
            home.next_extract()
            before, t = traffic.mark(), time.perf_counter()
            loaded = ingest(home.settings)
            window, after = time.perf_counter() - t, traffic.mark()
            traffic.stop()
            if not loaded.ok:
                failed.append(loaded.output)
            idle.append(quiet.seconds)
            busy.append(loaded.seconds)
            ratios.append(loaded.seconds / quiet.seconds)
            qps.append((after["pg"] - before["pg"]) / window)
            total = sum(after.values()) - sum(before.values())
            log(f"  run {i + 1}/{runs}: idle {quiet.seconds:.2f} s, under load {loaded.seconds:.2f} s "
                f"-> {ratios[-1]:.2f}x; {total / window:.0f} queries/s answered meanwhile "
                f"({qps[-1]:.0f}/s on the wire), {len(traffic.errors)} client error(s)")
            for text, n in Counter(e.split(":")[0] + ": " + e[:160] for e in traffic.errors).most_common(5):
                log(f"    {n} x {text}")
            failed += traffic.errors
    finally:
        server.stop()
    if failed:
        raise RuntimeError(f"{len(failed)} failure(s) under load; first: {failed[0][-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    log(f"  publish under load: median {statistics.median(ratios):.2f}x (idle {statistics.median(idle):.2f} s, "
        f"under load {statistics.median(busy):.2f} s); wire {statistics.median(qps):.0f} queries/s under load")
    return {
        "publish_under_load_ratio": {**figure(ratios, "x the same load on an idle lake", peak),
                                     "idle_seconds": round(statistics.median(idle), 3),
                                     "under_load_seconds": round(statistics.median(busy), 3),
                                     "clients": clients, "think_seconds": think},
        "pg_qps_under_load": {**figure(qps, "queries/s on the wire while a load runs", peak),
                              "clients": clients // 2},
    }
