"""Damage in plain words: what a damaged or missing home raises, as one paragraph naming the file and the remedy.

The lake's own checks raise clear errors where they can (a lost or replaced catalog when the lake opens,
a table's missing files in ``onesource status``); this module words what surfaces elsewhere, as a DuckDB
or OS error in the middle of a command: a catalog damaged past its first pages, a data file deleted under
a query, a home removed while the platform runs. The CLI prints :func:`explain`'s paragraph instead of a
traceback (``ONESOURCE_DEBUG=1`` shows the traceback as well).
"""

from __future__ import annotations

import re
from pathlib import Path

from core.config import Settings

RESTORE = ("Restore the home from its last backup: `onesource restore BACKUP --home NEW_FOLDER`, then point "
           "ONESOURCE_HOME at it (docs/deploy.md, \"Backup and restore\")")

_CATALOG_WORDS = ("malformed", "not a database", "disk image", "unable to open database", "database file",
                  "failed to probe ducklake metadata")
_MISSING_FILE = (re.compile(r'Cannot open file "([^"]+)"'), re.compile(r"No files found that match the pattern \"([^\"]+)\""),
                 re.compile(r"'([^']+\.parquet)'.*(?:No such file|does not exist)"))


def catalog_path(settings: Settings) -> Path | None:
    catalog = settings.lake.catalog
    return Path(catalog.removeprefix("sqlite:")) if catalog.startswith("sqlite:") else None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def missing_home(settings: Settings) -> str | None:
    """Why this home cannot be used because it is not there, or None when it exists."""
    home = settings.home
    if home.is_dir():
        return None
    restore = f"restore it from its last backup: `onesource restore BACKUP --home {home}` (docs/deploy.md, " \
              "\"Backup and restore\")"
    if home.exists():
        return (f"the OneSource home {home} is not a folder. Point ONESOURCE_HOME at the platform's home folder, or "
                f"move {home} aside and {restore}")
    existed = settings.audit_key_file.exists()
    why = (f"it existed (its audit key {settings.audit_key_file} is still there), so it was removed or moved"
           if existed else "nothing is there")
    return (f"the OneSource home {home} does not exist: {why}. If it was removed, {restore}; if ONESOURCE_HOME "
            "points at the wrong place, point it at the platform's home; to start a new platform, run `onesource "
            "demo` or create the folder with its registry/")


def missing_data_file(text: str, settings: Settings) -> str | None:
    """The paragraph for an error message that says a lake data file is missing, else None."""
    data = settings.lake.data_path
    text = text.replace("<lake data>/", data.rstrip("/") + "/")  # as the governed engine words it to departments
    for pattern in _MISSING_FILE:
        m = pattern.search(text)
        if m and ("://" in data or m.group(1).startswith(data.rstrip("/"))):
            path = m.group(1)
            parts = Path(path).relative_to(data).parts if "://" not in data else ()
            table = f"{parts[0]}.{parts[1]}" if len(parts) >= 3 else "a lake table"
            return (f"the data file {path} of {table} is missing, so the table cannot be read; nothing was "
                    f"changed. {RESTORE}; without a backup, ask the owning department to deliver the dataset again. "
                    "`onesource doctor` lists every table with missing files")
    return None


def explain(exc: BaseException, settings: Settings) -> str | None:
    """One paragraph for an error a damaged home raised (naming the file and the remedy), else None."""
    # the governed engine tells departments DuckDB's message without the server's paths; the operator's
    # command sees the original in the chain
    text = " ".join(str(e) for e in (exc, exc.__cause__) if e is not None)
    lowered = text.lower()
    if missing := missing_data_file(text, settings):
        return missing
    catalog = catalog_path(settings)
    if any(word in lowered for word in _CATALOG_WORDS):
        where = catalog or settings.lake.catalog
        if not settings.home.is_dir():
            return missing_home(settings)
        return (f"the lake catalog {where} is damaged or unreadable ({_first_line(exc)}); nothing was changed. "
                f"{RESTORE}; the data files, landing zone and audit log stay as they are. `onesource doctor` checks "
                "the whole home")
    if isinstance(exc, OSError) and exc.filename and str(exc.filename).startswith(str(settings.home)):
        if not settings.home.is_dir():
            return missing_home(settings)
        return (f"{exc.filename}: {exc.strerror or _first_line(exc)}. Part of the home {settings.home} is missing or "
                f"unreadable; nothing was changed. `onesource doctor` checks the whole home. If files are gone: "
                f"{RESTORE}")
    return None


def unexpected(exc: BaseException) -> str:
    """The paragraph for an error nobody foresaw: what it was, and how to see more."""
    return (f"unexpected {type(exc).__name__}: {_first_line(exc)}. Run the command again as `onesource --debug ...` to "
            "see where it came from, and `onesource doctor` to check the home")
