"""A killed extract's scratch file (records in clear, in the landing zone) is removed by the next extract."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from connectors.landing import FOREIGN_SCRATCH_HOURS, SCRATCH, Landing, _host


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_extract_removes_scratch_files_whose_writer_is_gone(tmp_path):
    zone = Landing(tmp_path / "landing")
    folder = tmp_path / "landing" / "amr_firms"
    folder.mkdir(parents=True)
    dead = folder / f"{SCRATCH}{_host()}-{_dead_pid()}-abc123.ndjson"
    live = folder / f"{SCRATCH}{_host()}-{os.getpid()}-def456.ndjson"  # an extract of this process, running
    foreign_old = folder / f"{SCRATCH}otherhost-12-ghi789.parquet"
    foreign_new = folder / f"{SCRATCH}otherhost-13-jkl012.parquet"
    unnamed_old = folder / f"{SCRATCH}mno345.parquet"  # the earlier naming: host and process unknown
    for path in (dead, live, foreign_old, foreign_new, unnamed_old):
        path.write_text('{"id": "430104199001011234"}\n')
    old = time.time() - FOREIGN_SCRATCH_HOURS * 3600 - 60
    for path in (foreign_old, unnamed_old):
        os.utime(path, (old, old))
    landed = folder / ("0" * 64 + ".csv")
    landed.write_text("kept")

    fresh = zone.scratch("amr_firms", ".ndjson")

    assert fresh.exists() and fresh.name.startswith(f"{SCRATCH}{_host()}-{os.getpid()}-")
    assert not dead.exists() and not foreign_old.exists() and not unnamed_old.exists()
    assert live.exists() and foreign_new.exists() and landed.exists()


def test_a_killed_loads_copy_into_the_landing_zone_is_removed_by_the_next_landing(tmp_path):
    """A load killed while copying an extract in left ``.landing-*`` (the whole extract, in clear) for good: found
    by an outside reliability test. Copies are now named by host and process, and swept like scratch files."""
    from connectors.landing import COPYING

    zone = Landing(tmp_path / "landing")
    folder = tmp_path / "landing" / "amr_firms"
    folder.mkdir(parents=True)
    dead = folder / f"{COPYING}{_host()}-{_dead_pid()}-abc123"
    live = folder / f"{COPYING}{_host()}-{os.getpid()}-def456"  # a copy of this process, still being written
    unnamed_old = folder / f"{COPYING}lkqfgfvp"  # the earlier naming: host and process unknown
    unnamed_new = folder / f"{COPYING}qwertyui"
    for path in (dead, live, unnamed_old, unnamed_new):
        path.write_text("统一社会信用代码,企业名称\n")
    old = time.time() - FOREIGN_SCRATCH_HOURS * 3600 - 60
    os.utime(unnamed_old, (old, old))
    src = tmp_path / "extract.csv"
    src.write_text("a,b\n1,2\n")

    landed, sha = zone.land_file("amr_firms", src, "csv", "extract.csv")

    assert landed.read_text() == "a,b\n1,2\n" and landed.name == f"{sha}.csv"
    assert not dead.exists() and not unnamed_old.exists()
    assert live.exists() and unnamed_new.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(COPYING) and p not in (live, unnamed_new)]


@pytest.mark.parametrize("hashed, when", [(True, "during its copy"), (False, "during its copy"),
                                          (False, "during its hash")],
                         ids=["hashed before, gone during its copy", "gone during its copy beside its hash",
                              "gone during its hash beside its copy"])
def test_a_file_gone_while_it_lands_is_refused_and_its_copy_removed(tmp_path, monkeypatch, hashed, when):
    """Every way out of landing a file removes the copy that did not become the raw file: here the source
    goes away mid-landing (the load is then retried, naming the file)."""
    import connectors.landing as landing
    from connectors import SourceUnavailableError
    from connectors.landing import COPYING, sha256_file

    zone = Landing(tmp_path / "landing")
    src = tmp_path / "extract.csv"
    src.write_text("a,b\n1,2\n")
    sha = sha256_file(src) if hashed else None
    if when == "during its copy":
        real_copy = Landing.copy
        monkeypatch.setattr(Landing, "copy", staticmethod(lambda s, folder: (real_copy(s, folder), s.unlink())[0]))
    else:
        real_hash = landing.sha256_file
        monkeypatch.setattr(landing, "sha256_file", lambda p: (time.sleep(0.2), p.unlink(), real_hash(p))[2])
    with pytest.raises(SourceUnavailableError, match="went away while it was being landed"):
        zone.land_file("amr_firms", src, "csv", "extract.csv", sha256=sha)
    assert not [p.name for p in (tmp_path / "landing").rglob(f"{COPYING}*")]
