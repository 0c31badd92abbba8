"""s3Config reaches the worker and nothing else: no response, listing, metric or log line carries it."""

from __future__ import annotations

import logging

import pytest

from server_fixtures import ENDPOINT, Running
from worker_fixtures import RawWorker

SECRET = "s3-secret-7f3a"


async def test_s3_config_reaches_the_worker_only(jobwire: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"input": {"n": 1}, "s3Config": {"accessId": "id", "accessSecret": SECRET, "bucketName": "b"}}
    submitted = await jobwire.http.post(f"/v2/{ENDPOINT}/run", json=body, headers=jobwire.headers())
    assert SECRET not in submitted.text
    worker = RawWorker(jobwire.channel, jobwire.keys["worker"], ENDPOINT, "w1")
    await worker.start()
    try:
        assign = await worker.assignment()
        assert SECRET.encode() in assign.s3_config
        worker.result(assign, output=b'{"ok": true}')
        done = await jobwire.http.get(
            f"/v2/{ENDPOINT}/status-sync/{submitted.json()['id']}?wait=10000", headers=jobwire.headers()
        )
    finally:
        worker.close()
    assert done.json()["status"] == "COMPLETED"
    seen = [
        done.text,
        (await jobwire.http.get(f"/v2/{ENDPOINT}/requests", headers=jobwire.headers())).text,
        (await jobwire.http.get("/v1/endpoints", headers=jobwire.headers("admin"))).text,
        (await jobwire.http.get("/metrics")).text,
        caplog.text,
    ]
    assert all(SECRET not in text for text in seen)
