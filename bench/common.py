"""Shared pieces of the benchmarks: runs in fresh processes, medians, peak memory, the results file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def hardware() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def run_child(code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` in a fresh Python; it prints one JSON line starting with RESULT (incl. peak_rss_mb)."""
    # The ingest runs write ~0.5 GB each: flush it first, or its write-back lands in the next run's clock
    # (measured: runs alternating 4.4 s and 5.5 s without this).
    os.sync()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(line.removeprefix("RESULT"))


PEAK_RSS = "import resource; peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024"


def figure(values: list[float], unit: str, peak_rss_mb: float) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "unit": unit, "runs": len(values), "peak_rss_mb": round(peak_rss_mb, 1)}


def write_results(home: Path, figures: dict[str, dict[str, Any]]) -> Path:
    """Merge ``figures`` into $ONESOURCE_HOME/bench/results.json (other benchmarks' figures are kept)."""
    path = home / "bench" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {"figures": {}}
    data["hardware"] = hardware()
    data["figures"].update(figures)
    path.write_text(json.dumps(data, indent=2))
    return path
