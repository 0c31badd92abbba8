"""Validation of a client's submission, without I/O: the service's pure part."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobwire.server.clock import ManualClock
from jobwire.server.errors import InvalidArgument, PayloadTooLarge
from jobwire.server.model import Endpoint, Priority
from jobwire.server.service.auth import hash_key, mint_key, parse_credential
from jobwire.server.service.events import JobEvents
from jobwire.server.service.jobs import JobService, Submission

ENDPOINT = Endpoint("ep", datetime(2026, 1, 1, tzinfo=UTC), execution_timeout_ms=600_000, max_attempts=3)


def service() -> JobService:
    return JobService(store=None, events=JobEvents(), clock=ManualClock())  # type: ignore[arg-type]


def test_defaults_come_from_the_endpoint_and_runpod() -> None:
    job = service()._new_job(ENDPOINT, Submission(input=b"{}"), max_bytes=100, sync_wait_ms=None)
    assert (job.execution_timeout_ms, job.ttl_ms, job.retention_ms, job.priority) == (
        600_000,
        86_400_000,
        1_800_000,
        Priority.NORMAL,
    )
    assert not job.sync and not job.id.startswith("sync-")


def test_runsync_results_are_kept_for_the_longer_of_a_minute_and_the_wait() -> None:
    short = service()._new_job(ENDPOINT, Submission(input=b"1"), max_bytes=100, sync_wait_ms=5_000)
    long = service()._new_job(ENDPOINT, Submission(input=b"1"), max_bytes=100, sync_wait_ms=200_000)
    assert (short.retention_ms, long.retention_ms) == (60_000, 200_000)
    assert short.id.startswith("sync-")


@pytest.mark.parametrize(
    ("submission", "message"),
    [
        (Submission(input=b""), "input is required"),
        (Submission(input=b"1", execution_timeout_ms=4_999), "policy.executionTimeout"),
        (Submission(input=b"1", execution_timeout_ms=7 * 86_400_000 + 1), "policy.executionTimeout"),
        (Submission(input=b"1", ttl_ms=9_999), "policy.ttl"),
        (Submission(input=b"1", webhook="file:///etc/passwd"), "webhook"),
    ],
)
def test_out_of_range_values_are_rejected_with_the_field_named(submission: Submission, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        service()._new_job(ENDPOINT, submission, max_bytes=100, sync_wait_ms=None)


def test_low_priority_and_bounds_that_are_just_inside() -> None:
    job = service()._new_job(
        ENDPOINT,
        Submission(input=b"1", low_priority=True, execution_timeout_ms=5_000, ttl_ms=10_000),
        max_bytes=100,
        sync_wait_ms=None,
    )
    assert (job.priority, job.execution_timeout_ms, job.ttl_ms) == (Priority.LOW, 5_000, 10_000)


def test_payload_limit_counts_input_and_s3_config() -> None:
    with pytest.raises(PayloadTooLarge):
        service()._new_job(
            ENDPOINT, Submission(input=b"x" * 60, s3_config=b"y" * 41), max_bytes=100, sync_wait_ms=None
        )


def test_wait_is_checked_against_runpods_range() -> None:
    assert service().wait_ms(None) == 90_000
    assert service().wait_ms(1_000) == 1_000
    with pytest.raises(InvalidArgument, match="wait"):
        service().wait_ms(300_001)


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("abc", "abc"),
        ("", None),
        (None, None),
        ("Bearer ", "Bearer"),
    ],
)
def test_credentials_in_both_forms(header: str | None, key: str | None) -> None:
    assert parse_credential(header) == key


def test_minted_keys_are_unique_and_only_their_hash_is_kept() -> None:
    a, b = mint_key(), mint_key()
    assert a.secret != b.secret and a.secret.startswith("jw_") and len(a.secret) == 43
    assert a.key_hash == hash_key(a.secret) and a.prefix == a.secret[:11]
