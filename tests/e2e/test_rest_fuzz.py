"""Schemathesis against the generated OpenAPI document (gen/openapi/jobwire.v1.json) on a live jobwire.

Every operation is fuzzed with positive and negative data and a valid client key of the endpoint, then
with generated endpoint ids, the bare key, another endpoint's key and an unknown key, while an SDK
worker completes the jobs. The checks: no 5xx, a documented status code, content type and headers,
and a body that matches the documented schema. Then the same checks on calls about real jobs, which
random ids never reach. Server bugs it found are kept as regression tests at the end.

Deterministic (Hypothesis derandomized, no example database) and bounded: 25 examples per operation
and mode, and a server whose sync waits are short (JobSettings), so the module takes about 20 s.
Fuzzed webhooks are pointed at a closed loopback port: no request may leave the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobwire.server.service.jobs import JobSettings
from jobwire.worker import Worker
from server_fixtures import ENDPOINT, Running, running, start_jobwire

DOCUMENT = Path(__file__).resolve().parents[2] / "gen" / "openapi" / "jobwire.v1.json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Examples per operation and generation mode (13 operations x 2 modes), plus a few with generated
#: endpoint ids. JOBWIRE_FUZZ_EXAMPLES=500 digs deeper in a local run.
EXAMPLES = int(os.environ.get("JOBWIRE_FUZZ_EXAMPLES", "25"))
OTHER_ENDPOINT_EXAMPLES = max(1, EXAMPLES // 5)
#: Sync waits (runsync, status-sync, the /stream hold) end within these bounds, so no example blocks.
FAST = JobSettings(default_wait_ms=1_000, wait_range_ms=(1_000, 3_000), default_stream_hold_ms=100,
                   max_stream_hold_ms=500)  # fmt: skip
SAFE_WEBHOOK = "http://127.0.0.1:9/fuzz"  # the discard port: nothing listens


@dataclass
class Target:
    base_url: str
    headers: dict[str, str]
    session: requests.Session
    statuses: Counter[int] = field(default_factory=Counter)


async def handler(job: dict[str, Any]) -> AsyncIterator[object]:
    """Streams the `chunks` of an object input, else echoes the input as one chunk."""
    data = job["input"]
    chunks = data.get("chunks") if isinstance(data, dict) else None
    for chunk in chunks if isinstance(chunks, list) else [data]:
        yield chunk


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[Running]:
    """A live jobwire with short sync waits and a worker that completes every job at once."""
    async with running(await start_jobwire(database_url, job_settings=FAST)) as live:
        worker = Worker(
            handler, endpoint=ENDPOINT, key=live.keys["worker"], server=live.server.grpc_target,
            return_aggregate_stream=True, concurrency=4,
        )  # fmt: skip
        task = asyncio.create_task(worker.run())
        try:
            yield live
        finally:
            worker.drain()
            await asyncio.wait_for(task, 30)


def load_schema() -> Any:
    return schemathesis.openapi.from_path(str(DOCUMENT))


def operations() -> list[Any]:
    results = list(load_schema().get_all_operations())
    assert all(isinstance(result, Ok) for result in results)
    return [result.ok() for result in results]


def defuse(case: Case[Any]) -> Case[Any]:
    """Keeps a fuzzed webhook on the loopback: jobwire may call it when the job ends."""
    if isinstance(case.body, dict) and isinstance(case.body.get("webhook"), str):
        case.body["webhook"] = SAFE_WEBHOOK
    return case


def check(case: Case[Any], target: Target) -> schemathesis.Response:
    response = case.call(base_url=target.base_url, session=target.session, headers=target.headers, timeout=20)
    target.statuses[response.status_code] += 1
    case.validate_response(response, checks=CHECKS, headers=target.headers)
    return response


def fuzz(operation: Any, mode: GenerationMode, target: Target, examples: int, **fixed: Any) -> str | None:
    """Runs one operation's examples; the failure report, or None."""
    strategy = operation.as_strategy(generation_mode=mode, **fixed).map(defuse)

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )
    @given(case=strategy)
    def examples_of(case: Case[Any]) -> None:
        check(case, target)

    try:
        examples_of()
    except (Exception, FailureGroup) as exc:  # a check failed, or the call did: report the example
        return f"{operation.label} [{mode.value}]: {exc}"
    return None


def run_all(target: Target, ops: list[Any], others: dict[str, dict[str, str]]) -> list[str]:
    few = OTHER_ENDPOINT_EXAMPLES
    ep = {"endpoint_id": ENDPOINT}
    failures = []
    for operation in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures.append(fuzz(operation, mode, target, EXAMPLES, path_parameters=ep))
        # Any endpoint id (unknown ones: 404; `other`: 403).
        failures.append(fuzz(operation, GenerationMode.POSITIVE, target, few))
        # The bare key (Runpod's SDKs), another endpoint's key (403), an unknown key (401).
        for headers in others.values():
            failures.append(
                fuzz(
                    operation,
                    GenerationMode.POSITIVE,
                    replace(target, headers=headers),
                    few,
                    path_parameters=ep,
                )
            )
    return [failure for failure in failures if failure is not None]


def target_of(live: Running, key: str = "client") -> Target:
    session = requests.Session()
    return Target(live.server.http_url, live.headers(key), session)


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    # The server runs on this event loop; the (blocking) schemathesis calls run beside it.
    return await asyncio.to_thread(function, *args)


async def test_fuzz_every_operation(service: Running) -> None:
    target = target_of(service)
    others = {
        "bare": {"Authorization": service.keys["client"]},
        "other": service.headers("other"),
        "unknown": {"Authorization": "Bearer jw_not_a_key"},
    }
    try:
        failures = await in_thread(run_all, target, operations(), others)
    finally:
        target.session.close()
    assert not failures, "\n\n".join(failures)
    # Not everything was refused: the fuzzing reached the service behind the facade.
    assert all(target.statuses[status] > 0 for status in (200, 400, 401, 403, 404)), target.statuses


# ---- real jobs --------------------------------------------------------------------------------------


def by_id(ops: list[Any]) -> dict[str, Any]:
    return {op.definition.raw["operationId"]: op for op in ops}


def make_case(operation: Any, job_id: str | None = None, **kwargs: Any) -> Case[Any]:
    path = {"endpoint_id": ENDPOINT, **({"job_id": job_id} if job_id is not None else {})}
    case: Case[Any] = operation.Case(path_parameters=path, **kwargs)
    return case


def completed_job(target: Target, ops: dict[str, Any], data: object) -> str:
    submit = {"input": data}
    done = check(make_case(ops["JobService_RunSync"], body=submit, query={"wait": 3000}), target).json()
    assert done["status"] == "COMPLETED", done
    job_id: str = done["id"]
    return job_id


def real_job_calls(target: Target) -> dict[str, Any]:
    """Checks every operation on real jobs: one completed, one queued (the worker may take it)."""
    ops = by_id(operations())
    job_id = completed_job(target, ops, {"prompt": "hi", "n": 1})
    results: dict[str, Any] = {}
    for name in ("JobService_Status", "JobService_Status2", "JobService_StatusSync", "JobService_StatusSync2",
                 "JobService_ReadStream", "JobService_ReadStream2", "JobService_Cancel"):  # fmt: skip
        results[name] = check(make_case(ops[name], job_id), target).json()
    queued = check(
        make_case(ops["JobService_Run"], body={"input": {"x": 1}, "policy": {"ttl": 60_000}}), target
    )
    results["run"] = queued.json()
    results["retry"] = check(make_case(ops["JobService_Retry"], job_id), target)  # 400: it did not fail
    results["health"] = check(make_case(ops["JobService_Health"]), target).json()
    results["purge"] = check(make_case(ops["JobService_PurgeQueue"]), target).json()
    return results


def line_validator() -> jsonschema_rs.Validator:
    """The documented schema of one NDJSON line of `:follow` (schemathesis does not read NDJSON)."""
    document = json.loads(DOCUMENT.read_text())
    ok = document["paths"]["/v2/{endpoint_id}/stream/{job_id}:follow"]["get"]["responses"]["200"]
    schema = ok["content"]["application/x-ndjson"]["schema"]
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


def follow_call(target: Target, lines: list[Any]) -> None:
    ops = by_id(operations())
    job_id = completed_job(target, ops, {"chunks": [{"token": "a"}, 2, [3]]})
    case = make_case(ops["JobService_Stream"], job_id)
    response = case.call(base_url=target.base_url, session=target.session, headers=target.headers, timeout=20)
    assert response.status_code == 200, response.text
    validate = line_validator()
    for line in response.text.splitlines():
        lines.append(json.loads(line))
        validate.validate(lines[-1])
    case.validate_response(response, checks=CHECKS, headers=target.headers)


async def test_calls_about_real_jobs_match_the_document(service: Running) -> None:
    target = target_of(service)
    try:
        results = await in_thread(real_job_calls, target)
    finally:
        target.session.close()
    assert results["JobService_Status"]["output"] == [{"prompt": "hi", "n": 1}]
    assert results["JobService_ReadStream"]["status"] == "COMPLETED"
    assert results["run"]["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert results["retry"].status_code == 400
    assert set(results["health"]) == {"jobs", "workers"}
    assert results["purge"]["status"] == "completed"


# ---- server bugs the fuzzing found, fixed: each stays as a regression test -----


async def test_a_newline_in_a_path_variable_is_answered_by_the_transcoder(service: Running) -> None:
    target = target_of(service)
    ops = by_id(operations())
    try:
        await in_thread(check, make_case(ops["JobService_Status"], "job%0Aid"), target)
    finally:
        target.session.close()


async def test_a_follow_stream_matches_the_document(service: Running) -> None:
    target = target_of(service)
    lines: list[Any] = []
    try:
        await in_thread(follow_call, target, lines)
    finally:
        target.session.close()
        # Whatever the Content-Type, every line is as documented.
        assert [line["result"]["chunk"]["output"] for line in lines[:-1]] == [{"token": "a"}, 2, [3]]
        assert lines[-1]["result"]["done"]["status"] == "COMPLETED"
