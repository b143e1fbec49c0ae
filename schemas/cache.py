"""The registry cache: a checked registry as JSON, rebuilt into :mod:`schemas.model` values.

Airflow re-parses the DAG file every few seconds, and reading and checking 2,000 dataset files takes
seconds; an unchanged registry then loads from one file. The file lives under the home
(``Settings.cache_dir``, 0700) and is 0600. It is data, never code: JSON, and only the registry's own
value classes (plus tuples, dates, timestamps and bytes, tagged) can be rebuilt from it, so a file
planted or damaged there is at worst a wrong cache entry of the owner's own making, never code run in
the scheduler (the pickle this replaces, in the world-writable temp folder, was). A file that does not
parse, names another class, or does not hold a registry is ignored and rewritten.

Encoding: JSON values stand for themselves (lists are lists); a dataclass is ``{"@": name, "v": [fields]}``;
a tuple ``{"@t": [...]}``; a mapping with a non-text key or a key starting with ``@`` is
``{"@m": [[k, v], ...]}``; ``{"@d": iso}`` a date, ``{"@dt": iso}`` a timestamp, ``{"@b": base64}`` bytes,
``{"@s": [...]}`` a set. Anything else is not cached.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import stat
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from schemas.model import (
    CodeList,
    Column,
    ConnectorSpec,
    CustomExpectation,
    Dataset,
    Department,
    Element,
    Form,
    FormField,
    FormLayout,
    Organisation,
    QualitySpec,
    Registry,
    System,
    Where,
)

FORMAT = 1
"""Bumped when the encoding changes (the cache key also changes whenever schemas/*.py does)."""
KEEP = 4
"""Cache files kept per folder (the newest): older registries' entries are removed on write."""

_CLASSES: dict[str, type] = {c.__name__: c for c in (Where, System, Department, CodeList, Element, CustomExpectation,
                                                     QualitySpec, Column, ConnectorSpec, Dataset, FormField,
                                                     FormLayout, Form, Organisation, Registry)}
_FIELDS: dict[type, tuple[str, ...]] = {c: tuple(f.name for f in fields(c)) for c in _CLASSES.values()}
_SCALARS = (str, bool, int, float, type(None))


class NotCacheable(TypeError):
    """A value the cache's JSON cannot carry exactly (the registry is then simply not cached)."""


def encode(value: Any) -> Any:
    """``value`` as plain JSON data (see the module's docstring)."""
    if isinstance(value, _SCALARS):
        return value
    cls = type(value)
    names = _FIELDS.get(cls)
    if names is not None:
        return {"@": cls.__name__, "v": [encode(getattr(value, n)) for n in names]}
    if isinstance(value, tuple):
        return {"@t": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("@") for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"@m": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, dt.datetime):
        return {"@dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"@d": value.isoformat()}
    if isinstance(value, bytes):
        return {"@b": base64.b64encode(value).decode()}
    if isinstance(value, set | frozenset):
        return {"@s": [encode(v) for v in value]}
    if is_dataclass(value):
        raise NotCacheable(f"{cls.__name__} is not a registry class")
    raise NotCacheable(f"cannot cache a {cls.__name__}")


def _hook(obj: dict[str, Any]) -> Any:
    if not obj or not next(iter(obj)).startswith("@"):
        return obj
    if "@" in obj:
        cls = _CLASSES[obj["@"]]  # KeyError: not one of ours -> the file is ignored
        values = obj["v"]
        if not isinstance(values, list) or len(values) != len(_FIELDS[cls]):
            raise ValueError(f"{cls.__name__} with {len(values)} fields")
        return cls(*values)
    if "@t" in obj:
        return tuple(obj["@t"])
    if "@m" in obj:
        return {k if not isinstance(k, list) else tuple(k): v for k, v in obj["@m"]}
    if "@d" in obj:
        return dt.date.fromisoformat(obj["@d"])
    if "@dt" in obj:
        return dt.datetime.fromisoformat(obj["@dt"])
    if "@b" in obj:
        return base64.b64decode(obj["@b"])
    if "@s" in obj:
        return set(obj["@s"])
    raise ValueError(f"unknown tag {next(iter(obj))!r}")


def decode(text: str | bytes) -> Any:
    return json.loads(text, object_hook=_hook)


def dumps(key: str, registry: Registry) -> bytes:
    """The cache file's content for ``registry`` (with its content hash, which costs a second to compute
    at 2,000 datasets, so that a cached registry never computes it again)."""
    payload = {"format": FORMAT, "key": key, "version": registry.version, "registry": encode(registry)}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode()


def loads(key: str, data: bytes) -> Registry | None:
    """The registry in ``data`` if it is a well-formed entry for ``key``, else None."""
    try:
        payload = decode(data)
    except (ValueError, TypeError, KeyError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("key") != key:
        return None
    registry, version = payload.get("registry"), payload.get("version")
    if not isinstance(registry, Registry) or not isinstance(version, str):
        return None
    registry.__dict__["version"] = version  # a cached_property's slot: a frozen dataclass allows it
    return registry


# -- the files ----------------------------------------------------------------------------------

def _private_folder(folder: Path) -> bool:
    """Make ``folder`` (0700, ours); False when it cannot be trusted (another user's, or not a folder)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False
        if stat.S_IMODE(info.st_mode) & 0o077:
            folder.chmod(0o700)
        return True
    except OSError:
        return False


def path_for(folder: Path, key: str) -> Path:
    return Path(folder) / f"registry-{key}.json"


def read(folder: Path, key: str) -> Registry | None:
    """The cached registry for ``key``, or None (missing, unreadable, someone else's, or not an entry)."""
    path = path_for(folder, key)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode):
            return None
        return loads(key, fh.read())


def write(folder: Path, key: str, registry: Registry) -> Path | None:
    """Store ``registry`` for ``key`` (atomically, 0600); None when it cannot or need not be cached."""
    folder = Path(folder)
    if not _private_folder(folder):
        return None
    try:
        data = dumps(key, registry)
    except (NotCacheable, ValueError, RecursionError):
        return None
    path = path_for(folder, key)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # atomic: concurrent parsers never read half a file
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    _prune(folder, path)
    return path


def _prune(folder: Path, current: Path) -> None:
    """Keep the newest KEEP entries: every edit of the registry makes a new one."""
    try:
        entries = sorted(folder.glob("registry-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in [p for p in entries if p != current][KEEP - 1:]:
        with contextlib.suppress(OSError):
            old.unlink()
