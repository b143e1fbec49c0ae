"""Connector kinds are data: the registry's list of kinds (schemas.kinds) and the connectors' factories
(connectors.CONNECTORS) name the same kinds, each factory builds a connector, and an unknown kind is refused
with the kinds there are."""

from __future__ import annotations

import pytest

from connectors import CONNECTORS, ExtractError, Landing, connector_for
from schemas.kinds import KINDS


def test_the_registry_and_the_connectors_know_the_same_kinds(tmp_path):
    assert set(CONNECTORS) == set(KINDS) - {"platform"}  # a platform product is computed, never extracted
    for kind in CONNECTORS:
        connector = connector_for(kind, tmp_path / "sources", Landing(tmp_path / "landing"), {})
        assert callable(getattr(connector, "extract", None)), kind  # the Connector protocol's one method


def test_an_unknown_kind_is_refused_with_the_kinds_there_are(tmp_path):
    with pytest.raises(ExtractError, match="ftp.*the kinds are database, file, http"):
        connector_for("ftp", tmp_path, Landing(tmp_path / "landing"), {})
