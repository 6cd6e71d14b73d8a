"""The redaction filter on the server's log handlers."""

from __future__ import annotations

import logging

from trainflow.server_logging import RedactingFilter, redact


def test_redact_hides_headers_jwts_and_passwords():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXRoaW5n"
    line = f"Authorization: Basic YWxpY2U6c2VjcmV0 then Bearer {jwt} and password=hunter22 token: abc123"
    cleaned = redact(line)
    for secret in ("YWxpY2U6c2VjcmV0", jwt, "hunter22", "abc123"):
        assert secret not in cleaned
    assert redact("an ordinary line about 42 experiments") == "an ordinary line about 42 experiments"


def test_the_filter_rewrites_records_with_args():
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "header was %s", ("Basic YWxpY2U6c2VjcmV0",), None
    )
    RedactingFilter().filter(record)
    assert "YWxpY2U6c2VjcmV0" not in record.getMessage()
