"""Webhook delivery from the outbox, and the pruning of expired jobs.

A job's webhook is queued in the statement that ends the job (store), so nothing is lost between the
commit and the send. Senders run on every replica, claim due deliveries with SKIP LOCKED, and never sit
on the job path: a slow receiver delays only its own delivery.

Deliveries follow Runpod: a POST of the job's status document (plus `input` and `webhook`; never
`s3Config`) when it ends - COMPLETED and FAILED as Runpod does, and also CANCELLED and TIMED_OUT, so a
receiver learns of every end. A non-2xx answer, or none within the timeout, is retried on a schedule
(Runpod: two more tries, 10 s apart). Each delivery is signed as Standard Webhooks prescribe (as
Replicate does): `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}" keyed with the endpoint's secret>`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import orjson

from jobwire.server.clock import Clock
from jobwire.server.errors import Unavailable
from jobwire.server.store import Delivery, WebhookStore
from jobwire.server.store.database import JOB_ENDED

log = logging.getLogger("jobwire.webhooks")


@dataclass(frozen=True)
class WebhookSettings:
    enabled: bool = True
    #: Seconds to wait before each retry; its length is the number of retries.
    retry_delays_s: tuple[float, ...] = (10.0, 10.0)
    timeout_s: float = 10.0
    poll_interval_s: float = 1.0
    #: The least time between two looks at the outbox. Every ended job wakes the sender, webhook or not;
    #: under load this turns hundreds of wake-ups a second into a look every 50 ms.
    min_interval_s: float = 0.05
    concurrency: int = 20


def status_document(delivery: Delivery) -> bytes:
    """Runpod's webhook body: the status view plus `input` and `webhook`, JSON documents spliced as is."""
    job = delivery.job
    body: dict[str, object] = {"id": job.id, "status": str(job.status)}
    if (delay := job.delay_ms()) is not None:
        body["delayTime"] = delay
    if job.finished_at is not None and (execution := job.execution_ms(job.finished_at)) is not None:
        body["executionTime"] = execution
    if delivery.input is not None:
        body["input"] = orjson.Fragment(delivery.input)
    if job.output is not None:
        body["output"] = orjson.Fragment(job.output)
    if job.error is not None:
        body["error"] = job.error
    if job.worker_id is not None:
        body["workerId"] = job.worker_id
    body["webhook"] = delivery.url
    return orjson.dumps(body)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature header value for this delivery."""
    digest = hmac.new(secret.encode(), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookSender:
    def __init__(
        self,
        store: WebhookStore,
        clock: Clock,
        settings: WebhookSettings | None = None,
        *,
        on_attempt: Callable[[str, str], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.settings = settings or WebhookSettings()
        #: Told (endpoint, outcome) after every attempt: delivered, retrying or gave_up (metrics).
        self._on_attempt = on_attempt
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    def on_notify(self, channel: str, _payload: str) -> None:
        if channel == JOB_ENDED:
            self._wake.set()

    async def start(self) -> None:
        if not self.settings.enabled:
            return
        # No redirects (a receiver cannot bounce a signed body elsewhere) and no proxies from the
        # environment: deliveries go where the client said.
        self._client = httpx.AsyncClient(
            timeout=self.settings.timeout_s, follow_redirects=False, trust_env=False
        )
        self._tasks = [asyncio.create_task(self._deliver_forever(), name="webhooks")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()

    async def _deliver_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_s)
            self._wake.clear()
            try:
                while await self.deliver_due():
                    pass
            except Unavailable:
                log.warning("webhook delivery paused: the database is unavailable")
            except Exception:
                log.exception("webhook delivery failed")
            await asyncio.sleep(self.settings.min_interval_s)

    async def deliver_due(self) -> int:
        """Sends every delivery that is due now; returns how many were attempted."""
        now = self._clock.now()
        lease = now + timedelta(seconds=self.settings.timeout_s + 5)
        due = await self._store.claim(now, lease, limit=self.settings.concurrency)
        await asyncio.gather(*(self._send(delivery) for delivery in due))
        return len(due)

    async def _send(self, delivery: Delivery) -> None:
        assert self._client is not None
        body = status_document(delivery)
        message_id = f"msg_{delivery.id}"
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": "jobwire-webhooks",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(delivery.secret, message_id, timestamp, body),
        }
        try:
            response = await self._client.post(delivery.url, content=body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"
        await self._record(delivery, error)

    async def _record(self, delivery: Delivery, error: str | None) -> None:
        now = self._clock.now()
        retries = self.settings.retry_delays_s
        retry = error is not None and delivery.attempt <= len(retries)
        if self._on_attempt is not None:  # counted first: the attempt happened whatever the store says
            outcome = "delivered" if error is None else "retrying" if retry else "gave_up"
            self._on_attempt(delivery.job.endpoint, outcome)
        if error is None:
            await self._store.delivered(delivery.id, now)
        elif retry:
            at: datetime = now + timedelta(seconds=retries[delivery.attempt - 1])
            await self._store.retry_at(delivery.id, at, error)
        else:
            log.warning("webhook for job %s to %s failed for good: %s", delivery.job.id, delivery.url, error)
            await self._store.give_up(delivery.id, now, error)


class Pruner:
    """Deletes jobs past their result retention or TTL, in batches, on every replica (SKIP LOCKED keeps
    replicas apart). Reads already hide such jobs; this reclaims their rows, payloads and chunks."""

    def __init__(self, store: WebhookStore, clock: Clock, interval_s: float = 5.0, batch: int = 1000) -> None:
        self._store = store
        self._clock = clock
        self._interval_s = interval_s
        self._batch = batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="pruner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def prune(self) -> int:
        """Prunes everything that has expired by now; returns how many jobs went."""
        total = 0
        while (count := await self._store.prune_jobs(self._clock.now(), self._batch)) > 0:
            total += count
            if count < self._batch:
                break
        return total

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.prune()
            except Unavailable:
                log.warning("pruning paused: the database is unavailable")
            except Exception:
                log.exception("pruning failed")
