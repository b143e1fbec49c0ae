"""Importing Great Expectations without the modules it imports for checks this platform never runs.

GX imports every one of its core expectations when it is imported, and one of them (the KL-divergence
check, with its chart) brings in ``altair`` and ``scipy.stats``, as do its KS-test metrics: 2.7 s of a
fresh process's ~7 s GX import on a busy 2-core host (``python -X importtime``), paid by every load task,
since Airflow starts each task in a new process. :func:`defer` puts a stand-in for each of those modules
in ``sys.modules`` first; the first use of any of its names (a chart rendered, a KS test run) imports the
real module then, so nothing GX can do is lost, only the cost moved to where it is used.

``importlib.util.LazyLoader`` would do for ``scipy.stats`` but not for ``altair``: in Python 3.11, ``import
altair as alt`` reads the module's ``__spec__``, which makes a lazy module load at once.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

DEFERRED = ("scipy.stats", "altair")
"""Imported by GX at its import only for expectations and renderers OneSource's suites never use."""

_loading = threading.RLock()


class _Deferred(types.ModuleType):
    """Stands in for a module until one of its names is asked for; then imports it and becomes its view.

    A name missing from the stand-in (every name but the module dunders the import system sets) lands in
    :meth:`__getattr__`, which imports the real module and copies its namespace here, so later lookups are
    plain attribute reads. ``__path__`` is left out on purpose: importing a submodule asks for it, which
    imports the real package first (its ``__init__`` runs before any submodule)."""

    def __getattr__(self, attr: str) -> Any:
        real = _real(self)
        return getattr(real, attr)


def _real(stub: _Deferred) -> types.ModuleType:
    name = stub.__name__
    with _loading:
        current = sys.modules.get(name)
        if current is not None and current is not stub:
            return current
        sys.modules.pop(name, None)
        try:
            real = importlib.import_module(name)
        except BaseException:
            sys.modules.setdefault(name, stub)
            raise
        parent, _, child = name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, real)
        vars(stub).update({k: v for k, v in vars(real).items() if k != "__class__"})
        return real


def defer(names: tuple[str, ...] = DEFERRED) -> None:
    """Put a stand-in for each of ``names`` in ``sys.modules`` unless it is imported already (or absent)."""
    with _loading:
        for name in names:
            if name in sys.modules:
                continue
            try:
                spec = importlib.util.find_spec(name)  # imports the parent package (scipy: cheap)
            except (ImportError, ValueError):
                continue
            if spec is None:
                continue
            stub = _Deferred(name)
            stub.__spec__, stub.__loader__ = spec, spec.loader
            stub.__file__ = spec.origin
            stub.__package__ = name if spec.submodule_search_locations is not None else spec.parent
            sys.modules[name] = stub
            parent, _, child = name.rpartition(".")
            if parent and parent in sys.modules:
                setattr(sys.modules[parent], child, stub)
