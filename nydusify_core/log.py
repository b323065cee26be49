"""Logging setup, with a filter that keeps registered secrets out of every log line."""

from __future__ import annotations

import logging
import sys
import threading

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
LEVELS = ("debug", "info", "warning", "error")


def register_secret(value: str | None) -> None:
    """Never print `value`: every log record and error message has it masked."""
    if value and len(value) >= 3:
        with _LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: str = "info") -> None:
    """Log to stderr through the redacting filter; chatty libraries stay at warning."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "oss2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
