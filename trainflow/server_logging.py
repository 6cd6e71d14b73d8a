"""Server logging, with a last line of defence against secrets in log lines."""

from __future__ import annotations

import logging
import re

# Credentials as they appear in headers, JWTs anywhere, and password-ish key/value pairs.
_SECRETS = [
    (re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"), "[redacted-jwt]"),
    (
        re.compile(r"(?i)\b(password|passwd|secret|token)([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"),
        r"\1\2[redacted]",
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message so no credential reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    # Migration chatter is not news on every start.
    logging.getLogger("alembic").setLevel(logging.WARNING)
