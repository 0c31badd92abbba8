"""The web console (/console/) in headless Chromium (Debian's, driven by Playwright) against a real jobwire
and a real SDK worker process: sign in with a key, read the endpoints, submit and follow jobs, list and
filter them, open one, retry a failed job and cancel a queued one. Also the serving of the files."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from jobwire.server.clock import ManualClock
from jobwire.server.model import RateLimit
from jobwire.server.service.limits import DEFAULT_LIMITS, LimitSettings
from server_fixtures import ENDPOINT, OTHER, Running, running, start_jobwire

F = TypeVar("F", bound=Callable[..., Any])

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
#: Generous: the machine is shared, and a step waits for a worker process and a browser.
WAIT_MS = 30_000
#: What the browser logs for a refused call: expected in the tests of those, an error anywhere else.
REFUSED = "the server responded with a status of {}"
#: The console's page of recent requests.
PAGE = 20

HANDLER = textwrap.dedent(
    """
    import asyncio, pathlib

    async def handler(job):
        data = job["input"]
        flag = data.get("failOnce")
        if flag is not None and not pathlib.Path(flag).exists():
            pathlib.Path(flag).touch()
            raise ValueError("the first attempt fails")
        if data.get("fail"):
            raise ValueError("this job always fails")
        for token in data.get("tokens", ["done"]):
            yield {"token": token}
            await asyncio.sleep(0)
    """
)


@pytest.fixture
async def worker(jobwire: Running, tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A streaming SDK worker on `ep` (none on `other`, whose jobs stay queued)."""
    (tmp_path / "console_handler.py").write_text(HANDLER)
    log = (tmp_path / "worker.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobwire.server", "worker", "console_handler:handler",
        "--endpoint", ENDPOINT, "--server", jobwire.server.grpc_target, "--key", jobwire.keys["worker"],
        "--worker-id", "console-worker", "--aggregate-stream",
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, stdout=log, stderr=log,
    )  # fmt: skip
    yield process
    if process.returncode is None:
        process.terminate()
        await process.wait()
    log.close()


def _chromium_installed() -> bool:
    return Path(CHROMIUM).is_file()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not _chromium_installed():
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap installs Debian's chromium (as root)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    # Any script error or refused resource (e.g. by the Content-Security-Policy) fails the test.
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    yield page
    await context.close()
    expected = getattr(request.function, "expected_browser_errors", ())
    assert [p for p in problems if not any(e in p for e in expected)] == []


def expect_browser_errors(*texts: str) -> Callable[[F], F]:
    """Marks the console errors a test provokes on purpose (the browser logs every refused call)."""

    def mark(test: F) -> F:
        test.expected_browser_errors = texts  # type: ignore[attr-defined]
        return test

    return mark


async def submit(page: Page, job_input: str) -> str:
    """Submits from the endpoint page's form; returns the new job's id."""
    await page.get_by_label("Input (JSON)").fill(job_input)
    async with page.expect_response(lambda r: r.url.endswith(f"/v2/{ENDPOINT}/run")) as answer:
        await page.get_by_role("button", name="Run", exact=True).click()
    job_id = str((await (await answer.value).json())["id"])
    submitted = page.get_by_role("region", name="Submitted job")
    await expect(submitted.get_by_role("heading").get_by_role("link")).to_have_text(job_id)
    return job_id


async def test_the_console_end_to_end(
    jobwire: Running, worker: asyncio.subprocess.Process, page: Page, tmp_path: Path
) -> None:
    # A job on `other`, which has no worker: it stays queued, so the endpoints list has a queue.
    queued = await jobwire.http.post(
        f"/v2/{OTHER}/run", json={"input": {"wait": True}}, headers=jobwire.headers("other")
    )
    queued_id = queued.json()["id"]

    # The key, asked for once: an admin key sees every endpoint.
    await page.goto(f"{jobwire.server.http_url}/console")
    await expect(page).to_have_url(f"{jobwire.server.http_url}/console/")
    await page.get_by_label("API key", exact=True).fill(jobwire.keys["admin"])
    await page.get_by_role("button", name="Use key").click()

    endpoints = page.get_by_role("table", name="Endpoints")
    other_row = endpoints.get_by_role("row").filter(has=page.get_by_role("link", name=OTHER, exact=True))
    await expect(other_row.get_by_role("cell").first).to_have_text("1")  # In queue
    ep_row = endpoints.get_by_role("row").filter(has=page.get_by_role("link", name=ENDPOINT, exact=True))
    await expect(ep_row.get_by_role("cell").nth(4)).to_have_text("1")  # Workers idle: the worker is up
    await ep_row.get_by_role("link").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(ENDPOINT)

    # The form refuses input that is not JSON before sending anything.
    await page.get_by_label("Input (JSON)").fill("{not json")
    await expect(page.get_by_label("Input (JSON)")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_role("alert")).to_contain_text("Not valid JSON")
    await expect(page.get_by_role("button", name="Run")).to_be_disabled()

    # A streaming job: live status, the chunks as they were streamed, then the result.
    done_id = await submit(page, '{"tokens": ["alpha", "beta", "gamma"]}')
    submitted = page.get_by_role("region", name="Submitted job")
    await expect(submitted.get_by_test_id("job-status")).to_have_text("COMPLETED")
    chunks = submitted.get_by_role("list", name="Streamed output chunks").get_by_role("listitem")
    await expect(chunks).to_have_text(['{"token":"alpha"}', '{"token":"beta"}', '{"token":"gamma"}'])
    await expect(submitted.get_by_role("region", name="Result")).to_contain_text('"token": "gamma"')

    # A job that fails on its first attempt, submitted with a policy.
    await page.get_by_label("Execution timeout (ms)").fill("soon")
    await expect(page.get_by_role("alert")).to_contain_text("whole numbers of milliseconds")
    await page.get_by_label("Execution timeout (ms)").fill("60000")
    await page.get_by_label("Low priority").check()
    failed_id = await submit(page, f'{{"failOnce": "{tmp_path / "failed-once"}"}}')
    await expect(submitted.get_by_test_id("job-status")).to_have_text("FAILED")
    error = submitted.get_by_role("region", name="Error")
    await expect(error).to_contain_text("ValueError: the first attempt fails")
    await expect(error.get_by_text("Traceback", exact=True)).to_be_visible()

    # Both in the recent requests, newest first; then the status filter.
    recent = page.get_by_role("table", name="Recent requests")
    rows = recent.locator("tbody").get_by_role("row")
    await expect(rows.get_by_role("link")).to_have_text([failed_id, done_id])
    await expect(rows.nth(0)).to_contain_text("FAILED")
    await expect(rows.nth(0)).to_contain_text("low priority")
    await expect(rows.nth(1)).to_contain_text("COMPLETED")
    await expect(rows.nth(1)).not_to_contain_text("low priority")
    await page.get_by_label("Status", exact=True).select_option("FAILED")
    await expect(rows.get_by_role("link")).to_have_text([failed_id])
    await page.get_by_label("Status", exact=True).select_option("COMPLETED")
    await expect(rows.get_by_role("link")).to_have_text([done_id])
    await page.get_by_label("Status", exact=True).select_option("")
    await expect(rows.get_by_role("link")).to_have_text([failed_id, done_id])

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "console.png"
    screenshot.unlink(missing_ok=True)
    await page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000

    # The completed job's own page.
    await rows.get_by_role("link", name=done_id).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Job {done_id}")
    await expect(page.get_by_test_id("job-status")).to_have_text("COMPLETED")
    await expect(page.get_by_role("region", name="Result")).to_contain_text('"token": "alpha"')
    await expect(page.get_by_role("button", name="Retry job")).to_have_count(0)
    await expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)

    # The failed one can be retried, and its second attempt completes.
    await page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name=ENDPOINT).click()
    await page.get_by_role("table", name="Recent requests").get_by_role("link", name=failed_id).click()
    await expect(page.get_by_test_id("job-status")).to_have_text("FAILED")
    await page.get_by_role("button", name="Retry job").click()
    await expect(page.get_by_test_id("job-status")).to_have_text("COMPLETED")
    await expect(page.get_by_role("definition").filter(has_text="console-worker")).to_have_count(1)
    await expect(page.get_by_role("region", name="Result")).to_contain_text('"token": "done"')
    retried = await jobwire.http.get(f"/v2/{ENDPOINT}/status/{failed_id}", headers=jobwire.headers())
    assert retried.json()["status"] == "COMPLETED" and retried.json()["retries"] == 1

    # The queued job on `other` can be cancelled from its page, found on the second page of requests.
    for n in range(PAGE):
        newer = await jobwire.http.post(
            f"/v2/{OTHER}/run", json={"input": {"n": n}}, headers=jobwire.headers("other")
        )
        assert newer.status_code == 200
    await page.goto(f"{jobwire.server.http_url}/console/#/endpoints/{OTHER}")
    links = page.get_by_role("table", name="Recent requests").locator("tbody").get_by_role("link")
    await expect(links).to_have_count(PAGE)
    await expect(links.get_by_text(queued_id)).to_have_count(0)
    await page.get_by_role("button", name="More").click()
    await expect(links).to_have_count(PAGE + 1)
    await links.get_by_text(queued_id).click()
    await expect(page.get_by_test_id("job-status")).to_have_text("IN_QUEUE")
    await page.get_by_role("button", name="Cancel job").click()
    await expect(page.get_by_test_id("job-status")).to_have_text("CANCELLED")
    await expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    cancelled = await jobwire.http.get(f"/v2/{OTHER}/status/{queued_id}", headers=jobwire.headers("other"))
    assert cancelled.json()["status"] == "CANCELLED"


@expect_browser_errors(REFUSED.format(401), REFUSED.format(404))
async def test_a_refused_key_and_an_unknown_job_are_reported(jobwire: Running, page: Page) -> None:
    await page.goto(f"{jobwire.server.http_url}/console/")
    await page.get_by_label("API key", exact=True).fill("jw_not-a-key")
    await page.get_by_role("button", name="Use key").click()
    await expect(page.get_by_role("alert")).to_contain_text("Could not list the endpoints")
    await page.get_by_role("button", name="Change key").click()
    await page.get_by_label("API key", exact=True).fill(jobwire.keys["client"])
    await page.get_by_role("button", name="Use key").click()
    # A client key sees its own endpoint only.
    links = page.get_by_role("table", name="Endpoints").get_by_role("link")
    await expect(links).to_have_text([ENDPOINT])
    # An unknown job is reported, not shown as loading forever.
    await page.goto(f"{jobwire.server.http_url}/console/#/endpoints/{ENDPOINT}/jobs/nope")
    await expect(page.get_by_role("alert")).to_contain_text("Could not read the job")
    await expect(page.get_by_role("alert")).to_contain_text("nope")


@expect_browser_errors(REFUSED.format(429))
async def test_a_rate_limited_listing_waits_for_retry_after(database_url: str, page: Page) -> None:
    """/requests allows one call per 10 s here: the second is refused, and the console shows that and
    calls again once the window has passed (the server's clock and the page's advanced together)."""
    clock = ManualClock()
    limits = LimitSettings(defaults={**DEFAULT_LIMITS, "requests": RateLimit(1)})
    server = await start_jobwire(database_url, clock=clock, limit_settings=limits)
    async with running(server) as service:
        listings: list[str] = []
        page.on("request", lambda r: listings.append(r.url) if "/requests?" in r.url else None)
        await page.clock.install()
        await page.goto(f"{server.http_url}/console/#/endpoints/{ENDPOINT}")
        await page.get_by_label("API key", exact=True).fill(service.keys["client"])
        await page.get_by_role("button", name="Use key").click()
        recent = page.get_by_role("region", name="Recent requests")
        await expect(recent.get_by_text("No requests.")).to_be_visible()
        await page.get_by_label("Status", exact=True).select_option("FAILED")
        await page.clock.run_for(1000)  # the console's own minimum gap between two listings
        await expect(recent.get_by_role("alert")).to_contain_text("rate limited")
        assert len(listings) == 2
        # Retry-After is the rest of the window, 10 s: not even the 5 s auto-refresh calls before.
        await page.clock.run_for(9000)
        await page.evaluate("1")  # a round trip, so that a request sent meanwhile has been reported
        assert len(listings) == 2
        clock.advance(seconds=10)
        await page.clock.run_for(1000)
        await expect(recent.get_by_text("No requests with status FAILED.")).to_be_visible()
        await expect(recent.get_by_role("alert")).to_have_count(0)
        assert len(listings) == 3 and "status=FAILED" in listings[-1]


async def test_the_files_are_served_with_cache_headers(jobwire: Running) -> None:
    redirect = await jobwire.http.get("/console?x=1")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/console/?x=1"
    index = await jobwire.http.get("/console/")
    assert index.status_code == 200 and index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert '<div id="app">' in index.text
    again = await jobwire.http.get("/console/", headers={"If-None-Match": index.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assets = [part.split('"')[0] for part in index.text.split('="./')[1:]]
    assert {Path(a).suffix for a in assets} == {".js", ".css"}
    for asset in assets:
        response = await jobwire.http.get(f"/console/{asset}")
        assert response.status_code == 200, asset
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["content-type"].startswith(
            "text/javascript" if asset.endswith(".js") else "text/css"
        )
    assert (await jobwire.http.get("/console/assets/nope.js")).status_code == 404
    assert (await jobwire.http.get("/console/../pyproject.toml")).status_code == 404
    assert (await jobwire.http.get("/console/__init__.py")).status_code == 404
    # The API beside it is untouched and still asks for a key.
    assert (await jobwire.http.get(f"/v2/{ENDPOINT}/health")).status_code == 401
