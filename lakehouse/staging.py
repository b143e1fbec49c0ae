"""The staging area: each load's scratch files, and the sweep that removes those no live load owns.

A load with id ``L`` of dataset ``D`` keeps ``staging/D/L.parquet`` (the staged batch),
``L.filled.parquet`` and ``L.keys/`` (the authorities' keys of its reference checks) while it runs, and
removes them when it ends. A load that is killed (SIGKILL, OOM, a lost machine) cannot: its files would stay
forever. So every load also holds ``staging/D/L.lock`` with an exclusive ``flock`` for as long as it runs,
and the kernel releases that lock however the process ends. :func:`sweep` (at the start of every load, and in
maintenance) removes a load's entries only when nobody holds its lock *and* the newest of them is older than
:data:`GRACE`: the age covers the instant between a load creating its lock file and locking it, and the
entries of a version that took no locks. Loads of other datasets, in other processes, are never touched:
they hold their locks. (``flock`` locks are per open file, so they do not meet SQLite's POSIX locks in the
same process.)

>>> with claim(settings.staging_dir, "firms", load_id):
...     ...  # standardize, validate, publish
>>> sweep(settings.staging_dir)   # what killed loads left behind
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GRACE = dt.timedelta(minutes=15)
"""How old an unowned staging entry must be before a sweep removes it."""
LOCK = ".lock"


def load_id_of(name: str) -> str:
    """``20261129T000336238878-d41f0568.filled.parquet`` -> ``20261129T000336238878-d41f0568`` (load ids
    have no dots)."""
    return name.split(".", 1)[0]


@contextlib.contextmanager
def claim(staging_dir: Path, dataset: str, load_id: str) -> Iterator[Path]:
    """Hold the lock of one load's staging entries while the ``with`` block runs."""
    folder = Path(staging_dir) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / f"{load_id}{LOCK}"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())  # for people reading the folder; the lock is what counts
        yield lock
    finally:
        lock.unlink(missing_ok=True)  # still locked: a sweep never sees it free while the load lives
        os.close(fd)


@dataclass(frozen=True)
class Leftover:
    """One killed or failed load's staging entries."""

    dataset: str
    load_id: str
    paths: tuple[Path, ...]
    age: dt.timedelta
    """Since the newest of them was last written."""


def _age(paths: list[Path], now: float) -> dt.timedelta:
    newest = 0.0
    for p in paths:
        with contextlib.suppress(OSError):
            newest = max(newest, p.lstat().st_mtime)
    return dt.timedelta(seconds=max(now - newest, 0))


@contextlib.contextmanager
def _unowned(lock: Path) -> Iterator[bool]:
    """True (holding the lock meanwhile) when no live load holds ``lock``; True when there is no lock."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        yield True
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        free = True
    except BlockingIOError:
        free = False
    try:
        yield free
    finally:
        os.close(fd)  # releases the lock, if taken


def _groups(staging_dir: Path) -> Iterator[tuple[str, str, list[Path]]]:
    if not staging_dir.is_dir():
        return
    for folder in sorted(staging_dir.iterdir()):
        if not folder.is_dir() or folder.is_symlink():
            continue
        by_load: dict[str, list[Path]] = {}
        for entry in folder.iterdir():
            by_load.setdefault(load_id_of(entry.name), []).append(entry)
        for load_id, paths in sorted(by_load.items()):
            yield folder.name, load_id, paths


def leftovers(staging_dir: Path, grace: dt.timedelta = GRACE) -> list[Leftover]:
    """Entries no live load owns and older than ``grace`` (what :func:`sweep` would remove)."""
    now, found = time.time(), []
    for dataset, load_id, paths in _groups(Path(staging_dir)):
        age = _age(paths, now)
        if age < grace:
            continue
        with _unowned(Path(staging_dir) / dataset / f"{load_id}{LOCK}") as free:
            if free:
                found.append(Leftover(dataset, load_id, tuple(sorted(paths)), age))
    return found


def sweep(staging_dir: Path, grace: dt.timedelta = GRACE) -> list[Leftover]:
    """Remove the entries of every load that no live process owns and that are older than ``grace``;
    return what was removed. Safe beside running loads of any dataset, in any process."""
    now, removed = time.time(), []
    for dataset, load_id, paths in _groups(Path(staging_dir)):
        age = _age(paths, now)
        if age < grace:
            continue
        lock = Path(staging_dir) / dataset / f"{load_id}{LOCK}"
        with _unowned(lock) as free:
            if not free:
                continue
            for p in paths:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        removed.append(Leftover(dataset, load_id, tuple(sorted(paths)), age))
    return removed
