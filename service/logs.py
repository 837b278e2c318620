"""Logging for every process: one JSON object per line, or a readable console line.

``LOG_FORMAT=json`` (the default) writes one object per line to stderr with
``ts``, ``level``, ``logger``, ``pid``, ``msg``, the request id of the
request being handled (if any) and the structured fields a caller passed as
``extra={"fields": {...}}``. ``LOG_FORMAT=console`` writes the same as
``ts level logger: msg key=value …``. ``logging_config`` is handed to uvicorn
as its ``log_config``, so uvicorn's own loggers, in the supervisor and in
every worker, go through the same formatter.

Some libraries log statement parameters, result rows or request details at
INFO or DEBUG (SQLAlchemy's engine logger echoes rows that hold webhook
secrets; aiosqlite logs the calls it runs). They are pinned at WARNING
whatever ``LOG_LEVEL`` says, because logs must never hold a token, an API key
or a secret.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import time
from typing import Any

import orjson

from service import request_context

FIELDS = "fields"
"""The ``extra`` key under which callers pass structured fields."""

# Loggers that could write secrets or tokens at their verbose levels.
QUIET_LOGGERS = ("sqlalchemy", "aiosqlite", "asyncpg", "httpx", "httpcore", "multipart")
# Chatty at INFO about its own setup on every start of a worker.
NOISY_LOGGERS = ("alembic.runtime.plugins",)


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text
# Datetimes and dataclasses go to ``default=str`` as with the standard library.
_ORJSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def encode_line(entry: dict[str, Any]) -> str:
    """``entry`` as one line of ASCII JSON, compact (``{"a":1}``).

    orjson, about a third of the standard library's cost per access-log line
    (bench/README.md); what it will not write as the standard library would
    (non-ASCII text, which the stdlib escapes; lone surrogates; integers beyond
    64 bits) goes through the standard library instead, compact too.
    """
    try:
        line = orjson.dumps(entry, default=str, option=_ORJSON_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return _compact.encode(entry)
    if line.isascii():
        return line.decode("ascii")
    return _compact.encode(entry)


# One encoder: json.dumps(default=…) builds one per call.
_compact = json.JSONEncoder(default=str, separators=(",", ":"))


def _timestamp(created: float, msecs: float) -> str:
    """``created`` (``time.time()``) to the millisecond, UTC; the second's text is cached."""
    whole = int(created)
    if whole != _second[0]:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int(msecs):03d}Z"


def _entry(
    created: float, msecs: float, level: str, logger: str, pid: int | None, msg: str
) -> dict[str, Any]:
    """A JSON line's fields before the record's own: when, how loud, who, and the request."""
    entry: dict[str, Any] = {
        "ts": _timestamp(created, msecs),
        "level": level,
        "logger": logger,
        "pid": pid,
        "msg": msg,
    }
    info = request_context.current()
    if info is not None:
        entry["request_id"] = info.request_id
    return entry


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    info = request_context.current()
    if info is not None:
        fields["request_id"] = info.request_id
    extra = getattr(record, FIELDS, None)
    if isinstance(extra, dict):
        fields.update(extra)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record; never spans lines (tracebacks are a string field)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(
            record.created,
            record.msecs,
            record.levelname.lower(),
            record.name,
            record.process,
            record.getMessage(),
        )
        extra = getattr(record, FIELDS, None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return encode_line(entry)


def direct_json(logger: logging.Logger, level: int) -> logging.StreamHandler[Any] | None:
    """The handler a record of ``logger`` at ``level`` would reach, when that is all
    logging would do with it: the configuration ``logging_config`` makes for JSON (one
    ``StreamHandler`` with a ``JsonFormatter`` on the root logger, no filter, no other
    handler on the way). The caller may then write ``json_line`` to it itself (``write_line``),
    the same line, without a ``LogRecord`` (~6 µs per access-log line, bench/README.md).

    None otherwise (a test's capture handler, the console format, a filter): the caller
    logs a record as usual. The caller has checked ``logger.isEnabledFor(level)``.
    """
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        if current.parent is None:  # the root
            handlers = current.handlers
            if len(handlers) != 1:
                return None
            handler = handlers[0]
            if (
                type(handler) is not logging.StreamHandler
                or type(handler.formatter) is not JsonFormatter
                or handler.filters
                or level < handler.level
            ):
                return None
            return handler
        if current.handlers or not current.propagate:
            return None
        current = current.parent
    return None


def json_line(logger: str, level: int, message: str, fields: dict[str, Any]) -> str:
    """What ``JsonFormatter`` writes for a record of ``logger`` at ``level`` logged now with
    ``message`` and ``extra={FIELDS: fields}`` (no exception), without the record."""
    now = time.time()
    entry = _entry(now, (now - int(now)) * 1000, _LEVEL_NAMES[level], logger, _pid(), message)
    entry.update(fields)
    return encode_line(entry)


def write_line(handler: logging.StreamHandler[Any], line: str) -> bool:
    """``line`` written as the handler's ``emit`` writes a formatted record; False if that
    failed (the caller then logs the record, and the handler reports the error)."""
    try:
        with handler.lock:  # type: ignore[union-attr]
            stream = handler.stream
            stream.write(line + handler.terminator)
            stream.flush()
    except Exception:
        return False
    return True


_process: list[int] = []  # this process's id, once read (a system call each time otherwise)
os.register_at_fork(after_in_child=_process.clear)


def _pid() -> int:
    if not _process:
        _process.append(os.getpid())
    return _process[0]


_LEVEL_NAMES = {
    level: logging.getLevelName(level).lower()
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
}


class ConsoleFormatter(logging.Formatter):
    """For people at a terminal: ``ts level logger: msg key=value …``."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record.created, record.msecs),
            f"{record.levelname:<7}",
            f"{record.name}:",
            record.getMessage(),
        ]
        parts.extend(f"{key}={value}" for key, value in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


FORMATTERS: dict[str, type[logging.Formatter]] = {
    "json": JsonFormatter,
    "console": ConsoleFormatter,
}


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping; also uvicorn's ``log_config``."""
    level = level.upper()
    loggers: dict[str, Any] = {
        # uvicorn's loggers propagate to the root handler; its access log is
        # replaced by ours (``service.api.access``), which never logs a raw path.
        "uvicorn": {"handlers": [], "level": level, "propagate": True},
        "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    }
    loggers.update(
        {
            name: {"handlers": [], "level": "WARNING", "propagate": True}
            for name in (*QUIET_LOGGERS, *NOISY_LOGGERS)
        }
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": FORMATTERS[log_format]}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": loggers,
    }


def configure(level: str, log_format: str) -> None:
    logging.config.dictConfig(logging_config(level, log_format))
