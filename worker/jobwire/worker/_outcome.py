"""Runpod's handler conventions: the job dict a handler gets, and how what it returns or yields maps to
a Result, chunks and errors. Mirrors `runpod.serverless` so that handlers port unchanged."""

from __future__ import annotations

import json
import socket
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jobwire.v1 import worker_pb2


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: JSON output (None: no output), an error, and whether to recycle after."""

    output: bytes | None = None
    error: str | None = None
    refresh: bool = False


class ChunkTooLarge(ValueError):
    """A yielded value that is not a string encodes to more than the server's chunk limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"a yielded value encodes to {size} bytes, over the server's chunk limit of {limit} bytes; "
            "only strings are split across chunks, so yield smaller values"
        )


def dumps(value: object) -> bytes:
    """Compact UTF-8 JSON. NaN and infinities are refused: they are not JSON and the server rejects them."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def job_dict(assign: worker_pb2.Assign) -> dict[str, Any]:
    """The dict a Runpod handler receives: id, input, and s3Config / webhook when the client sent them."""
    job: dict[str, Any] = {"id": assign.job_id, "input": json.loads(assign.input) if assign.input else None}
    if assign.s3_config:
        job["s3Config"] = json.loads(assign.s3_config)
    if assign.webhook:
        job["webhook"] = assign.webhook
    return job


def from_return(value: object) -> Outcome:
    """What a handler returned, as Runpod reads it.

    A dict loses its `error` and `refresh_worker` keys: a truthy `error` fails the attempt with
    `str(error)`, a truthy `refresh_worker` recycles the worker afterwards, and whatever is left (if
    anything) is the output. None means no output; any other value is the output.
    """
    if isinstance(value, dict):
        rest = dict(value)
        error = rest.pop("error", None)
        refresh = bool(rest.pop("refresh_worker", None))
        output = dumps(rest) if rest else None
        return Outcome(output=output, error=str(error) if error else None, refresh=refresh)
    if value is None:
        return Outcome()
    return Outcome(output=dumps(value))


def error_report(exc: BaseException, worker_id: str) -> str:
    """The error string of an attempt whose handler raised: a JSON object with the fields Runpod uses."""
    return json.dumps(
        {
            "error_type": str(type(exc)),
            "error_message": str(exc),
            "error_traceback": "".join(traceback.format_exception(exc)),
            "hostname": socket.gethostname(),
            "worker_id": worker_id,
        }
    )


def stream_error(item: object) -> str | None:
    """The error a generator reported by yielding `{"error": ...}`, if it did (Runpod ends the job there)."""
    if isinstance(item, dict) and item.get("error"):
        return str(item["error"])
    return None


def chunk_payloads(item: object, limit: int) -> list[bytes]:
    """One yielded value as chunk payloads of at most `limit` bytes each.

    A string too long for one chunk is cut into several strings; anything else must fit in one chunk.
    """
    data = dumps(item)
    if len(data) <= limit:
        return [data]
    if not isinstance(item, str):
        raise ChunkTooLarge(len(data), limit)
    return [dumps(piece) for piece in split_string(item, limit)]


def split_string(text: str, limit: int) -> Iterator[str]:
    """Consecutive slices of `text` whose JSON encodings take at most `limit` bytes each.

    Slices are cut between code points, so no character is ever split. The JSON size of a slice depends
    on its escapes and multi-byte characters, so each slice starts at the most characters that could fit
    and shrinks in proportion to how far over the limit it encodes. Under 8 bytes a single character
    may not fit (`"\\u001f"`); it then gets a slice of its own, over the limit.
    """
    room = limit - 2  # the quotes
    start = 0
    while start < len(text):
        end = min(len(text), start + max(1, room))
        while (size := len(dumps(text[start:end])) - 2) > room and end - start > 1:
            length = end - start
            end = start + max(1, min(length - 1, length * room // size))
        yield text[start:end]
        start = end
