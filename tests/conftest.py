"""Shared fixtures: every test gets its own OneSource home; helpers write small registries."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Settings
from tests.helpers import write_registry

# The helpers the test files share (tests/support/) assert as the tests do: pytest rewrites their asserts too.
pytest.register_assert_rewrite("tests.support")


@pytest.fixture(scope="session", autouse=True)
def _audit_keys_in_a_session_folder(tmp_path_factory):
    """Audit keys live outside each home, in ``$XDG_CONFIG_HOME/onesource/keys/`` (one per home path):
    the tests' keys go to a folder of this session (and its subprocesses), not the user's ~/.config."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
        yield


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """An empty OneSource home in the test's own temporary folder."""
    return Settings(home=tmp_path / "home")


@pytest.fixture
def tiny(settings: Settings) -> Settings:
    """A home whose registry has one department, two elements and one CSV dataset (`firms`)."""
    write_registry(settings.registry_dir)
    return settings
