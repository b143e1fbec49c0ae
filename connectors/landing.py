"""The landing zone: every extract is kept as received, content-addressed by sha256, read-only.

``landing/<dataset>/<sha256>.<ext>`` plus ``<sha256>.meta.json`` with where and when it came from. A file
delivered twice lands once; nothing in the platform ever rewrites or deletes a landed file. Each load hashes
its landed file again before it publishes (:class:`Recheck`): a file changed after landing is refused and
moved aside as ``<sha256>.<ext>.changed-<load_id>``, so the extract can be delivered again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from connectors.exceptions import SourceUnavailableError

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


WIDE_BYTES = (b"\xef\xbc", b"\xef\xbd", "\u3000".encode())
"""Byte sequences that begin every UTF-8 character standardize's clean-up translates (lakehouse.standardize.FULL): U+FF00-FF3F and
U+FF40-FF7F (every full-width form of ASCII, and a few more) and the ideographic space U+3000."""


def holds_wide_forms(path: Path, chunk: int = 1 << 24) -> bool:
    """Whether a UTF-8 file may hold a full-width character: False only if no sequence of
    :data:`WIDE_BYTES` occurs in it (0.15 CPU s for 419 MiB). Standardize's clean-up then needs no regex to find them."""
    import mmap

    import numpy as np

    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return False
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
                data = np.frombuffer(view, dtype=np.uint8)
                try:
                    return any(_holds(data[start:start + chunk + 2], seq) for start in range(0, len(data), chunk)
                               for seq in WIDE_BYTES)  # two bytes more: a sequence across two chunks is seen
                finally:
                    del data  # the mmap closes only once no array views it
    except (OSError, ValueError):
        return True  # not looked at: the clean-up keeps its regex (reading the file, the load says what is wrong)


def _holds(data: Any, seq: bytes) -> bool:
    """Whether ``seq`` occurs in ``data`` (a uint8 array): its first byte found vectorised, the rest compared."""
    import numpy as np

    at = np.flatnonzero(data[:len(data) - len(seq) + 1] == seq[0])
    for k in range(1, len(seq)):
        at = at[data[at + k] == seq[k]]
    return len(at) > 0


def stamp(src: Path) -> str:
    """Size and modification time: a file that changes changes its stamp (what landing relies on)."""
    st = src.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _stamp_of(dataset: str, src: Path) -> str:
    """The file's :func:`stamp`; a file gone meanwhile is one that changed while it was being landed."""
    try:
        return stamp(src)
    except FileNotFoundError as exc:
        raise changed_while_landing(dataset, src) from exc


def changed_while_landing(dataset: str, src: Path) -> SourceUnavailableError:
    return SourceUnavailableError(f"dataset {dataset}: {src} changed or went away while it was being landed (is it "
                                  "still being written or moved?); nothing was loaded from it, and the load is retried")


def fingerprint(path: Path) -> tuple[int, int, int]:
    """What changes when a file is rewritten or replaced: inode, size, modification time."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class Recheck:
    """A landed file's sha256 computed again, once the load has read it, before anything is published.

    Landed files are 0400, but root (or a careless operator) can still rewrite one, and the load would
    then publish other bytes under the delivered file's hash. So the load notes the file's
    :func:`fingerprint` before standardize reads it, and :meth:`start` hashes it again as soon as
    standardize is done (on a thread, beside validation: ~0.33 CPU s per 5M rows, 541 MiB); :meth:`problem`
    waits for that hash and compares. Equal hash *after* the read and an unchanged fingerprint from before
    the read to after the hash mean standardize read the bytes that carry the name."""

    def __init__(self, path: Path, sha256: str):
        self.path, self.sha256 = Path(path), sha256
        self._before = self._stat()
        self._hashing: Future[str] | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            return fingerprint(self.path)
        except OSError:
            return None

    def start(self) -> None:
        if self._hashing is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onesource-rehash")
            self._hashing = pool.submit(sha256_file, self.path)
            pool.shutdown(wait=False)

    def problem(self) -> str | None:
        """None when the file still holds the delivered bytes; else what changed, in words."""
        self.start()
        assert self._hashing is not None
        try:
            found = self._hashing.result()
        except OSError as exc:
            return f"can no longer be read ({exc.strerror or exc})"
        if found != self.sha256:
            return f"was changed after it was landed (its content now hashes to {found[:16]}…)"
        if self._before is None or self._stat() != self._before:
            return "was rewritten or replaced while the load was reading it"
        return None


class HashCache:
    """Drop folders keep their old files, and re-reading every one of them on every run costs O(all
    data ever delivered): a file with the same path, size and modification time keeps its sha256.
    Read once and saved once per extract run."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.entries: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    def known(self, src: Path) -> str | None:
        return self.entries.get(str(src), {}).get(stamp(src))

    def remember(self, src: Path, sha: str) -> None:
        self.entries[str(src)] = {stamp(src): sha}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".stat-cache-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.entries, fh)
        os.replace(tmp, self.path)  # atomic: a concurrent writer's update may be lost, which costs one re-hash


class Landing:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, dataset: str, sha256: str, ext: str) -> Path:
        return self.root / dataset / f"{sha256}.{ext}"

    def land_file(self, dataset: str, src: Path, ext: str, source: str, sha256: str | None = None,
                  unchanged_since: str | None = None, copied: Path | None = None) -> tuple[Path, str]:
        """Copy ``src`` into the landing zone (once); return its landed path and sha256.

        ``sha256``: the file's hash, when known; ``unchanged_since``: the file's :func:`stamp` when that
        hash was computed (the file is refused if it changed from then until its copy is complete);
        ``copied``: a finished :meth:`copy` of the file made since then (landed, or removed if not needed).

        A file not hashed yet is hashed and copied at the same time, on two threads (both release the
        GIL: the copy is ``copyfile``'s sendfile in the kernel), 0.33 s instead of 0.46 s for 419 MiB.
        Hashing while writing in one Python loop measured slower than either (1.5 s). The file must
        not change meanwhile (its size and modification time are compared), or it is not landed. (The
        file connector hashes new files earlier, while the lake opens: see ``FileConnector.prefetch``.)"""
        folder = self.root / dataset
        tmp = copied
        try:  # every way out removes the copy, unless it became the raw file (then its name is gone)
            before = unchanged_since or _stamp_of(dataset, src)
            if sha256 is not None:  # hashed already (an earlier run, or while the lake opened): copy if not landed
                dest = self.path_for(dataset, sha256, ext)
                if dest.exists():
                    return dest, sha256
                tmp, sha = tmp or self.copy(src, folder), sha256
            else:
                tmp, sha = self._copy_and_hash(dataset, src, folder)
            if _stamp_of(dataset, src) != before:
                raise changed_while_landing(dataset, src)
            return self._keep(tmp, dataset, sha, ext, source, src.name), sha
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def _copy_and_hash(self, dataset: str, src: Path, folder: Path) -> tuple[Path, str]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onesource-landing") as pool:
            copying = pool.submit(self.copy, src, folder)
            try:
                sha = sha256_file(src)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    copying.result().unlink(missing_ok=True)
                if isinstance(exc, FileNotFoundError):
                    raise changed_while_landing(dataset, src) from exc
                raise
            return copying.result(), sha

    @staticmethod
    def copy(src: Path, folder: Path) -> Path:
        """A copy of ``src`` under a temporary name in ``folder``, so a crash never leaves a half-written
        raw file under its real name (nor, for long: a killed load's copy is swept as scratch files are)."""
        folder.mkdir(parents=True, exist_ok=True)
        sweep_scratch(folder)  # named as scratch files are, so the copies of killed loads go the same way
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{COPYING}{_host()}-{os.getpid()}-")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def _keep(self, tmp: Path, dataset: str, sha: str, ext: str, source: str, original_name: str) -> Path:
        """Install a finished file as the raw file of ``sha``, or drop it when that content already landed
        (under another name, or an earlier run); return the landed path."""
        dest = self.path_for(dataset, sha, ext)
        if dest.exists():
            tmp.unlink(missing_ok=True)
        else:
            self._install(tmp, dest, sha, source, original_name)
        return dest

    def _install(self, tmp: Path, dest: Path, sha: str, source: str, original_name: str) -> None:
        """A complete file on the landing zone's file system becomes the read-only raw file, atomically."""
        os.chmod(tmp, 0o400)  # read-only, and its owner's alone
        os.replace(tmp, dest)
        self._write_meta(dest, sha, source, original_name)

    def set_aside(self, landed: Path, load_id: str) -> Path:
        """Move a landed file that no longer matches its sha256 out of the way, kept as evidence
        (``<sha256>.<ext>.changed-<load_id>``), so that the next delivery of the same extract lands afresh
        (a landed name is never copied over while it exists)."""
        aside = landed.with_name(f"{landed.name}.changed-{load_id}")
        try:
            os.replace(landed, aside)
        except FileNotFoundError:
            pass
        return aside

    def hashes(self, dataset: str) -> HashCache:
        """The sha256 of files hashed on earlier runs, by path, size and modification time."""
        return HashCache(self.root / dataset / ".stat-cache.json")

    def land_temp(self, dataset: str, tmp: Path, ext: str, source: str) -> tuple[Path, str]:
        """Land a file an extractor wrote to a scratch path (database and API extracts). The scratch path
        is in the landing zone's own folder, so the file is renamed into place, not copied."""
        try:
            sha = sha256_file(tmp)
            return self._keep(tmp, dataset, sha, ext, source, tmp.name), sha
        finally:
            tmp.unlink(missing_ok=True)

    def scratch(self, dataset: str, suffix: str) -> Path:
        """A temporary path on the same file system as the landing zone, named after the host and process
        writing it, so that the scratch files of extracts that were killed (a worker lost mid-load: they may
        hold records in clear) are removed by the next extract of the dataset (:func:`sweep_scratch`)."""
        folder = self.root / dataset
        folder.mkdir(parents=True, exist_ok=True)
        sweep_scratch(folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{SCRATCH}{_host()}-{os.getpid()}-", suffix=suffix)
        os.close(fd)
        return Path(tmp)

    @staticmethod
    def _write_meta(dest: Path, sha: str, source: str, original_name: str) -> None:
        meta = {
            "sha256": sha,
            "source": source,
            "original_name": original_name,
            "bytes": dest.stat().st_size,
            "received_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        meta_path = dest.with_name(f"{sha}.meta.json")
        meta_path.write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")


SCRATCH = ".extract-"
COPYING = ".landing-"
"""A raw file being copied in (:meth:`Landing.copy`): a whole extract in clear until it is installed."""
FOREIGN_SCRATCH_HOURS = 24
"""A scratch file of another host (a shared landing zone) is taken as abandoned after this long: its
writer's process cannot be checked from here, and no extract writes one file for a day."""


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_scratch(folder: Path) -> list[Path]:
    """Remove the scratch files (and copies being landed) in ``folder`` whose writer is gone: this host's, when
    their process no longer runs; another host's, after FOREIGN_SCRATCH_HOURS; unnamed ones (written before
    scratch names carried host and process) after the same time. Returns what was removed."""
    removed, host, now = [], _host(), time.time()
    for prefix, path in ((p, path) for p in (SCRATCH, COPYING) for path in folder.glob(f"{p}*")):
        parts = path.name[len(prefix):].split("-")
        try:
            mine = parts[0] == host and len(parts) >= 3
            stale = (not _alive(int(parts[1]))) if mine else now - path.stat().st_mtime > FOREIGN_SCRATCH_HOURS * 3600
        except (ValueError, FileNotFoundError):
            continue
        if stale:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed

