"""Application logs as JSON lines, to stdout and to a rotating file under var/logs/, each with the request id.

One object per line: time (UTC, ISO 8601), level, logger, message, the request id of the request being served
(`REQUEST_CONTEXT`; absent outside requests), extra fields a caller passes with `extra={"fields": {...}}`, and for
an exception its type and traceback. The API logs no patient data: messages name types, routes and ids only.
uvicorn's own loggers are routed through the same handlers.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path

from monitoring.audit import REQUEST_CONTEXT

LOG_FILE = "cxr.log"
_HANDLER_MARK = "_cxr_json_handler"
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = REQUEST_CONTEXT.get()
        if context is not None:
            entry["request_id"] = context.request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str, log_dir: Path, max_bytes: int, backups: int) -> None:
    """JSON lines to stdout and to log_dir/cxr.log (rotated at `max_bytes`, `backups` old files kept); idempotent."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    log_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stdout),
        logging.handlers.RotatingFileHandler(
            log_dir / LOG_FILE, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        ),
    ]
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _UVICORN_LOGGERS:  # their own handlers would print plain text beside ours
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
