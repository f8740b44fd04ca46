"""uvicorn answers a text frame that is not UTF-8 with the right close (1007), but logs it with
``logger.exception``: a traceback in the node's log for every such client frame. A client's bad
input is not a server error, so that one record becomes a one-line warning."""
from __future__ import annotations

import logging

_INVALID_UTF8 = "Invalid UTF-8 sequence received from client."


class _ClientErrorsAreWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _INVALID_UTF8:
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_client_protocol_errors() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _ClientErrorsAreWarnings) for f in logger.filters):
        logger.addFilter(_ClientErrorsAreWarnings())
