"""The generic transcoder over real HTTP with a test-only service: `body: "*"`, a field body,
`response_body`, nested and `**` path variables, verbs, query mapping, deadlines and limits."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from jobwire.server.api.registry import rpcs_of
from jobwire.server.api.transcoder import Transcoder
from unit import transcoder_fixtures as fx

LIMIT = 64


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[tuple[fx.SampleServicer, str]]:
    servicer = fx.SampleServicer()
    async with fx.serve(Transcoder(rpcs_of(fx.SERVICE, servicer), default_max_body=LIMIT)) as url:
        yield servicer, url


@pytest.fixture
def sample(server: tuple[fx.SampleServicer, str]) -> fx.SampleServicer:
    server[0].reset()
    return server[0]


@pytest.fixture
async def client(server: tuple[fx.SampleServicer, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server[1]) as http:
        yield http


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    message: str = response.json()["error"]
    return message


async def test_get_maps_path_and_query(client: httpx.AsyncClient, sample: fx.SampleServicer) -> None:
    response = await client.get(
        "/v1/samples/s%201",
        params=[("count", "3"), ("tags", "a"), ("tags", "b"), ("inner.color", "RED"), ("id", "x")],
    )
    assert response.status_code == 200
    (request,) = sample.requests
    assert (request.id, request.count, list(request.tags), request.inner.color) == ("s 1", 3, ["a", "b"], 1)
    assert response.json()["total"] == 1
    assert response.json()["sample"]["tags"] == ["a", "b"]


async def test_additional_binding_with_a_nested_multi_segment_variable(
    client: httpx.AsyncClient, sample: fx.SampleServicer
) -> None:
    assert (await client.get("/v1/shelves/s1/samples/x?inner.name=ignored")).status_code == 200
    (request,) = sample.requests
    assert (request.inner.name, request.id) == ("shelves/s1", "x")


async def test_double_wildcard_variable(client: httpx.AsyncClient, sample: fx.SampleServicer) -> None:
    assert (await client.get("/v1/files/a/b%2Fc/d")).json()["total"] == 3
    assert sample.requests[0].id == "a/b%2Fc/d"


async def test_body_star_takes_everything_and_ignores_the_query(
    client: httpx.AsyncClient, sample: fx.SampleServicer
) -> None:
    response = await client.post("/v1/samples?count=9&flag=true", json={"count": 1, "payload": {"k": [1]}})
    assert response.status_code == 200
    (request,) = sample.requests
    assert (request.count, request.flag, request.payload) == (1, False, b'{"k":[1]}')
    assert response.json()["sample"]["payload"] == {"k": [1]}


async def test_field_body_with_verb_and_raw_response_body(
    client: httpx.AsyncClient, sample: fx.SampleServicer
) -> None:
    response = await client.post("/v1/echo/e1:echo", content=b'{"name": "n", "doc": {"z": 1, "a": 2}}')
    assert response.status_code == 200
    assert response.content == b'{"z": 1, "a": 2}'  # the raw_json member as the client wrote it
    assert sample.requests[0].inner.name == "n"
    empty = await client.post("/v1/echo/e1:echo")
    assert (empty.status_code, empty.content) == (200, b"null")


async def test_repeated_scalar_body_and_response_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/tags", json=["a", "b"])
    assert (response.status_code, response.json()) == (200, ["a", "b"])
    assert "tags" in error_of(await client.post("/v1/tags", json={"a": 1}), 400)


async def test_rpcs_without_a_rule_are_not_served(client: httpx.AsyncClient) -> None:
    assert (
        error_of(await client.post("/transcoder_test.v1.SampleService/Hidden", json={}), 404) == "not found"
    )


async def test_default_body_limit(client: httpx.AsyncClient, sample: fx.SampleServicer) -> None:
    too_long = json.dumps({"payload": "x" * LIMIT}).encode()
    assert (
        error_of(await client.post("/v1/samples", content=too_long), 413)
        == f"request body is larger than {LIMIT} bytes"
    )

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(LIMIT + 1):
            yield b" "

    assert error_of(await client.post("/v1/samples", content=chunked()), 413).endswith(f"{LIMIT} bytes")
    assert sample.requests == []
    exact = b'{"payload": "' + b"x" * (LIMIT - 15) + b'"}'
    assert len(exact) == LIMIT
    assert (await client.post("/v1/samples", content=exact)).status_code == 200


async def test_metadata_and_timeout_reach_the_handler(
    client: httpx.AsyncClient, sample: fx.SampleServicer
) -> None:
    headers = {
        "authorization": "k",
        "grpc-metadata-Tenant": "acme",
        "x-request-id": "r1",
        "idempotency-key": "i1",
        "cookie": "no",
        "grpc-timeout": "30S",
    }
    assert (await client.get("/v1/samples/m", headers=headers)).status_code == 200
    assert list(sample.metadata[0]) == [
        ("authorization", "k"),
        ("tenant", "acme"),
        ("x-request-id", "r1"),
        ("idempotency-key", "i1"),
    ]
    assert sample.time_remaining is not None and 0 < sample.time_remaining <= 30
    assert "grpc-timeout" in error_of(
        await client.get("/v1/samples/m", headers={"grpc-timeout": "soon"}), 400
    )


async def test_deadline_exceeded_is_504(client: httpx.AsyncClient, sample: fx.SampleServicer) -> None:
    response = await client.get("/v1/samples/slow", headers={"grpc-timeout": "20m"})
    assert error_of(response, 504) == "deadline exceeded"
    assert sample.cancelled.is_set()


async def test_abort_and_crash_statuses(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    assert error_of(await client.get("/v1/samples/denied"), 403) == "not yours"
    assert error_of(await client.get("/v1/samples/crash"), 500) == "internal error"
    assert [r.name for r in caplog.records if r.levelno == logging.ERROR] == ["jobwire.http"]


async def test_stream_lines(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/samples/two:watch")
    assert response.status_code == 200
    first, second, end = response.content.split(b"\n")
    assert json.loads(first) == {
        "result": {
            "sample": {
                "id": "",
                "count": 0,
                "tags": [],
                "color": "COLOR_UNSPECIFIED",
                "flag": False,
                "items": [],
                "docs": [],
                "big": "0",
                "ratio": 0.0,
                "labels": {},
                "blob": "",
                "numbers": [],
                "huge": "0",
                "ratio32": 0.0,
                "payload": {"n": 1},
            },
            "total": 1,
            "plains": [],
        }
    }
    assert (second, end) == (b'{"result":{"total":2,"plains":[]}}', b"")


@pytest.mark.parametrize(
    ("sample_id", "status", "body"),
    [
        ("fail-first", 404, {"error": "no such sample"}),
        ("fail-later", 200, [{"total": 1}, {"error": {"code": 14, "message": "the store went away"}}]),
        ("crash-later", 200, [{"total": 1}, {"error": {"code": 13, "message": "internal error"}}]),
    ],
)
async def test_stream_errors(client: httpx.AsyncClient, sample_id: str, status: int, body: Any) -> None:
    response = await client.get(f"/v1/samples/{sample_id}:watch")
    assert response.status_code == status
    if status != 200:
        assert response.json() == body
        return
    lines = [json.loads(line) for line in response.content.splitlines()]
    assert [{"total": line["result"]["total"]} if "result" in line else line for line in lines] == body


async def test_stream_deadline(client: httpx.AsyncClient, sample: fx.SampleServicer) -> None:
    before = await client.get("/v1/samples/slow-first:watch", headers={"grpc-timeout": "20m"})
    assert error_of(before, 504) == "deadline exceeded"
    sample.reset()
    after = await client.get("/v1/samples/slow:watch", headers={"grpc-timeout": "20m"})
    assert after.status_code == 200
    assert json.loads(after.content.splitlines()[-1]) == {
        "error": {"code": 4, "message": "deadline exceeded"}
    }
    assert sample.closed.is_set()


async def test_a_stream_is_closed_when_the_client_leaves(
    client: httpx.AsyncClient, sample: fx.SampleServicer
) -> None:
    async with client.stream("GET", "/v1/samples/slow:watch") as response:
        assert json.loads(await anext(response.aiter_lines()))["result"]["total"] == 1
        await asyncio.wait_for(sample.entered.wait(), 5)
    await asyncio.wait_for(sample.closed.wait(), 5)
    assert sample.cancelled.is_set()


async def test_lifespan_and_websocket_scopes() -> None:
    app = Transcoder(rpcs_of(fx.SERVICE, fx.SampleServicer()))
    sent: list[dict[str, Any]] = []
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app({"type": "lifespan"}, receive, send)
    await app({"type": "websocket"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "websocket.close",
    ]
