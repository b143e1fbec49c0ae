"""Files a department drops: CSV (UTF-8, GBK, GB18030), XLSX, JSON, NDJSON, Parquet.

Incremental by file manifest: every file matching the glob whose sha256 the platform has not
loaded yet becomes one extract, oldest first.
"""

from __future__ import annotations

import glob
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from connectors.base import Extract, SourceState
from connectors.exceptions import ExtractError
from connectors.landing import Landing, changed_while_landing, sha256_file, stamp
from schemas.model import Dataset

_EXT_FORMATS = {".csv": "csv", ".txt": "csv", ".xlsx": "xlsx", ".json": "json", ".ndjson": "ndjson",
                ".jsonl": "ndjson", ".parquet": "parquet"}


class FileConnector:
    kind = "file"

    def __init__(self, sources_dir: Path, landing: Landing):
        self.sources_dir = Path(sources_dir)
        self.landing = landing
        self._early: dict[Path, tuple[str, Future[str]]] = {}

    def prefetch(self, dataset: Dataset) -> None:
        """Start hashing the files no earlier run hashed, on a thread, and return at once: the load opens
        the lake meanwhile (0.3 s; hashing 419 MiB takes as long). Extract needs the hash first (it
        decides whether a file was loaded before); nothing is copied or landed here."""
        hashes = self.landing.hashes(dataset.name)
        todo = [path for path in self.files(dataset) if hashes.known(path) is None]
        if not todo:
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onesource-hashing")
        for path in todo:
            self._early[path] = (stamp(path), pool.submit(sha256_file, path))
        pool.shutdown(wait=False)

    def _hashed_early(self, dataset: Dataset, path: Path) -> tuple[str | None, str | None]:
        """The sha256 :meth:`prefetch` computed and the file's stamp when it began (landing refuses the
        file if it changes from then until its copy is complete), or (None, None)."""
        early = self._early.pop(path, None)
        if early is None:
            return None, None
        before, hashing = early
        sha = hashing.result()
        if stamp(path) != before:
            raise changed_while_landing(dataset.name, path)
        return sha, before

    def files(self, dataset: Dataset) -> list[Path]:
        pattern = str(dataset.connector.settings["path"])
        if not Path(pattern).is_absolute():
            pattern = str(self.sources_dir / pattern)
        found = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))

    def extract(self, dataset: Dataset, state: SourceState) -> list[Extract]:
        settings = dataset.connector.settings
        out = []
        hashes = self.landing.hashes(dataset.name)
        for path in self.files(dataset):
            fmt = str(settings.get("format") or _EXT_FORMATS.get(path.suffix.lower(), ""))
            if not fmt:
                raise ExtractError(
                    f"dataset {dataset.name}: cannot tell the format of {path}; "
                    "set 'format' (csv, xlsx, json, ndjson, parquet) in the dataset's connector"
                )
            known, since = hashes.known(path), None
            if known is None:
                known, since = self._hashed_early(dataset, path)
                if known in state.seen_sha256:  # loaded before, but no run remembered its hash: now one does
                    hashes.remember(path, known)
                    hashes.save()
            if known in state.seen_sha256:
                continue  # an old file still in the drop folder: not read again
            landed, sha = self.landing.land_file(dataset.name, path, fmt, source=str(path), sha256=known,
                                                 unchanged_since=since)
            hashes.remember(path, sha)
            hashes.save()  # after each landed file, so a failure later in the run keeps what was learnt
            if sha in state.seen_sha256:
                continue
            options: dict[str, Any] = {k: settings[k] for k in ("encoding", "delimiter", "sheet", "skip_rows")
                                       if k in settings}
            out.append(Extract(dataset=dataset.name, path=landed, sha256=sha, source=str(path), format=fmt,
                               read_options=options))
        return out
