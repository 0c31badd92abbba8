"""Webhooks, idempotency, result retention and pruning against real HTTP receivers on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from jobwire.server.clock import ManualClock
from jobwire.server.service.dispatch import DispatchSettings
from jobwire.server.service.webhooks import WebhookSettings
from jobwire.server.store.webhooks import DeliveryState, WebhookStore
from server_fixtures import ENDPOINT, Running, create_keys, running, start_jobwire
from worker_fixtures import RawWorker


@dataclass
class Receiver:
    """An HTTP server that answers with the statuses it is given (None: never answers)."""

    answers: list[int | None]
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def hook(self, request: Request) -> Response:
        self.received.append((dict(request.headers), await request.body()))
        self.arrived.set()
        answer = self.answers.pop(0) if self.answers else 200
        if answer is None:
            await asyncio.Event().wait()  # hangs until the sender gives up
            answer = 200
        return Response(status_code=answer)

    async def wait_for(self, count: int) -> None:
        while len(self.received) < count:
            self.arrived.clear()
            await self.arrived.wait()


@pytest.fixture
async def receiver_factory() -> AsyncIterator[Any]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def make(answers: list[int | None]) -> Receiver:
        receiver = Receiver(answers)
        config = uvicorn.Config(
            Router(routes=[Route("/hook", receiver.hook, methods=["POST"])]),
            host="127.0.0.1", port=0, lifespan="off", log_level="warning", timeout_graceful_shutdown=1,
        )  # fmt: skip
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        receiver.url = f"http://127.0.0.1:{port}/hook"
        servers.append((server, task))
        return receiver

    yield make
    for server, task in servers:
        server.should_exit = True
        await task


FAST = WebhookSettings(retry_delays_s=(10.0, 10.0), timeout_s=0.5, poll_interval_s=0.02)
TICKS = DispatchSettings(heartbeat_interval_ms=50, sweep_interval_s=0.02)


@pytest.fixture
async def service(database_url: str, clock: ManualClock) -> AsyncIterator[Running]:
    server = await start_jobwire(database_url, clock=clock, webhook_settings=FAST, dispatch_settings=TICKS)
    async with running(server) as service:
        yield service


async def settled(service: Running, job_id: str, attempts: int) -> DeliveryState:
    """Waits until the sender has recorded the outcome of attempt `attempts` (so the clock may move)."""
    store = WebhookStore(service.server.database)
    while True:
        states = await store.states(ENDPOINT, job_id)
        if not states:  # the worker's result is not stored yet
            await asyncio.sleep(0.01)
            continue
        (state,) = states
        ended = state.delivered_at is not None or state.failed_at is not None
        retrying = state.last_error is not None and state.next_attempt_at > service.server.clock.now()
        if state.attempts == attempts and (ended or retrying):
            return state
        await asyncio.sleep(0.01)


async def complete_one(service: Running, output: bytes) -> str:
    worker = RawWorker(service.channel, service.keys["worker"], ENDPOINT, "w")
    await worker.start()
    assign = await worker.assignment()
    worker.result(assign, output)
    worker.close()
    return assign.job_id


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    expected = base64.b64encode(
        hmac.new(
            secret.encode(),
            f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body,
            hashlib.sha256,
        ).digest()
    ).decode()
    return headers["webhook-signature"] == f"v1,{expected}"


async def test_a_completed_job_is_posted_signed_without_s3_config(
    service: Running, receiver_factory: Any
) -> None:
    receiver = await receiver_factory([200])
    body = {
        "input": {"n": 12345678901234567890},
        "webhook": receiver.url,
        "s3Config": {"accessSecret": "shh"},
    }
    await service.http.post(f"/v2/{ENDPOINT}/run", json=body, headers=service.headers())
    job_id = await complete_one(service, b'{"ok": 1}')
    await receiver.wait_for(1)
    headers, raw = receiver.received[0]
    document = json.loads(raw)
    assert document["id"] == job_id and document["status"] == "COMPLETED"
    assert document["output"] == {"ok": 1} and document["input"] == {"n": 12345678901234567890}
    assert document["webhook"] == receiver.url
    assert b"shh" not in raw and b"s3Config" not in raw
    endpoint = await service.server.admin.ensure_endpoint(ENDPOINT)
    assert verify(endpoint.webhook_secret, headers, raw)
    assert not verify("another secret", headers, raw)


async def test_a_receiver_that_fails_twice_gets_the_third_try(
    service: Running, receiver_factory: Any, clock: ManualClock
) -> None:
    receiver = await receiver_factory([500, 503, 200])
    await service.http.post(
        f"/v2/{ENDPOINT}/run", json={"input": 1, "webhook": receiver.url}, headers=service.headers()
    )
    job_id = await complete_one(service, b"1")
    for tries in (1, 2):
        state = await settled(service, job_id, tries)
        assert state.last_error == ("HTTP 500" if tries == 1 else "HTTP 503")
        clock.advance(seconds=10)
    assert (await settled(service, job_id, 3)).delivered_at is not None
    assert [json.loads(body)["status"] for _, body in receiver.received] == ["COMPLETED"] * 3
    assert len({headers["webhook-id"] for headers, _ in receiver.received}) == 1  # the same message, again
    metrics = (await service.http.get("/metrics")).text
    assert 'jobwire_webhook_deliveries_total{endpoint="ep",outcome="retrying"} 2.0' in metrics
    assert 'jobwire_webhook_deliveries_total{endpoint="ep",outcome="delivered"} 1.0' in metrics


async def test_a_receiver_that_never_answers_is_tried_three_times_then_given_up(
    service: Running, receiver_factory: Any, clock: ManualClock
) -> None:
    receiver = await receiver_factory([None, None, None, 200])
    await service.http.post(
        f"/v2/{ENDPOINT}/run", json={"input": 1, "webhook": receiver.url}, headers=service.headers()
    )
    job_id = await complete_one(service, b"1")
    for tries in (1, 2):
        assert "Timeout" in str((await settled(service, job_id, tries)).last_error)
        clock.advance(seconds=10)
    given_up = await settled(service, job_id, 3)
    assert given_up.failed_at is not None and given_up.delivered_at is None
    assert len(receiver.received) == 3
    metrics = (await service.http.get("/metrics")).text
    assert 'jobwire_webhook_deliveries_total{endpoint="ep",outcome="gave_up"} 1.0' in metrics


async def test_cancelled_jobs_are_posted_too(service: Running, receiver_factory: Any) -> None:
    receiver = await receiver_factory([200])
    job = (
        await service.http.post(
            f"/v2/{ENDPOINT}/run", json={"input": 1, "webhook": receiver.url}, headers=service.headers()
        )
    ).json()
    await service.http.post(f"/v2/{ENDPOINT}/cancel/{job['id']}", headers=service.headers())
    await receiver.wait_for(1)
    assert json.loads(receiver.received[0][1])["status"] == "CANCELLED"


async def test_a_restart_between_commit_and_delivery_still_delivers(
    database_url: str, receiver_factory: Any, clock: ManualClock
) -> None:
    receiver = await receiver_factory([200])
    first = await start_jobwire(database_url, clock=clock, webhook_settings=WebhookSettings(enabled=False))
    keys = await create_keys(first)
    async with running(first, keys) as before:
        await before.http.post(
            f"/v2/{ENDPOINT}/run", json={"input": 1, "webhook": receiver.url}, headers=before.headers()
        )
        job_id = await complete_one(before, b'"done"')
        while (await before.http.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=before.headers())).json()[
            "status"
        ] != "COMPLETED":
            await asyncio.sleep(0.01)
    assert receiver.received == []  # the first process ended with the delivery only in the outbox
    second = await start_jobwire(database_url, clock=clock, webhook_settings=FAST)
    async with running(second, keys):
        await receiver.wait_for(1)
    assert json.loads(receiver.received[0][1])["id"] == job_id


async def test_an_idempotency_key_returns_the_first_job(service: Running) -> None:
    headers = {**service.headers(), "Idempotency-Key": "order-42"}
    first = (await service.http.post(f"/v2/{ENDPOINT}/run", json={"input": 1}, headers=headers)).json()
    again = (await service.http.post(f"/v2/{ENDPOINT}/run", json={"input": 2}, headers=headers)).json()
    other = (
        await service.http.post(f"/v2/{ENDPOINT}/run", json={"input": 3}, headers=service.headers())
    ).json()
    assert again["id"] == first["id"] and other["id"] != first["id"]
    health = (await service.http.get(f"/v2/{ENDPOINT}/health", headers=service.headers())).json()
    assert health["jobs"]["inQueue"] == 2


async def test_a_runsync_with_a_used_idempotency_key_waits_for_the_first_job(service: Running) -> None:
    headers = {**service.headers(), "Idempotency-Key": "sync-7"}
    first = (await service.http.post(f"/v2/{ENDPOINT}/run", json={"input": 1}, headers=headers)).json()
    repeat = asyncio.ensure_future(
        service.http.post(f"/v2/{ENDPOINT}/runsync?wait=30000", json={"input": 2}, headers=headers)
    )
    assert await complete_one(service, b'"first"') == first["id"]
    answer = (await repeat).json()
    assert (answer["id"], answer["status"], answer["output"]) == (first["id"], "COMPLETED", "first")


async def test_status_ttl_shortens_retention_and_expired_jobs_are_pruned(
    service: Running, clock: ManualClock
) -> None:
    job = (
        await service.http.post(f"/v2/{ENDPOINT}/run", json={"input": 1}, headers=service.headers())
    ).json()
    await service.http.post(f"/v2/{ENDPOINT}/cancel/{job['id']}", headers=service.headers())
    shortened = await service.http.get(
        f"/v2/{ENDPOINT}/status/{job['id']}?ttl=5000", headers=service.headers()
    )
    assert shortened.json()["status"] == "CANCELLED"
    clock.advance(seconds=6)
    assert (
        await service.http.get(f"/v2/{ENDPOINT}/status/{job['id']}", headers=service.headers())
    ).status_code == 404
    assert await service.server.pruner.prune() == 1
    assert await service.server.pruner.prune() == 0
