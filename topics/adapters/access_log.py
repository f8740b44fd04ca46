"""Credentials redacted from the servers' access logs.

Phoenix clients pass their credentials in the socket URL's query string (``?token=...``), and a
long-poll session is named by one. Both servers log that URL: uvicorn's
``WebSocket /socket/websocket?vsn=2.0.0&token=<signed token>`` (logger ``uvicorn.error``) and
its HTTP access lines (``uvicorn.access``); daphne's access log ``GET
/socket/longpoll?token=<session>`` (its action logger, written to stdout by default). Anyone who
reads the log could connect as that user. Every query parameter named in
``DPS_REDACTED_QUERY_PARAMETERS`` (default :data:`DEFAULT_REDACTED_QUERY_PARAMETERS`, compared
without case) is shown as ``name=[redacted]``.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings

DEFAULT_REDACTED_QUERY_PARAMETERS = (
    "token", "authToken", "auth_token", "access_token", "refresh_token", "id_token",
    "session", "sessionid", "password", "secret", "api_key", "apikey", "signature",
)
REDACTED = "[redacted]"


def credential_pattern() -> re.Pattern[str]:
    names = getattr(settings, "DPS_REDACTED_QUERY_PARAMETERS", DEFAULT_REDACTED_QUERY_PARAMETERS)
    alternatives = "|".join(re.escape(name) for name in names)
    return re.compile(rf"([?&](?:{alternatives})=)[^&\s\"']*", re.IGNORECASE)


def redact(text: str, pattern: re.Pattern[str]) -> str:
    """``text`` with the value of every credential query parameter replaced."""
    return pattern.sub(rf"\g<1>{REDACTED}", text) if "=" in text else text


class RedactCredentials(logging.Filter):
    """Redacts the credential parameters in a record's message and string arguments."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg, self.pattern)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg, self.pattern) if isinstance(arg, str) else arg
                                for arg in record.args)
        return True


def redact_uvicorn_access_log() -> None:
    """uvicorn logs request lines through two named loggers: filter both."""
    pattern = credential_pattern()
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(RedactCredentials(pattern))


def redact_daphne_access_log() -> None:
    """daphne's ``Server.log_action`` hands each request's path to its access logger."""
    from daphne.server import Server

    pattern = credential_pattern()
    log_action = Server.log_action

    def log_action_redacted(self: Any, protocol: str, action: str, details: dict) -> None:
        path = details.get("path")
        if isinstance(path, str):
            details = {**details, "path": redact(path, pattern)}
        log_action(self, protocol, action, details)

    Server.log_action = log_action_redacted
