"""`onesource sql --as DEPT` from a shell: how long a department analyst waits for a small governed query.

* ``cli_query_seconds``: wall time of ``onesource sql --as tax "SELECT ... FROM shared.firms LIMIT 5"``, each
  run a fresh process of the installed console script (interpreter start, imports, settings, the registry,
  opening the lake, planning, running, the audit append, printing), on a lake prepared once; the median of
  ``runs`` after one warm-up run (the first open of a lake by a new installation has DuckDB check the
  extensions' signatures, core.duck). Also reported: ``cli_query_cpu_seconds``, the CPU the same runs
  used (user + system), steadier than wall time on a shared host.

The phases are printed too, measured in one more fresh process that times the same command's steps by
wrapping them (a step that was renamed is left out, never guessed). Bytecode of the project's packages is
compiled first, as ``make setup`` leaves an installation: a stale ``.pyc`` would make this figure measure
Python compiling an edited module instead.
"""

from __future__ import annotations

import compileall
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import figure

QUERY = "SELECT uscc, enterprise_name, staff FROM shared.firms ORDER BY uscc LIMIT 5"
DEPARTMENT = "tax"
PACKAGES = ("onesource", "connectors", "schemas", "quality", "lakehouse", "sharing", "metrics", "portal")

# Timed in the phases' process, by wrapping (what, module, attribute path): each step's own time, in order.
STEPS = (
    ("registry (JSON cache)", "schemas", "load_registry"),
    ("open lake (LOAD, ATTACH)", "lakehouse.lake", "Lake.__init__"),
    ("grants", "sharing.engine", "active_grants"),
    ("plan", "sharing.engine", "GovernedEngine._plan"),
    ("run", "sharing.engine", "GovernedEngine._run"),
    ("audit", "sharing.engine", "GovernedEngine._record"),
    ("print", "onesource.cli", "_print_result"),
)

PHASES_CHILD = r"""
import contextlib, importlib, io, json, sys, time
clock = lambda: (time.perf_counter(), time.process_time())
t0 = clock()
import onesource.cli as cli
t_cli = clock()
import sharing.engine, schemas  # the stage `onesource sql --as` imports in its handler
t_stage = clock()
spent = {}

def wrap(what, owner, name):
    fn = getattr(owner, name)

    def timed(*args, **kwargs):
        start = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            end, had = clock(), spent.get(what, (0.0, 0.0))
            spent[what] = (had[0] + end[0] - start[0], had[1] + end[1] - start[1])
    setattr(owner, name, timed)

for what, module, path in json.loads(sys.argv[1]):
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    try:
        for part in parents:
            owner = getattr(owner, part)
        getattr(owner, name)
    except AttributeError:
        continue
    wrap(what, owner, name)
start = clock()
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = cli.main(sys.argv[2:])
end = clock()
assert code == 0, out.getvalue()
span = lambda a, b: (b[0] - a[0], b[1] - a[1])
total = span(start, end)
phases = {"import onesource.cli": span(t0, t_cli), "import the engine (sqlglot, duckdb)": span(t_cli, t_stage),
          **spent, "other (settings, home checks, engine set-up)": tuple(
              total[i] - sum(v[i] for v in spent.values()) for i in (0, 1))}
print("RESULT" + json.dumps(phases))
"""


def _home(workdir: Path):
    from core.config import Settings
    from ingest import run_dataset
    from schemas import load_registry
    from tests.helpers import csv_text, drop, write_registry

    settings = Settings(home=workdir / "cli-home")
    if not (settings.home / "ready").exists():
        write_registry(settings.registry_dir)
        drop(settings, "amr/firms/a.csv", csv_text())
        [result] = run_dataset(settings, load_registry(settings.registry_dir), "firms", os.environ)
        assert result.status == "published", result.message
        (settings.home / "ready").write_text(str(result.rows))
    return settings


def _console_script() -> str:
    script = Path(sys.executable).with_name("onesource")
    if not script.exists():
        raise RuntimeError(f"no console script at {script}: run `make setup`")
    return str(script)


def _timed_run(argv: list[str], env: dict, expect: str = "row(s)") -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one fresh process, which must succeed printing ``expect``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or expect not in proc.stdout:
        raise RuntimeError(f"{argv[1:]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _phases(env: dict, argv: list[str]) -> dict[str, list[float]]:
    """Each step's (wall, CPU) seconds in one fresh process."""
    proc = subprocess.run([sys.executable, "-c", PHASES_CHILD, json.dumps(STEPS), *argv], env=env,
                          capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"phases child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(line.removeprefix("RESULT"))


def run(workdir: Path, runs: int = 15, log=print) -> dict:
    for package in PACKAGES:  # as `make setup` leaves an installation (quiet: only stale files are compiled)
        compileall.compile_dir(Path(__file__).resolve().parent.parent / package, quiet=1, workers=0)
    settings = _home(workdir)
    env = {**os.environ, "ONESOURCE_HOME": str(settings.home)}
    argv = [_console_script(), "sql", "--as", DEPARTMENT, QUERY]
    _timed_run(argv, env)  # warm-up: extension signatures checked once, the registry cached, files in memory
    start_only = [_timed_run([sys.executable, "-c", "print()"], env, "")[0] for _ in range(5)]
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = _timed_run(argv, env)
        walls.append(wall)
        cpus.append(cpu)
    load = os.getloadavg()[0]
    log(f"  onesource sql --as {DEPARTMENT} (LIMIT 5): median {statistics.median(walls):.3f} s wall "
        f"(min {min(walls):.3f}, max {max(walls):.3f}), {statistics.median(cpus):.3f} s CPU; "
        f"a bare Python start takes {statistics.median(start_only):.3f} s; load average {load:.1f} on "
        f"{os.cpu_count()} cores")
    phases = _phases(env, ["sql", "--as", DEPARTMENT, QUERY])
    log(f"    {'phase':<45} {'wall ms':>8} {'CPU ms':>8}")
    for what, (wall, cpu) in phases.items():
        log(f"    {what:<45} {wall * 1000:8.1f} {cpu * 1000:8.1f}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "cli_query_seconds": {**figure(walls, "s wall per `onesource sql --as` (small query)", peak),
                              "load_average": round(load, 2),
                              "phases_ms_wall_cpu": {k: [round(x * 1000, 1) for x in v] for k, v in phases.items()}},
        "cli_query_cpu_seconds": figure(cpus, "s CPU per `onesource sql --as` (small query)", peak),
    }
