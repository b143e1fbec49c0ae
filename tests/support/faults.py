"""Loads run from separate processes (picklable for a process pool)."""

from __future__ import annotations

from tests.helpers import load


def load_in_process(home: str, name: str) -> list[tuple[str, int]]:
    from core.config import Settings

    return [(r.status, r.rows) for r in load(Settings(home=home), name)]
