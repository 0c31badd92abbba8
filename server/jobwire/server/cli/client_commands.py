"""`jobwire submit`, `status`, `cancel`, `retry`, `purge` and `health`: a running jobwire, over its REST
API (`--url`/JOBWIRE_URL, `--key`/JOBWIRE_API_KEY)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from jobwire.server.cli.client import RestClient, rest_path, run_client
from jobwire.server.cli.follow import follow as follow_job
from jobwire.server.cli.output import TERMINAL_STATES, err, exit_code, out, print_json, report_end, show_job

#: How long one status-sync call holds (the server's range is 1-300 s).
WAIT_MS = 60_000
DEFAULT_URL = "http://127.0.0.1:8080"

UrlOption = Annotated[
    str, typer.Option("--url", envvar="JOBWIRE_URL", help="The HTTP address of a running jobwire.")
]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", envvar="JOBWIRE_API_KEY", help="A client key of the endpoint.", show_default=False),
]
RawJson = Annotated[bool, typer.Option("--json", help="Print the server's JSON as it is.")]
EndpointArg = Annotated[str, typer.Argument(metavar="ENDPOINT", help="The endpoint.", show_default=False)]
JobArg = Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id.", show_default=False)]


def _document(text: str) -> Any:
    """The JSON of a command-line argument: the text itself, `@path` for a file's, `-` for stdin's."""
    if text == "-":
        source, raw = "stdin", sys.stdin.read()
    elif text.startswith("@"):
        try:
            source, raw = text[1:], Path(text[1:]).read_text()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {text[1:]}: {exc.strerror}") from None
    else:
        source, raw = "the argument", text
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise typer.BadParameter(f"{source} is not JSON: {exc}") from None


async def _wait(client: RestClient, endpoint: str, job_id: str) -> dict[str, Any]:
    """The job once it has ended, holding on status-sync (each call up to a minute)."""
    while True:
        job = await client.call(
            "GET",
            rest_path(endpoint, "status-sync", job_id),
            params={"wait": str(WAIT_MS)},
            hold_s=WAIT_MS / 1000,
        )
        if job.get("status") in TERMINAL_STATES:
            return job


def submit(
    endpoint: EndpointArg,
    document: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="The job's input as JSON, @FILE for a file's JSON, or - for stdin's.",
            show_default=False,
        ),
    ],
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait for the job to end; print its output.")
    ] = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Stream the output as it comes, with a progress bar; implies --wait."
        ),
    ] = False,
    webhook: Annotated[str | None, typer.Option(help="A URL that receives the job when it ends.")] = None,
    execution_timeout: Annotated[
        int | None, typer.Option(help="Milliseconds one attempt may run.", show_default=False)
    ] = None,
    ttl: Annotated[
        int | None, typer.Option(help="Milliseconds the job may live.", show_default=False)
    ] = None,
    low_priority: Annotated[
        bool, typer.Option("--low-priority", help="Run after the endpoint's normal jobs.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: RawJson = False,
) -> None:
    """Submit a job. Prints its id; with --wait its output; with --follow its streamed output.

    Exit code 1 when the job FAILED, TIMED_OUT or was CANCELLED.

    Examples: jobwire submit my-endpoint '{"prompt": "hi"}' --wait;
    jobwire submit my-endpoint @input.json --follow;  echo '{}' | jobwire submit my-endpoint -
    """
    body: dict[str, Any] = {"input": _document(document)}
    policy = {"executionTimeout": execution_timeout, "ttl": ttl, "lowPriority": low_priority or None}
    if any(v is not None for v in policy.values()):
        body["policy"] = {k: v for k, v in policy.items() if v is not None}
    if webhook:
        body["webhook"] = webhook

    async def work(client: RestClient) -> int:
        job = await client.call("POST", rest_path(endpoint, "run"), body=body)
        if not (wait or follow):
            if as_json:
                print_json(job)
            else:
                print(job["id"], flush=True)  # the bare id on stdout: ID=$(jobwire submit ...)
                err.print(f"submitted job {job['id']} ({job.get('status')})")
            return 0
        if not as_json:
            err.print(f"submitted job {job['id']}")
        if follow:
            job = await follow_job(client, endpoint, job["id"], as_json)
        else:
            job = await _wait(client, endpoint, job["id"])
            if as_json:
                print_json(job)
            else:
                report_end(job)
        return exit_code(job)

    run_client(url, key, work)


def status(
    endpoint: EndpointArg,
    job_id: JobArg,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the job to end.")] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: RawJson = False,
) -> None:
    """Show a job's status, times, output or error. Exit code 1 when it FAILED, TIMED_OUT or was CANCELLED."""

    async def work(client: RestClient) -> int:
        if wait:
            job = await _wait(client, endpoint, job_id)
        else:
            job = await client.call("GET", rest_path(endpoint, "status", job_id))
        if as_json:
            print_json(job)
        else:
            show_job(job)
        return exit_code(job)

    run_client(url, key, work)


def cancel(
    endpoint: EndpointArg,
    job_id: JobArg,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: RawJson = False,
) -> None:
    """Cancel a job (a queued one never runs; a running one's worker is told to stop)."""
    _job_action("cancel", endpoint, job_id, url, key, as_json)


def retry(
    endpoint: EndpointArg,
    job_id: JobArg,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: RawJson = False,
) -> None:
    """Queue a FAILED or TIMED_OUT job again, under the same id."""
    _job_action("retry", endpoint, job_id, url, key, as_json)


def _job_action(action: str, endpoint: str, job_id: str, url: str, key: str | None, as_json: bool) -> None:
    async def work(client: RestClient) -> int:
        job = await client.call("POST", rest_path(endpoint, action, job_id))
        if as_json:
            print_json(job)
        else:
            out.print(f"job {escape(str(job.get('id')))} {job.get('status')}")
        return 0

    run_client(url, key, work)


def purge(
    endpoint: EndpointArg, url: UrlOption = DEFAULT_URL, key: KeyOption = None, as_json: RawJson = False
) -> None:
    """Cancel every queued job of the endpoint (running jobs go on)."""

    async def work(client: RestClient) -> int:
        result = await client.call("POST", rest_path(endpoint, "purge-queue"))
        if as_json:
            print_json(result)
        else:
            out.print(
                f"removed {result.get('removed', 0)} queued jobs from {escape(endpoint)}", highlight=False
            )
        return 0

    run_client(url, key, work)


def health(
    endpoint: EndpointArg, url: UrlOption = DEFAULT_URL, key: KeyOption = None, as_json: RawJson = False
) -> None:
    """Show the endpoint's jobs by state and its workers."""

    async def work(client: RestClient) -> int:
        result = await client.call("GET", rest_path(endpoint, "health"))
        if as_json:
            print_json(result)
            return 0
        table = Table(title=f"endpoint {escape(endpoint)}", show_header=False, box=box.SIMPLE)
        table.add_column(style="bold")
        table.add_column()
        table.add_column(justify="right")
        for section in ("jobs", "workers"):
            for name, count in (result.get(section) or {}).items():
                table.add_row(section, name, str(count))
                section = ""
        out.print(table)
        return 0

    run_client(url, key, work)
