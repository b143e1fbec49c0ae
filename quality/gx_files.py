"""GX's files under a home, written whole or not at all, and a damaged one replaced instead of failing every load.

GX's file stores (suites, validation definitions, checkpoints, validation results) and its project config
(``great_expectations.yml``) are written in place: ``open(path, "w")`` truncates the file, then writes it. Every
load rewrites its dataset's suite, validation definition and checkpoint, and the project config twice (its
query asset added, then removed), so a load killed in that window (an OOM kill, a worker lost, a timeout's
SIGKILL) left an empty or half-written file, and every later load of the dataset, or of every dataset for the
project config, failed inside GX (``TypeError``, ``ValueError``, a YAML error).

* :func:`patch_gx_file_writes` makes those two writers write a temporary file beside the target and rename it
  over the target once complete (atomic on POSIX): a kill leaves the old file or the new one, never a part.
* :func:`drop_unreadable` (and :func:`set_aside_project_config`) repair homes damaged before the patch, or by
  anything else (a full disk): a suite, validation definition or checkpoint is regenerated from the registry on
  every load, so an unreadable one is removed; the project config is moved aside and GX writes a fresh one.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

PARTIAL = ".partial-"
"""In a temporary file's name: ``.<name>.partial-<pid>-<thread>``, which no GX store lists (not ``.json``)."""


class _WholeFile:
    """``open(path, "w"/"wb")`` that writes ``.<name>.partial-...`` and renames it over ``path`` on a clean close."""

    def __init__(self, path: str | os.PathLike[str], mode: str, *args: Any, **kwargs: Any) -> None:
        self.path = os.fspath(path)
        folder, name = os.path.split(self.path)
        self.tmp = os.path.join(folder, f".{name}{PARTIAL}{os.getpid()}-{threading.get_ident()}")
        self.file: IO[Any] = builtins.open(self.tmp, mode, *args, **kwargs)

    def __enter__(self) -> IO[Any]:
        return self.file

    def __exit__(self, kind: object, *exc: object) -> None:
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)


def _open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    """``open`` for GX's writing modules: a truncating write becomes a whole-file write; anything else as it was."""
    if isinstance(file, (str, os.PathLike)) and "w" in mode and not set(mode) & set("a+x"):
        return _WholeFile(file, mode, *args, **kwargs)
    return builtins.open(file, mode, *args, **kwargs)


@functools.cache
def patch_gx_file_writes() -> None:
    """GX's file store backend and file context write whole files (see the module's docstring)."""
    from great_expectations.data_context.data_context import file_data_context
    from great_expectations.data_context.store import tuple_store_backend

    for module in (tuple_store_backend, file_data_context):
        # the module's own global shadows the builtin for that module only: both write with `with open(...)`
        module.open = _open  # type: ignore[attr-defined]


def stored_definitions(root: Path, suite_name: str) -> list[Path]:
    """The files a load rewrites for its suite: the suite, its validation definition and its checkpoint (each
    named after the suite; GX keeps a suite under one folder per dot of its name)."""
    gx = root / "gx"
    return [gx / "expectations" / f"{suite_name.replace('.', '/')}.json",
            gx / "validation_definitions" / f"{suite_name}.json", gx / "checkpoints" / f"{suite_name}.json"]


def _whole(path: Path, parse: Callable[[str], object], broken: tuple[type[Exception], ...]) -> bool | None:
    """Whether ``path`` parses (with ``parse``, failing with ``broken``) to a mapping; None when it is absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return False
    try:
        return isinstance(parse(text), dict)
    except broken:
        return False


def drop_unreadable(paths: list[Path]) -> list[Path]:
    """Remove each of ``paths`` that exists but is not a JSON object (GX would fail on it); return those removed."""
    removed = []
    for path in paths:
        if _whole(path, json.loads, (ValueError,)) is False:
            path.unlink(missing_ok=True)
            removed.append(path)
            log.warning("removed %s: not a whole GX file (a load killed while writing it?); it is written again "
                        "from the registry", path)
    return removed


def set_aside_project_config(root: Path) -> Path | None:
    """Move ``gx/great_expectations.yml`` aside when it is not a YAML mapping (GX then writes a fresh one; the
    platform adds its datasource again); return where it went, or None when it was whole or absent."""
    import yaml

    path = root / "gx" / "great_expectations.yml"
    if _whole(path, yaml.safe_load, (yaml.YAMLError,)) is not False:
        return None
    aside = path.with_name(f"{path.name}.damaged-{os.getpid()}")
    os.replace(path, aside)
    log.warning("moved %s aside to %s: not a whole GX project config (a load killed while writing it?); GX writes "
                "a fresh one", path, aside)
    return aside
