"""Logs redact secrets and sensitive values."""

from __future__ import annotations

import logging

from core.logsafe import guarded, redact


def test_secrets_and_sensitive_values_are_masked():
    assert redact("postgres://etl:s3cr3t@db.internal:5432/x") == "postgres://etl:***@db.internal:5432/x"
    assert redact("dsn host=db password=hunter2 user=etl") == "dsn host=db password=*** user=etl"
    assert redact("AWS_SECRET_ACCESS_KEY=abcd1234") == "AWS_SECRET_ACCESS_KEY=***"
    assert redact("Authorization: Bearer 7cJbeKrwD8XyzUk") == "Authorization: Bearer ***"
    assert redact("e.g. '330106199003071234', '33010619900307123X'") == \
        "e.g. '330106********1234', '330106********123X'"
    assert redact("caller 13812345678 called") == "caller 138****5678 called"
    assert redact("91330106MA2B0C1D68 and 2026-11-26 12:00") == "91330106MA2B0C1D68 and 2026-11-26 12:00"


def test_onesource_loggers_redact_before_any_handler(caplog):
    log = guarded("onesource.load")
    with caplog.at_level(logging.WARNING, logger="onesource.load"):
        log.warning("quarantined %s: failing values %s via %s", "x", "'330106199003071234'",
                    "mysql://root:pw@127.0.0.1/db")
    text = caplog.text
    assert "330106199003071234" not in text and "330106********1234" in text
    assert ":pw@" not in text and "root:***@" in text
