"""Structured logs: the ids of what a log line is about, carried in a context variable.

The RPC wrapper (`api/registry.py`) binds `request_id`, `endpoint` and `job_id` when a call starts; the
dispatcher binds `endpoint`, `worker_id` and `job_id` around claims and results. Every log record emitted
meanwhile, by any module, carries them: as JSON fields with `--log-json`, as a `[key=value ...]` suffix
otherwise. Nothing here is specific to a server instance, so several servers in one process share it.

The JSON formatter is written by hand (about thirty lines) rather than taken from a library: the
dependencies carry none (python-json-logger is not one of them), and the format is small and fixed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

#: The context fields, in the order they are printed.
FIELDS = ("request_id", "endpoint", "job_id", "worker_id", "trace_id")

_EMPTY: Mapping[str, str] = MappingProxyType({})
# One immutable mapping per context: binding copies it, so a task never sees another task's ids.
_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar("jobwire_log_context", default=_EMPTY)
_RECORD_KEY = "jobwire_context"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is printed too.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    _RECORD_KEY,
}


def current_fields() -> Mapping[str, str]:
    """The context fields bound right now."""
    return _CONTEXT.get()


def bind(**fields: str | None) -> Token[Mapping[str, str]]:
    """Adds fields (None values are skipped) to the current context; `unbind(token)` restores it."""
    merged = dict(_CONTEXT.get())
    merged.update({k: v for k, v in fields.items() if v})
    return _CONTEXT.set(MappingProxyType(merged))


def replace_context(**fields: str | None) -> None:
    """Sets this task's fields to exactly these: for a long-lived task that would otherwise keep the ids
    of the call that happened to create it (tasks copy their creator's context)."""
    _CONTEXT.set(MappingProxyType({k: v for k, v in fields.items() if v}))


def unbind(token: Token[Mapping[str, str]]) -> None:
    """Restores the context of before `bind`. A token of another context (an async generator closed
    from elsewhere) is ignored: that context is gone with its task."""
    with contextlib.suppress(ValueError):
        _CONTEXT.reset(token)


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """`with log_context(job_id=..., worker_id=...):` every record logged inside carries these fields."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


class ContextFilter(logging.Filter):
    """Copies the context fields onto the record when it is emitted, so that a handler formatting it
    later (a queue handler's thread) still prints the ids of the emitting task."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, _RECORD_KEY):
            setattr(record, _RECORD_KEY, _CONTEXT.get())
        return True


def _fields_of(record: logging.LogRecord) -> Mapping[str, str]:
    fields: Mapping[str, str] | None = getattr(record, _RECORD_KEY, None)
    return fields if fields is not None else _CONTEXT.get()


def _ordered(fields: Mapping[str, str]) -> list[tuple[str, str]]:
    known = [(k, fields[k]) for k in FIELDS if k in fields]
    return known + [(k, v) for k, v in fields.items() if k not in FIELDS]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the context fields, any
    `extra=` attributes, and `exception` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(_ordered(_fields_of(record)))
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in document:
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        # default=str: an `extra=` value that is not JSON (a datetime, an enum) is printed, not fatal.
        return json.dumps(document, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [request_id=... job_id=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields_of(record)
        if not fields:
            return line
        suffix = " ".join(f"{k}={v}" for k, v in _ordered(fields))
        head, newline, tail = line.partition("\n")  # keep a traceback below the suffixed first line
        return f"{head} [{suffix}]{newline}{tail}"


_HANDLER_MARK = "_jobwire_handler"


def configure_logging(
    level: str = "info", *, json_lines: bool = False, stream: IO[str] | None = None
) -> None:
    """Sends every log record (jobwire's, uvicorn's, grpc's, Python's warnings) to `stream` (stderr), as
    text lines or JSON lines.

    Calling it again replaces the handler it installed before; handlers installed by others stay.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(ContextFilter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Python's warnings become records too (logger `py.warnings`), so stderr stays one format.
    logging.captureWarnings(True)
    # Alembic announces each of its plugins at INFO on every start: noise, not news.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(root.level, logging.WARNING))
