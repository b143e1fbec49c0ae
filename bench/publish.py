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

    from core.config import Settings
    from lakehouse import Lake
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


class CpuWatch:
    """How much of the machine's CPU went to *other* processes over a window: everything busy in
    ``/proc/stat`` minus this process, its waited-for children (the load) and the server. A shared host
    (other users' test runs) slows a load by its own share, whatever the lake does: such a window does not
    measure the lake, and is measured again."""

    def __init__(self, server_pid: int | None = None):
        self.server_pid = server_pid
        self.start = self._now()
        self.wall = time.perf_counter()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    def _mine(self) -> float:
        import resource

        used = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                   for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        if self.server_pid:
            try:
                with open(f"/proc/{self.server_pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                used += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return used

    def _now(self) -> tuple[float, float]:
        return self._busy(), self._mine()

    def foreign(self) -> float:
        """The share of the machine (0 to 1) other processes used since the start."""
        busy, mine = self._now()
        window = (time.perf_counter() - self.wall) * (os.cpu_count() or 1)
        return max(0.0, ((busy - self.start[0]) - (mine - self.start[1])) / window) if window > 0 else 0.0


@dataclass
class Ingest:
    seconds: float
    ok: bool
    output: str
    foreign: float = 0.0
    """Share of the machine other processes used meanwhile (CpuWatch)."""


def ingest(settings, timeout: float = 600, server_pid: int | None = None) -> Ingest:
    """``onesource ingest firms`` as its own process, timed from start to exit."""
    os.sync()  # the extract just written: its write-back must not land in the load's clock
    watch = CpuWatch(server_pid)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "onesource.cli", "ingest", "firms"], env=env_of(settings),
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t
    output = proc.stdout + proc.stderr
    return Ingest(seconds, proc.returncode == 0 and "published" in output, output, watch.foreign())


class Server:
    """``onesource serve`` on free ports, as a child process in a session of its own, as a service runs (a
    systemd unit, or another terminal than the loads'): the kernel then shares the CPU between the server and
    a load as between two programs (Linux's per-session scheduling groups), not thread by thread, where the
    server's dozens of threads would outweigh a load's few. ``own_session=False``: in this process's session."""

    def __init__(self, settings, own_session: bool = True):
        from tests.helpers import free_port, wait_for_port

        self.http_port, self.pg_port = free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onesource.cli", "serve", "--http-port", str(self.http_port),
             "--pg-port", str(self.pg_port)], env=env_of(settings), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=own_session)
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


@dataclass
class Pair:
    """One measurement: the same load on the idle lake, then while the clients query."""

    idle: Ingest
    busy: Ingest
    answered: float
    """Queries per second answered (both endpoints) while the busy load ran."""
    wire: float
    """Of those, on the Postgres wire."""
    errors: list[str]

    @property
    def ratio(self) -> float:
        return self.busy.seconds / self.idle.seconds

    @property
    def foreign(self) -> float:
        return max(self.idle.foreign, self.busy.foreign)

    def __str__(self) -> str:
        return (f"idle {self.idle.seconds:.2f} s, under load {self.busy.seconds:.2f} s -> {self.ratio:.2f}x; "
                f"{self.answered:.0f} queries/s answered meanwhile ({self.wire:.0f}/s on the wire), "
                f"{len(self.errors)} client error(s); other processes took {self.foreign:.0%} of the machine")


QUIET = 0.10
"""A pair is measured again when other processes took more than this share of the machine (a shared host)."""


def pair(home: Home, server: Server, clients: int = 32, think: float = 0.5) -> Pair:
    home.next_extract()
    idle = ingest(home.settings, server_pid=server.proc.pid)
    traffic = Traffic(home, server, clients=clients, think=think).start()
    try:
        time.sleep(2)  # the clients are signed in and querying
        home.next_extract()
        before, t = traffic.mark(), time.perf_counter()
        busy = ingest(home.settings, server_pid=server.proc.pid)
        window, after = time.perf_counter() - t, traffic.mark()
    finally:
        traffic.stop()
    return Pair(idle, busy, (sum(after.values()) - sum(before.values())) / window,
                (after["pg"] - before["pg"]) / window, list(traffic.errors))


def measure(home: Home, server: Server, runs: int, clients: int = 32, think: float = 0.5, attempts: int | None = None,
            log=print) -> tuple[list[Pair], list[Pair]]:
    """Up to ``attempts`` pairs until ``runs`` were measured on a quiet machine: (quiet pairs, all pairs)."""
    done: list[Pair] = []
    for _ in range(attempts or runs * 3):
        done.append(pair(home, server, clients, think))
        quiet = [p for p in done if p.foreign <= QUIET]
        log(f"  pair {len(done)}: {done[-1]}" + ("" if done[-1].foreign <= QUIET else " (busy host: measured again)"))
        for text, n in Counter(e.split(":")[0] + ": " + e[:160] for e in done[-1].errors).most_common(5):
            log(f"    {n} x {text}")
        if len(quiet) >= runs or not done[-1].idle.ok or not done[-1].busy.ok or done[-1].errors:
            break
    return [p for p in done if p.foreign <= QUIET], done


def run(csv: Path, workdir: Path, runs: int = 3, clients: int = 32, think: float = 0.5, log=print) -> dict:
    """Paired runs: a load on the idle lake, then a load while ``clients`` query; the median ratio of the pairs
    measured while no other process took more than :data:`QUIET` of the machine."""
    import resource

    home = prepare(workdir, csv, clients)
    server = Server(home.settings)
    try:
        quiet, done = measure(home, server, runs, clients, think, log=log)
    finally:
        server.stop()
    failed = [p.idle.output for p in done if not p.idle.ok] + [p.busy.output for p in done if not p.busy.ok]
    failed += [e for p in done for e in p.errors]
    if failed:
        raise RuntimeError(f"{len(failed)} failure(s) under load; first: {failed[0][-2000:]}")
    used = quiet or done  # a host that never went quiet: every pair, and the figure says so
    ratios = [p.ratio for p in used]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    idle = statistics.median(p.idle.seconds for p in used)
    busy = statistics.median(p.busy.seconds for p in used)
    log(f"  publish under load: median {statistics.median(ratios):.2f}x (idle {idle:.2f} s, under load {busy:.2f} s); "
        f"wire {statistics.median(p.wire for p in used):.0f} queries/s under load"
        + ("" if quiet else "; the host never went quiet: figures include other processes' load"))
    return {
        "publish_under_load_ratio": {**figure(ratios, "x the same load on an idle lake", peak),
                                     "idle_seconds": round(idle, 3), "under_load_seconds": round(busy, 3),
                                     "answered_qps": round(statistics.median(p.answered for p in used), 1),
                                     "clients": clients, "think_seconds": think,
                                     "other_processes_share": round(max(p.foreign for p in used), 3),
                                     "quiet_host": bool(quiet)},
        "pg_qps_under_load": {**figure([p.wire for p in used], "queries/s on the wire while a load runs", peak),
                              "clients": clients // 2},
    }
