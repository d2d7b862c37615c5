"""Logging filters for the project's one console handler (settings.LOGGING)."""

import logging


class ClientErrorsInOneLine(logging.Filter):
    """A 4xx a view raised (PermissionDenied, Http404, SuspiciousOperation) is the client's
    doing, not a bug: its log record keeps its one line and drops the traceback Django
    attaches. 5xx records keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if record.exc_info and isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
