"""The `jobwire` command.

Server side: `serve`, `dev`, `migrate`, `worker`, and `endpoint` and `key` management (on the database).
Client side: `submit`, `status`, `cancel`, `retry`, `purge`, `health`: a running jobwire, over its REST
API with httpx (`--url`/JOBWIRE_URL, `--key`/JOBWIRE_API_KEY); below the `# --- client` line.

Exit codes: 0 success; 1 the job FAILED, TIMED_OUT or was CANCELLED, or the request was refused (a domain
error, a 4xx: the server's message on stderr); 2 usage errors (and an unmigrated database); 3 the server
could not be reached or failed (5xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote

try:
    import httpx
    import typer
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ModuleNotFoundError as missing:  # `pip install jobwire` has the worker SDK, not this command
    raise SystemExit(
        f"the jobwire command needs the server extra ({missing.name} is not installed): "
        "pip install 'jobwire[server]'"
    ) from None

from jobwire.server.config import Settings
from jobwire.server.errors import JobwireError
from jobwire.server.model import Role

# The server stack (SQLAlchemy, Alembic, grpc, the app) is imported inside the commands that run it, so
# that the client commands and --help start in a fraction of the time.
if TYPE_CHECKING:
    from jobwire.server.service.admin import AdminService

app = typer.Typer(
    help="jobwire: a self-hosted job service with Runpod's queue API.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
endpoint_app = typer.Typer(help="Manage endpoints.", no_args_is_help=True)
key_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(endpoint_app, name="endpoint", rich_help_panel="Administration (on the database)")
app.add_typer(key_app, name="key", rich_help_panel="Administration (on the database)")
out = Console()
# Messages on stderr are not wrapped at the terminal width: scripts grep them.
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", envvar="JOBWIRE_DATABASE_URL", help="Postgres URL (asyncpg).")
]
HttpAddr = Annotated[
    str, typer.Option("--http-addr", envvar="JOBWIRE_HTTP_ADDR", help="HTTP listen address.")
]
GrpcAddr = Annotated[
    str, typer.Option("--grpc-addr", envvar="JOBWIRE_GRPC_ADDR", help="gRPC listen address.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
LogJson = Annotated[
    bool,
    typer.Option(
        "--log-json",
        envvar="JOBWIRE_LOG_JSON",
        help="Log one JSON object per line (with request and job ids).",
    ),
]
LogLevel = Annotated[
    str | None,
    typer.Option(
        "--log-level", envvar="JOBWIRE_LOG_LEVEL", help="debug, info, warning or error.", show_default="info"
    ),
]
SERVER_PANEL = "Server"
ADMIN_PANEL = "Administration (on the database)"
CLIENT_PANEL = "Jobs (a running jobwire, over REST)"


def jobwire_version() -> str:
    try:
        return metadata.version("jobwire")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def _version(show: bool) -> None:
    if show:
        print(f"jobwire {jobwire_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """jobwire: a self-hosted job service with Runpod's queue API."""


def _settings(database_url: str | None, **overrides: object) -> Settings:
    return Settings.from_env().with_overrides(database_url=database_url, **overrides)


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[tuple[str, bool]]:
    """The database URL, and whether it is the embedded one (started, or reused when already running)."""
    if settings.database_url:
        yield settings.database_url, False
        return
    from jobwire.server.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_dir / "postgres")
    await asyncio.to_thread(embedded.start)
    try:
        yield embedded.url, True
    finally:
        # Stop it only if this command started it: a running `jobwire dev` keeps its database.
        if embedded.started_here:
            await asyncio.to_thread(embedded.stop)


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Runs a coroutine; domain errors become a message on stderr and exit code 1."""
    from jobwire.server.app import DatabaseNotMigrated

    try:
        return asyncio.run(_guard(work))
    except JobwireError as error:
        err.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(1) from None
    except DatabaseNotMigrated as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


async def _guard(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


@asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[AdminService]:
    from jobwire.server.app import ensure_migrated
    from jobwire.server.clock import SystemClock
    from jobwire.server.service.admin import AdminService
    from jobwire.server.store import AdminStore, create_engine

    async with _database(settings) as (url, embedded):
        engine = create_engine(url, pool_size=1)
        try:
            await ensure_migrated(engine, url, migrate=embedded)
            yield AdminService(AdminStore(engine), SystemClock())
        finally:
            await engine.dispose()


@app.command(rich_help_panel=SERVER_PANEL)
def serve(
    http_addr: HttpAddr = Settings.http_addr,
    grpc_addr: GrpcAddr = Settings.grpc_addr,
    database_url: DatabaseOption = None,
    migrate: Annotated[
        bool | None, typer.Option("--migrate/--no-migrate", help="Migrate the database first.")
    ] = None,
    log_json: LogJson = False,
    log_level: LogLevel = None,
) -> None:
    """Serve the gRPC API, the /v2 REST facade and /metrics (embedded Postgres unless --database-url).

    Traces are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set (or JOBWIRE_OTEL=console).
    """
    settings = _settings(
        database_url, http_addr=http_addr, grpc_addr=grpc_addr, migrate=migrate, log_level=log_level
    )
    _configure_logging(settings, log_json)
    from jobwire.server.app import JobwireServer, serve_until_signalled

    async def work() -> None:
        async with _database(settings) as (url, embedded):
            wanted = settings.migrate if settings.migrate is not None else embedded
            server = JobwireServer(settings.with_overrides(migrate=wanted), url)
            await serve_until_signalled(server)

    _run(work)


@app.command(rich_help_panel=SERVER_PANEL)
def dev(
    http_addr: HttpAddr = Settings.http_addr,
    grpc_addr: GrpcAddr = Settings.grpc_addr,
    endpoint: Annotated[str, typer.Option(help="The endpoint to create and print a key for.")] = "dev",
    log_json: LogJson = False,
    log_level: LogLevel = None,
) -> None:
    """Start jobwire on an embedded Postgres with a ready endpoint and an example worker; print a key."""
    settings = _settings(None, http_addr=http_addr, grpc_addr=grpc_addr, migrate=True, log_level=log_level)
    _configure_logging(settings, log_json)
    from jobwire.server.app import JobwireServer, ensure_migrated, serve_until_signalled
    from jobwire.worker import Worker
    from jobwire.worker.examples import echo

    async def work() -> None:
        async with _database(settings) as (url, _):
            server = JobwireServer(settings, url)
            await ensure_migrated(server.engine, url, migrate=True)
            await server.admin.ensure_endpoint(endpoint)
            created = await server.admin.create_key(Role.CLIENT, endpoint)
            worker_key = await server.admin.create_key(Role.WORKER, endpoint)

            async def announce() -> None:
                await server.started.wait()
                out.print(f"jobwire dev is running (data in {settings.data_dir})")
                out.print(f"  REST  {server.http_url}/v2/{endpoint}/run")
                out.print(f"  gRPC  {server.grpc_target}  (jobwire.v1.JobService)")
                out.print(f"  key   {created.secret}")
                out.print(f"  worker  jobwire.worker.examples:echo is serving {endpoint}")
                out.print(
                    f"try:  curl -s -H 'Authorization: Bearer {created.secret}' "
                    f'-d \'{{"input": {{"hello": "world"}}}}\' {server.http_url}/v2/{endpoint}/run'
                )

            async def example_worker() -> None:
                await server.started.wait()
                example = Worker(echo, endpoint=endpoint, key=worker_key.secret, server=server.grpc_target)
                await example.run()

            tasks = [asyncio.create_task(announce()), asyncio.create_task(example_worker())]
            try:
                await serve_until_signalled(server)
            finally:
                for task in tasks:
                    task.cancel()

    _run(work)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
    rich_help_panel=SERVER_PANEL,
)
def worker(context: typer.Context) -> None:
    """Run a worker: MODULE:FUNCTION --endpoint NAME --server HOST:PORT --key KEY [--concurrency N]."""
    from jobwire.worker.__main__ import main as worker_main

    raise typer.Exit(worker_main(context.args, prog="jobwire worker"))


@app.command(rich_help_panel=ADMIN_PANEL)
def migrate(database_url: DatabaseOption = None) -> None:
    """Upgrade the database to the newest schema."""
    from jobwire.server.store.migrate import upgrade

    settings = _settings(database_url)

    async def work() -> str:
        async with _database(settings) as (url, _):
            await asyncio.to_thread(upgrade, url)
            return url

    _run(work)
    out.print("database is at the newest revision")


@endpoint_app.command("create")
def endpoint_create(
    name: str,
    execution_timeout_ms: Annotated[int, typer.Option(help="Default execution timeout.")] = 600_000,
    max_attempts: Annotated[int, typer.Option(help="Attempts before a job is FAILED.")] = 3,
    database_url: DatabaseOption = None,
) -> None:
    """Create an endpoint."""

    async def work() -> None:
        async with _admin(_settings(database_url)) as admin:
            await admin.create_endpoint(name, execution_timeout_ms, max_attempts)

    _run(work)
    out.print(f"created endpoint {name}")


@endpoint_app.command("list")
def endpoint_list(database_url: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """List endpoints."""

    async def work() -> list[dict[str, object]]:
        async with _admin(_settings(database_url)) as admin:
            return [asdict(e) for e in await admin.list_endpoints()]

    rows = _run(work)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
    else:
        for row in rows:
            out.print(
                f"{row['name']}\ttimeout={row['execution_timeout_ms']}ms\tattempts={row['max_attempts']}"
            )


@endpoint_app.command("delete")
def endpoint_delete(name: str, database_url: DatabaseOption = None) -> None:
    """Delete an endpoint with its jobs and keys."""

    async def work() -> None:
        async with _admin(_settings(database_url)) as admin:
            await admin.delete_endpoint(name)

    _run(work)
    out.print(f"deleted endpoint {name}")


@key_app.command("create")
def key_create(
    role: Annotated[Role, typer.Option(help="client, worker or admin.")],
    endpoint: Annotated[str | None, typer.Option(help="The endpoint (optional for admin keys).")] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(help="Expire the key after this many days.")
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create an API key and print it (it is shown only this once)."""
    expires = timedelta(days=expires_in_days) if expires_in_days is not None else None

    async def work() -> str:
        async with _admin(_settings(database_url)) as admin:
            return (await admin.create_key(role, endpoint, expires)).secret

    secret = _run(work)
    # The bare key on stdout, so scripts can capture it: KEY=$(jobwire key create ...).
    print(secret)


@key_app.command("list")
def key_list(
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's keys.")] = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (their prefixes only)."""

    async def work() -> list[dict[str, object]]:
        async with _admin(_settings(database_url)) as admin:
            return [asdict(k) for k in await admin.list_keys(endpoint)]

    rows = _run(work)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
    else:
        for row in rows:
            state = "revoked" if row["revoked_at"] else "live"
            out.print(f"{row['prefix']}…\t{row['role']}\t{row['endpoint'] or '*'}\t{state}")


@key_app.command("revoke")
def key_revoke(prefix: str, database_url: DatabaseOption = None) -> None:
    """Revoke the key(s) with this prefix."""

    async def work() -> None:
        async with _admin(_settings(database_url)) as admin:
            await admin.revoke_key(prefix)

    _run(work)
    out.print(f"revoked {prefix}")


def _configure_logging(settings: Settings, log_json: bool) -> None:
    """Text lines on stderr, or one JSON object per line with --log-json / JOBWIRE_LOG_JSON=1."""
    # gRPC's C core writes its own lines to stderr (INFO ones at shutdown, after a fork), outside Python's
    # logging; only its errors are worth a line. Read when grpc is first imported, which is after this.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from jobwire.server.observability import configure_logging

    configure_logging(settings.log_level, json_lines=log_json or settings.log_json, stream=sys.stderr)


# --- client commands: a running jobwire over REST -------------------------------------------------------


EXIT_FAILED = 1  # the job FAILED, TIMED_OUT or was CANCELLED, or the server refused the request (4xx)
EXIT_UNREACHABLE = 3  # no answer from the server, or a server error (5xx)
FAILED_STATES = frozenset({"FAILED", "TIMED_OUT", "CANCELLED"})
TERMINAL_STATES = FAILED_STATES | {"COMPLETED"}
#: How long one status-sync call holds (the server's range is 1-300 s) and how often --follow polls
#: the status for progress updates.
WAIT_MS = 60_000
PROGRESS_POLL_S = 0.5

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
DEFAULT_URL = "http://127.0.0.1:8080"
#: gRPC codes of a stream's in-band error that mean the server failed: UNKNOWN, DEADLINE_EXCEEDED,
#: INTERNAL, UNAVAILABLE (the others are the request's fault).
_SERVER_FAULTS = frozenset({2, 4, 13, 14})


class ClientError(Exception):
    """A request that did not succeed: the message for stderr and the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _http_error(status: int, body: bytes) -> ClientError:
    try:
        message = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace").strip() or f"HTTP {status}"
    return ClientError(f"{message} (HTTP {status})", EXIT_UNREACHABLE if status >= 500 else EXIT_FAILED)


def _path(*segments: str) -> str:
    return "/v2/" + "/".join(quote(segment, safe="") for segment in segments)


class RestClient:
    """The few REST calls the client commands make; errors become `ClientError`s."""

    def __init__(self, url: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers["User-Agent"] = f"jobwire-cli/{jobwire_version()}"
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(30, connect=10)
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: dict[str, str] | None = None,
        hold_s: float = 0,
    ) -> dict[str, Any]:
        """One request; `hold_s` is how long the server may hold it (status-sync) on top of the timeout."""
        timeout = httpx.Timeout(30 + hold_s, connect=10)
        try:
            response = await self.http.request(method, path, json=body, params=params, timeout=timeout)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise _http_error(response.status_code, response.content)
        document: dict[str, Any] = response.json()
        return document

    async def follow(self, endpoint: str, job_id: str, from_seq: int) -> AsyncIterator[dict[str, Any]]:
        """The events of the follow stream (`{"chunk": ...}`, then `{"done": job}`), from chunk `from_seq`."""
        path = _path(endpoint, "stream", job_id) + ":follow"
        params = {"fromSeq": str(from_seq)}
        try:
            # No read timeout: chunks may be minutes apart while the job waits in the queue.
            async with self.http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(None, connect=10)
            ) as response:
                if response.status_code >= 400:
                    raise _http_error(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    document = json.loads(line)
                    if "error" in document:  # an in-band error after the 200 (grpc-gateway's error chunk)
                        error = document["error"]
                        code = EXIT_UNREACHABLE if error.get("code") in _SERVER_FAULTS else EXIT_FAILED
                        raise ClientError(str(error.get("message")), code)
                    yield document.get("result", {})
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> ClientError:
        return ClientError(
            f"cannot reach jobwire at {self.url}: {exc or type(exc).__name__}", EXIT_UNREACHABLE
        )

    async def aclose(self) -> None:
        await self.http.aclose()


def _client_run(url: str, key: str | None, work: Callable[[RestClient], Awaitable[int]]) -> None:
    """Runs a client command and exits with its code; failures print the server's message on stderr."""

    async def main() -> int:
        client = RestClient(url, key)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        code = asyncio.run(main())
    except ClientError as error:
        err.print(f"[red]error:[/red] {escape(error.message)}")
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


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


def _print_json(document: object) -> None:
    """Compact JSON on stdout, one document per line, for pipes (`| jq`)."""
    print(json.dumps(document, ensure_ascii=False, separators=(",", ":")), flush=True)


def _seconds(ms: object) -> str:
    return f"{int(ms) / 1000:.3g} s" if isinstance(ms, int | float) else "-"


def _exit_code(job: dict[str, Any]) -> int:
    return EXIT_FAILED if job.get("status") in FAILED_STATES else 0


def _report_end(job: dict[str, Any], *, show_output: bool = True) -> None:
    """A finished job for people: its output on stdout, how it went on stderr."""
    status = job.get("status")
    timing = f"delay {_seconds(job.get('delayTime'))}, execution {_seconds(job.get('executionTime'))}"
    if status == "COMPLETED":
        if show_output and "output" in job:
            _print_json(job["output"])
        err.print(f"job {job.get('id')} [green]COMPLETED[/green] ({timing})")
    else:
        detail = f": {escape(str(job['error']))}" if job.get("error") else ""
        err.print(f"job {job.get('id')} [red]{status}[/red]{detail}")


# --- progress -----------------------------------------------------------------------------------------


def progress_percent(value: object) -> float | None:
    """A progress update as a percentage, when it reads as one: a number (0-100), a `"42%"` string, an
    object with `percent`/`pct`/`progress` (0-100), or with `current`/`step`/`completed`/`done` and
    `total`. None otherwise (the update is shown as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return max(0.0, min(100.0, float(value)))
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return progress_percent(float(value.strip()[:-1]))
        except ValueError:
            return None
    if isinstance(value, dict):
        for key in ("percent", "pct", "progress"):
            if isinstance(value.get(key), int | float) and not isinstance(value.get(key), bool):
                return progress_percent(value[key])
        total = value.get("total")
        if isinstance(total, int | float) and total > 0:
            for key in ("current", "step", "completed", "done"):
                done = value.get(key)
                if isinstance(done, int | float) and not isinstance(done, bool):
                    return progress_percent(100 * done / total)
    return None


class ProgressView:
    """Shows progress updates: a Rich progress bar on a terminal's stderr, one line per update on other
    stderrs, `{"progress": ...}` lines on stdout with --json. The bar appears with the first update."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._last: object = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def update(self, value: object) -> None:
        if value == self._last:
            return
        self._last = value
        if self.as_json:
            _print_json({"progress": value})
            return
        percent = progress_percent(value)
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if not err.is_terminal:
            err.print(f"progress: {escape(text)}")
            return
        if self._bar is None:
            # stdout is left alone (no redirection): the job's output may be going to a file.
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                console=err, transient=True, redirect_stdout=False, redirect_stderr=False,
            )  # fmt: skip
            self._task = self._bar.add_task("running", total=100)
            self._bar.start()
        assert self._task is not None
        if percent is None:  # a text update names what the job is doing; the bar stays where it was
            self._bar.update(self._task, description=escape(text)[:60])
        else:
            self._bar.update(self._task, completed=percent, description="running")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


async def _watch_progress(client: RestClient, endpoint: str, job_id: str, view: ProgressView) -> None:
    """Polls the job's status for progress updates (the `output` of an IN_PROGRESS job)."""
    while True:
        job = await client.call("GET", _path(endpoint, "status", job_id))
        if job.get("status") == "IN_PROGRESS" and "output" in job:
            view.update(job["output"])
        if job.get("status") in TERMINAL_STATES:
            return
        await asyncio.sleep(PROGRESS_POLL_S)


# --- the commands -------------------------------------------------------------------------------------


class _Chunks:
    """Streamed output for people: text chunks written as they come (tokens), others one JSON per line."""

    def __init__(self) -> None:
        self.seen = 0
        self._open_line = False

    def write(self, output: object) -> None:
        self.seen += 1
        if isinstance(output, str):
            sys.stdout.write(output)
            self._open_line = not output.endswith("\n")
        else:
            if self._open_line:
                sys.stdout.write("\n")
            sys.stdout.write(json.dumps(output, ensure_ascii=False) + "\n")
            self._open_line = False
        sys.stdout.flush()

    def end(self) -> None:
        if self._open_line:
            sys.stdout.write("\n")
            sys.stdout.flush()


async def _follow(client: RestClient, endpoint: str, job_id: str, as_json: bool) -> dict[str, Any]:
    """Streams the job's output until it ends, with its progress alongside; returns the final view."""
    view, chunks = ProgressView(as_json), _Chunks()
    watcher = asyncio.create_task(_watch_progress(client, endpoint, job_id, view))
    next_seq = 0
    try:
        while True:  # a stream cut short (a server restart) resumes after the last chunk seen
            async for event in client.follow(endpoint, job_id, next_seq):
                if "chunk" in event:
                    chunk = event["chunk"]
                    next_seq = int(chunk.get("seq", next_seq)) + 1
                    if as_json:
                        _print_json(event)
                    else:
                        chunks.write(chunk.get("output"))
                elif "done" in event:
                    job: dict[str, Any] = event["done"]
                    if as_json:
                        _print_json(event)
                    else:
                        chunks.end()
                        view.close()
                        # Output that was streamed is not printed again (a generator's is its chunks).
                        _report_end(job, show_output=chunks.seen == 0)
                    return job
    finally:
        view.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientError):
            await watcher


async def _wait(client: RestClient, endpoint: str, job_id: str) -> dict[str, Any]:
    """The job once it has ended, holding on status-sync (each call up to a minute)."""
    while True:
        job = await client.call(
            "GET",
            _path(endpoint, "status-sync", job_id),
            params={"wait": str(WAIT_MS)},
            hold_s=WAIT_MS / 1000,
        )
        if job.get("status") in TERMINAL_STATES:
            return job


@app.command(rich_help_panel=CLIENT_PANEL)
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
        job = await client.call("POST", _path(endpoint, "run"), body=body)
        if not (wait or follow):
            if as_json:
                _print_json(job)
            else:
                print(job["id"], flush=True)  # the bare id on stdout: ID=$(jobwire submit ...)
                err.print(f"submitted job {job['id']} ({job.get('status')})")
            return 0
        if not as_json:
            err.print(f"submitted job {job['id']}")
        if follow:
            job = await _follow(client, endpoint, job["id"], as_json)
        else:
            job = await _wait(client, endpoint, job["id"])
            if as_json:
                _print_json(job)
            else:
                _report_end(job)
        return _exit_code(job)

    _client_run(url, key, work)


@app.command(rich_help_panel=CLIENT_PANEL)
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
            job = await client.call("GET", _path(endpoint, "status", job_id))
        if as_json:
            _print_json(job)
        else:
            _show_job(job)
        return _exit_code(job)

    _client_run(url, key, work)


def _show_job(job: dict[str, Any]) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    colour = {"COMPLETED": "green", "IN_PROGRESS": "cyan", "IN_QUEUE": "yellow"}.get(
        str(job.get("status")), "red"
    )
    table.add_row("id", escape(str(job.get("id"))))
    table.add_row("status", f"[{colour}]{job.get('status')}[/{colour}]")
    table.add_row("delay", _seconds(job.get("delayTime")))
    table.add_row("execution", _seconds(job.get("executionTime")))
    if job.get("retries"):
        table.add_row("retries", str(job["retries"]))
    if job.get("workerId"):
        table.add_row("worker", escape(str(job["workerId"])))
    if "output" in job:
        label = "progress" if job.get("status") == "IN_PROGRESS" else "output"
        table.add_row(label, escape(json.dumps(job["output"], ensure_ascii=False)))
    if job.get("error"):
        table.add_row("error", escape(str(job["error"])))
    out.print(table)


@app.command(rich_help_panel=CLIENT_PANEL)
def cancel(
    endpoint: EndpointArg,
    job_id: JobArg,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
    as_json: RawJson = False,
) -> None:
    """Cancel a job (a queued one never runs; a running one's worker is told to stop)."""
    _job_action("cancel", endpoint, job_id, url, key, as_json)


@app.command(rich_help_panel=CLIENT_PANEL)
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
        job = await client.call("POST", _path(endpoint, action, job_id))
        if as_json:
            _print_json(job)
        else:
            out.print(f"job {escape(str(job.get('id')))} {job.get('status')}")
        return 0

    _client_run(url, key, work)


@app.command(rich_help_panel=CLIENT_PANEL)
def purge(
    endpoint: EndpointArg, url: UrlOption = DEFAULT_URL, key: KeyOption = None, as_json: RawJson = False
) -> None:
    """Cancel every queued job of the endpoint (running jobs go on)."""

    async def work(client: RestClient) -> int:
        result = await client.call("POST", _path(endpoint, "purge-queue"))
        if as_json:
            _print_json(result)
        else:
            out.print(
                f"removed {result.get('removed', 0)} queued jobs from {escape(endpoint)}", highlight=False
            )
        return 0

    _client_run(url, key, work)


@app.command(rich_help_panel=CLIENT_PANEL)
def health(
    endpoint: EndpointArg, url: UrlOption = DEFAULT_URL, key: KeyOption = None, as_json: RawJson = False
) -> None:
    """Show the endpoint's jobs by state and its workers."""

    async def work(client: RestClient) -> int:
        result = await client.call("GET", _path(endpoint, "health"))
        if as_json:
            _print_json(result)
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

    _client_run(url, key, work)


def main() -> None:
    app(prog_name="jobwire")  # also under `python -m jobwire.server`


if __name__ == "__main__":
    main()
