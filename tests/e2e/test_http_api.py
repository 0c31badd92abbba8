"""The Runpod /v2 REST facade over real HTTP on loopback, against a real Postgres."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from jobwire.server.model import JobStatus
from jobwire.server.store import JobStore
from server_fixtures import ENDPOINT, Running, claim_and, run

MB = 1024 * 1024


async def test_run_answers_200_json_with_a_new_queued_id(jobwire: Running) -> None:
    response = await run(jobwire)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"id", "status"} and body["status"] == "IN_QUEUE"
    assert (await run(jobwire)).json()["id"] != body["id"]


async def test_the_bare_key_is_accepted_as_well_as_bearer(jobwire: Running) -> None:
    response = await jobwire.http.post(
        f"/v2/{ENDPOINT}/run", json={"input": 1}, headers={"Authorization": jobwire.keys["client"]}
    )
    assert response.status_code == 200


async def test_status_of_a_queued_job_by_get_and_post(jobwire: Running) -> None:
    job_id = (await run(jobwire)).json()["id"]
    for method in ("GET", "POST"):
        response = await jobwire.http.request(
            method, f"/v2/{ENDPOINT}/status/{job_id}", headers=jobwire.headers()
        )
        assert response.status_code == 200
        assert response.json() == {"id": job_id, "status": "IN_QUEUE"}


async def test_status_of_an_unknown_job_is_404_with_a_json_error(jobwire: Running) -> None:
    response = await jobwire.http.get(f"/v2/{ENDPOINT}/status/nope", headers=jobwire.headers())
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "nope" in response.json()["error"]


async def test_completed_job_shows_output_and_integer_timings(jobwire: Running) -> None:
    job_id = (await run(jobwire)).json()["id"]
    output = b'{"big": 123456789012345678901234567890, "x": 1.50, "list": [1, 2]}'
    await claim_and(jobwire, JobStatus.COMPLETED, output)
    response = await jobwire.http.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=jobwire.headers())
    body = response.json()
    assert body["status"] == "COMPLETED"
    assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)
    assert body["workerId"] == "w-test"
    # The output is spliced byte for byte: no float conversion, no re-serialisation.
    assert b'"output":{"big": 123456789012345678901234567890, "x": 1.50, "list": [1, 2]}' in response.content


async def test_input_reaches_the_worker_byte_exact(jobwire: Running) -> None:
    raw = b'{"input": {"n": 18446744073709551617, "f": 2.50, "s": "\\u00e9"}, "webhook": null}'
    response = await jobwire.http.post(
        f"/v2/{ENDPOINT}/run", content=raw, headers={**jobwire.headers(), "Content-Type": "application/json"}
    )
    assert response.status_code == 200
    store = JobStore(jobwire.server.database)
    now = datetime.now(UTC)
    (claimed,) = await store.claim_jobs(ENDPOINT, "w", 1, now + timedelta(seconds=30), now)
    assert json.loads(claimed.input) == {"n": 18446744073709551617, "f": 2.5, "s": "é"}
    assert b"18446744073709551617" in claimed.input


async def test_cancel_a_queued_job_then_cancel_again(jobwire: Running) -> None:
    job_id = (await run(jobwire)).json()["id"]
    for _ in range(2):
        response = await jobwire.http.post(f"/v2/{ENDPOINT}/cancel/{job_id}", headers=jobwire.headers())
        assert response.status_code == 200
        assert response.json() == {"id": job_id, "status": "CANCELLED"}
    missing = await jobwire.http.post(f"/v2/{ENDPOINT}/cancel/nope", headers=jobwire.headers())
    assert missing.status_code == 404


async def test_purge_removes_only_queued_jobs_and_health_counts_them(jobwire: Running) -> None:
    for _ in range(4):
        await run(jobwire)
    await claim_and(jobwire, None)  # one running
    purge = await jobwire.http.post(f"/v2/{ENDPOINT}/purge-queue", headers=jobwire.headers())
    assert purge.json() == {"removed": 3, "status": "completed"}
    again = await jobwire.http.post(f"/v2/{ENDPOINT}/purge-queue", content=b"", headers=jobwire.headers())
    assert again.json() == {"removed": 0, "status": "completed"}
    health = (await jobwire.http.get(f"/v2/{ENDPOINT}/health", headers=jobwire.headers())).json()
    assert health == {
        "jobs": {"completed": 0, "failed": 0, "inProgress": 1, "inQueue": 0, "retried": 0},
        "workers": {"idle": 0, "initializing": 0, "ready": 0, "running": 0, "throttled": 0, "unhealthy": 0},
    }


async def test_runsync_returns_the_current_state_when_nothing_finishes(jobwire: Running) -> None:
    response = await jobwire.http.post(
        f"/v2/{ENDPOINT}/runsync?wait=1000", json={"input": {}}, headers=jobwire.headers()
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "IN_QUEUE" and body["id"].startswith("sync-")


async def test_runsync_returns_the_result_when_the_job_ends_within_the_wait(jobwire: Running) -> None:
    call = asyncio.create_task(
        jobwire.http.post(f"/v2/{ENDPOINT}/runsync?wait=30000", json={"input": {}}, headers=jobwire.headers())
    )
    while (await jobwire.http.get(f"/v2/{ENDPOINT}/health", headers=jobwire.headers())).json()["jobs"][
        "inQueue"
    ] == 0:
        await asyncio.sleep(0.01)
    await claim_and(jobwire, JobStatus.COMPLETED, b'{"sum": 3}')
    body = (await call).json()
    assert body["status"] == "COMPLETED" and body["output"] == {"sum": 3}


async def test_status_sync_waits_for_the_end(jobwire: Running) -> None:
    job_id = (await run(jobwire)).json()["id"]
    call = asyncio.create_task(
        jobwire.http.get(f"/v2/{ENDPOINT}/status-sync/{job_id}?wait=30000", headers=jobwire.headers())
    )
    await claim_and(jobwire, JobStatus.FAILED, None, "bad seed")
    body = (await call).json()
    assert (body["status"], body["error"]) == ("FAILED", "bad seed")


async def test_retry_only_from_failed_or_timed_out(jobwire: Running) -> None:
    job_id = (await run(jobwire)).json()["id"]
    queued = await jobwire.http.post(f"/v2/{ENDPOINT}/retry/{job_id}", headers=jobwire.headers())
    assert queued.status_code == 400 and "IN_QUEUE" in queued.json()["error"]
    await claim_and(jobwire, JobStatus.FAILED, b'{"partial": 1}', "boom")
    retried = await jobwire.http.post(f"/v2/{ENDPOINT}/retry/{job_id}", headers=jobwire.headers())
    assert retried.json() == {"id": job_id, "status": "IN_QUEUE", "retries": 1}
    status = (await jobwire.http.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=jobwire.headers())).json()
    assert "output" not in status and "error" not in status
    health = (await jobwire.http.get(f"/v2/{ENDPOINT}/health", headers=jobwire.headers())).json()
    assert health["jobs"]["retried"] == 1
    assert (
        await jobwire.http.post(f"/v2/{ENDPOINT}/retry/nope", headers=jobwire.headers())
    ).status_code == 404


async def test_stream_read_returns_new_chunks_once(jobwire: Running) -> None:
    job_id = (await run(jobwire)).json()["id"]
    store = JobStore(jobwire.server.database)
    now = datetime.now(UTC)
    (claimed,) = await store.claim_jobs(ENDPOINT, "w", 1, now + timedelta(seconds=30), now)
    for seq, text in enumerate(["tok1", "tok2"], start=1):
        await store.append_chunk(job_id, claimed.job.attempt, seq, json.dumps(text).encode(), now)
    first = (await jobwire.http.get(f"/v2/{ENDPOINT}/stream/{job_id}", headers=jobwire.headers())).json()
    assert first == {
        "id": job_id,
        "status": "IN_PROGRESS",
        "stream": [{"output": "tok1"}, {"output": "tok2"}],
    }
    await store.finish_job(job_id, claimed.job.attempt, JobStatus.COMPLETED, b"[]", None, now)
    last = (
        await jobwire.http.get(f"/v2/{ENDPOINT}/stream/{job_id}?wait=1000", headers=jobwire.headers())
    ).json()
    assert last == {"id": job_id, "status": "COMPLETED", "stream": []}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"input": ', "malformed JSON"),
        (b"{}", "input is required"),
        (b"", "input is required"),
        (b'{"input": 1, "policy": {"executionTimeout": 10}}', "policy.executionTimeout"),
        (b'{"input": 1, "policy": {"ttl": 1000}}', "policy.ttl"),
        (b'{"input": 1, "policy": {"executionTimeout": "soon"}}', "executionTimeout"),
        (b'{"input": 1, "webhook": "ftp://x"}', "webhook"),
        (b"[1, 2]", "JSON object"),
    ],
)
async def test_bad_bodies_get_400_with_a_json_error_and_store_nothing(
    jobwire: Running, body: bytes, needle: str
) -> None:
    response = await jobwire.http.post(
        f"/v2/{ENDPOINT}/run", content=body, headers={**jobwire.headers(), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert needle in response.json()["error"]
    health = (await jobwire.http.get(f"/v2/{ENDPOINT}/health", headers=jobwire.headers())).json()
    assert health["jobs"]["inQueue"] == 0


@pytest.mark.parametrize(("route", "limit_mb"), [("run", 10), ("runsync?wait=1000", 20)])
async def test_oversize_payloads_get_413_and_store_nothing(
    jobwire: Running, route: str, limit_mb: int
) -> None:
    body = b'{"input": "' + b"x" * (limit_mb * MB) + b'"}'
    response = await jobwire.http.post(
        f"/v2/{ENDPOINT}/{route}",
        content=body,
        headers={**jobwire.headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert "error" in response.json()
    health = (await jobwire.http.get(f"/v2/{ENDPOINT}/health", headers=jobwire.headers())).json()
    assert health["jobs"]["inQueue"] == 0


async def test_a_payload_just_under_the_run_limit_is_accepted(jobwire: Running) -> None:
    body = b'{"input": "' + b"x" * (10 * MB - 100) + b'"}'
    response = await jobwire.http.post(
        f"/v2/{ENDPOINT}/run", content=body, headers={**jobwire.headers(), "Content-Type": "application/json"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "path", "status"),
    [
        ({}, f"/v2/{ENDPOINT}/health", 401),
        ({"Authorization": "Bearer jw_wrong"}, f"/v2/{ENDPOINT}/health", 401),
        ("other", f"/v2/{ENDPOINT}/health", 403),
        ("worker", f"/v2/{ENDPOINT}/health", 403),
        ("client", "/v2/unknown/health", 404),
        ("admin", f"/v2/{ENDPOINT}/health", 200),
        ("other", "/v2/other/health", 200),
    ],
)
async def test_keys_are_checked_against_endpoint_and_role(
    jobwire: Running, headers: dict[str, str] | str, path: str, status: int
) -> None:
    sent = jobwire.headers(headers) if isinstance(headers, str) else headers
    response = await jobwire.http.get(path, headers=sent)
    assert response.status_code == status
    if status != 200:
        assert response.json()["error"]


async def test_a_key_of_another_endpoint_cannot_read_or_cancel_its_jobs(jobwire: Running) -> None:
    job_id = (await run(jobwire)).json()["id"]
    for method, path in [("GET", "status"), ("POST", "cancel"), ("POST", "retry"), ("GET", "stream")]:
        response = await jobwire.http.request(
            method, f"/v2/{ENDPOINT}/{path}/{job_id}", headers=jobwire.headers("other")
        )
        assert response.status_code == 403
        # ...and through its own endpoint the job does not exist.
        response = await jobwire.http.request(
            method, f"/v2/other/{path}/{job_id}", headers=jobwire.headers("other")
        )
        assert response.status_code == 404


async def test_unknown_routes_are_404_json(jobwire: Running) -> None:
    response = await jobwire.http.get("/v2/ep/nothing-here", headers=jobwire.headers())
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
