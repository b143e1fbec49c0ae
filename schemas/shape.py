"""The keys each mapping of a registry file may hold, derived from :mod:`schemas.model`.

One source of truth: the loader refuses a key that is not a field of the model value it builds (with a
"did you mean"), and :mod:`schemas.reference` writes the JSON Schema and docs/registry.md from the same
fields, their types, their ``spec`` metadata and the docstring under each.

>>> suggest("load_mod", known_keys(Dataset))
'load_mode'
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from functools import cache

from schemas.model import Dataset  # noqa: F401 - the doctest's

FILES: dict[str, tuple[str, ...]] = {
    "departments.yaml": ("departments",),
    "elements.yaml": ("elements", "code_lists"),
    "organisations.yaml": ("organisations",),
}
"""Top-level keys of the two shared files (each a field of schemas.model.Registry); every file under
``datasets/`` is one :class:`~schemas.model.Dataset`."""

@cache
def known_keys(cls: type) -> tuple[str, ...]:
    """The keys a registry mapping read into ``cls`` may hold: its fields, in order."""
    return tuple(f.name for f in fields(cls) if f.name != "where")


def connector_keys(kind: object) -> tuple[str, ...]:
    """The keys of a connector mapping of ``kind``: ``kind`` and that kind's settings (every kind's when the
    kind is missing or unknown, so a misspelt ``kind`` itself still gets its suggestion)."""
    from schemas.kinds import KINDS

    specs = [KINDS[kind]] if isinstance(kind, str) and kind in KINDS else list(KINDS.values())
    keys = ["kind"]
    for s in specs:
        keys += [k for k in s.required + s.optional if k not in keys]
    return tuple(keys)


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def suggest(word: str, known: tuple[str, ...] | list[str]) -> str | None:
    """The known key ``word`` most likely misspells: the fewest edits (a typo is one or two), ties and
    longer slips (``minimum`` for ``min``) decided by difflib's similarity; None when nothing is close."""
    w = str(word).lower()
    scored = sorted(known, key=lambda k: (_distance(w, k.lower()), -difflib.SequenceMatcher(None, w, k.lower()).ratio()))
    if not scored:
        return None
    best = scored[0]
    if _distance(w, best.lower()) <= max(1, min(2, len(w) // 3)):
        return best
    close = difflib.get_close_matches(w, [k.lower() for k in known], n=1, cutoff=0.6)
    return next((k for k in known if k.lower() == close[0]), None) if close else None


def unknown_key_message(key: object, known: tuple[str, ...] | list[str], noun: str = "key") -> str:
    """``unknown key 'load_mod'; did you mean `load_mode`?`` (or the known keys when none is close)."""
    guess = suggest(str(key), known)
    hint = f"did you mean `{guess}`?" if guess else f"known: {', '.join(known)}"
    return f"unknown {noun} {str(key)!r}; {hint} (docs/registry.md lists every key)"
