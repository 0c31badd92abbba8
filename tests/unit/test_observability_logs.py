"""Structured logs: context fields, the JSON and text formats, the handler `configure_logging` installs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from enum import Enum

import pytest

from jobwire.server.observability import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    current_fields,
    log_context,
)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A logger of its own whose records land, JSON-formatted, in a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("test.observability.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class Colour(Enum):
    RED = "red"


def test_json_lines_carry_the_context_fields_and_extras(
    logged: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, _ = logged
    logger.info("before")
    with log_context(request_id="r1", endpoint="ep"), log_context(job_id="j1", worker_id=None):
        logger.warning("inside %s", "nested", extra={"attempt": 2, "colour": Colour.RED})
    logger.info("after")
    before, inside, after = lines(stream)
    assert set(before) == {"time", "level", "logger", "message"}
    assert str(before["time"]).endswith("Z") and before["logger"] == "test.observability.logs"
    assert inside["message"] == "inside nested" and inside["level"] == "WARNING"
    assert (inside["request_id"], inside["endpoint"], inside["job_id"]) == ("r1", "ep", "j1")
    assert "worker_id" not in inside  # None values are not bound
    assert inside["attempt"] == 2 and inside["colour"] == "Colour.RED"  # not JSON: printed, not fatal
    assert set(after) == {"time", "level", "logger", "message"}


def test_an_exception_is_one_field_of_one_line(
    logged: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, _ = logged
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("it failed")
    assert len(stream.getvalue().splitlines()) == 1
    (line,) = lines(stream)
    assert line["message"] == "it failed" and "ValueError: boom" in str(line["exception"])


async def test_tasks_keep_their_own_context() -> None:
    seen: dict[str, object] = {}

    async def job(name: str, started: asyncio.Event, other: asyncio.Event) -> None:
        with log_context(job_id=name):
            started.set()
            await other.wait()  # the other task binds its id meanwhile
            seen[name] = dict(current_fields())

    a, b = asyncio.Event(), asyncio.Event()
    await asyncio.gather(job("a", a, b), job("b", b, a))
    assert seen == {"a": {"job_id": "a"}, "b": {"job_id": "b"}}
    assert dict(current_fields()) == {}


def test_the_text_format_ends_with_the_context_fields() -> None:
    formatter = TextFormatter()
    record = logging.LogRecord("jobwire.x", logging.INFO, __file__, 1, "hello", None, None)
    assert formatter.format(record).endswith("INFO jobwire.x: hello")
    with log_context(job_id="j1", request_id="r1"):
        record = logging.LogRecord("jobwire.x", logging.INFO, __file__, 1, "hello", None, None)
        assert formatter.format(record).endswith("jobwire.x: hello [request_id=r1 job_id=j1]")


def test_configure_logging_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_logging("debug", json_lines=False, stream=first)
        configure_logging("info", json_lines=True, stream=second)
        assert len(root.handlers) == len(before) + 1 and root.level == logging.INFO
        logging.getLogger("jobwire.test").info("to the second", extra={"k": "v"})
        logging.getLogger("jobwire.test").debug("below the level")
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)
    assert first.getvalue() == ""
    (line,) = [json.loads(text) for text in second.getvalue().splitlines()]
    assert line["message"] == "to the second" and line["k"] == "v"
