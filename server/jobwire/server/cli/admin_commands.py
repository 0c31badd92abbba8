"""`jobwire endpoint ...` and `jobwire key ...`: endpoints and API keys, managed on the database."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from jobwire.server.cli.database import DatabaseOption, admin_service, run, settings_for
from jobwire.server.cli.output import out, print_json, print_records
from jobwire.server.model import OPERATIONS, Endpoint, RateLimit, Role

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The endpoint.", show_default=False)]


def _settings_of(endpoint: Endpoint) -> dict[str, Any]:
    """An endpoint's record without its webhook secret, which only `endpoint secret` prints."""
    record = asdict(endpoint)
    del record["webhook_secret"]
    return record


RunRetention = Annotated[
    int | None, typer.Option(help="Milliseconds /run results stay readable after the job ends [30 min].")
]
SyncRetention = Annotated[
    int | None,
    typer.Option(help="Milliseconds /runsync results stay readable (a longer wait extends) [1 min]."),
]
WorkersMax = Annotated[
    int | None,
    typer.Option(help="Runpod's workersMax: refuse new jobs (429) once the queue exceeds max(50, N x 500)."),
]
RateLimits = Annotated[
    list[str] | None,
    typer.Option(
        "--rate-limit",
        metavar="OP=LIMIT[:PER_WORKER]",
        help=(
            f"Requests per 10 s of an operation ({', '.join(OPERATIONS)}) and per running worker; repeatable."
        ),
    ),
]


def parse_rate_limits(specs: list[str] | None) -> dict[str, RateLimit] | None:
    """`run=1000:25` -> {"run": RateLimit(1000, 25)}; the service checks the names and bounds."""
    if not specs:
        return None
    limits = {}
    for spec in specs:
        operation, _, value = spec.partition("=")
        limit, _, per_worker = value.partition(":")
        if not limit.isdigit() or (per_worker and not per_worker.isdigit()):
            raise typer.BadParameter(
                f"expected OP=LIMIT[:PER_WORKER], got {spec!r}", param_hint="--rate-limit"
            )
        limits[operation] = RateLimit(int(limit), int(per_worker or 0))
    return limits


def _given(**settings: Any) -> dict[str, Any]:
    return {name: value for name, value in settings.items() if value is not None}


def endpoint_create(
    name: str,
    execution_timeout_ms: Annotated[int, typer.Option(help="Default execution timeout.")] = 600_000,
    max_attempts: Annotated[int, typer.Option(help="Attempts before a job is FAILED.")] = 3,
    run_retention_ms: RunRetention = None,
    sync_retention_ms: SyncRetention = None,
    workers_max: WorkersMax = None,
    rate_limit: RateLimits = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create an endpoint."""
    settings = _given(
        run_retention_ms=run_retention_ms,
        sync_retention_ms=sync_retention_ms,
        workers_max=workers_max,
        rate_limits=parse_rate_limits(rate_limit),
    )

    async def work() -> None:
        async with admin_service(settings_for(database_url)) as admin:
            await admin.create_endpoint(name, execution_timeout_ms, max_attempts, **settings)

    run(work)
    out.print(f"created endpoint {name}")


def endpoint_set(
    name: NameArg,
    execution_timeout_ms: Annotated[int | None, typer.Option(help="Default execution timeout.")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts before a job is FAILED.")] = None,
    run_retention_ms: RunRetention = None,
    sync_retention_ms: SyncRetention = None,
    workers_max: WorkersMax = None,
    no_workers_max: Annotated[bool, typer.Option(help="Remove the queue-size limit.")] = False,
    rate_limit: RateLimits = None,
    database_url: DatabaseOption = None,
) -> None:
    """Change an endpoint's settings; the others keep their values. Running servers see the change
    within a few seconds (they cache endpoints briefly)."""
    settings = _given(
        execution_timeout_ms=execution_timeout_ms,
        max_attempts=max_attempts,
        run_retention_ms=run_retention_ms,
        sync_retention_ms=sync_retention_ms,
        workers_max=workers_max,
    )
    if no_workers_max:
        settings["workers_max"] = None
    limits = parse_rate_limits(rate_limit)
    if not settings and limits is None:
        raise typer.BadParameter("nothing to change: give at least one setting")

    async def work() -> None:
        async with admin_service(settings_for(database_url)) as admin:
            if limits is not None:  # merged into the endpoint's overrides, not replacing them
                current = await admin.get_endpoint(name)
                settings["rate_limits"] = {**current.rate_limits, **limits}
            await admin.configure_endpoint(name, **settings)

    run(work)
    out.print(f"updated endpoint {name}")


def endpoint_list(database_url: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """List endpoints."""

    async def work() -> list[dict[str, Any]]:
        async with admin_service(settings_for(database_url)) as admin:
            return [_settings_of(e) for e in await admin.list_endpoints()]

    rows = run(work)
    if as_json:
        print_records(rows)
    else:
        for row in rows:
            out.print(
                f"{row['name']}\ttimeout={row['execution_timeout_ms']}ms\tattempts={row['max_attempts']}"
            )


def endpoint_show(name: NameArg, database_url: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """Show an endpoint's settings (not its webhook secret: see `jobwire endpoint secret`)."""

    async def work() -> dict[str, Any]:
        async with admin_service(settings_for(database_url)) as admin:
            return _settings_of(await admin.get_endpoint(name))

    record = run(work)
    if as_json:
        out.print_json(data=record, default=str)
        return
    # Every field of the record, so settings added to endpoints show up here without a change.
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for field, value in record.items():
        table.add_row(field, escape(str(value)))
    out.print(table)


def endpoint_secret(name: NameArg, database_url: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """Print the endpoint's webhook signing secret.

    Webhook receivers need it to verify deliveries (Standard Webhooks): `webhook-signature` is `v1,` and
    the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, keyed with this secret's text
    as it is printed (its UTF-8 bytes; no `whsec_` prefix, no base64 decoding).
    """

    async def work() -> str:
        async with admin_service(settings_for(database_url)) as admin:
            return await admin.webhook_secret(name)

    secret = run(work)
    if as_json:
        print_json({"endpoint": name, "secret": secret})
    else:
        # The bare secret on stdout, so scripts can capture it: SECRET=$(jobwire endpoint secret NAME).
        print(secret)


def endpoint_delete(name: str, database_url: DatabaseOption = None) -> None:
    """Delete an endpoint with its jobs and keys."""

    async def work() -> None:
        async with admin_service(settings_for(database_url)) as admin:
            await admin.delete_endpoint(name)

    run(work)
    out.print(f"deleted endpoint {name}")


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
        async with admin_service(settings_for(database_url)) as admin:
            return (await admin.create_key(role, endpoint, expires)).secret

    secret = run(work)
    # The bare key on stdout, so scripts can capture it: KEY=$(jobwire key create ...).
    print(secret)


def key_list(
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's keys.")] = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (their prefixes only)."""

    async def work() -> list[dict[str, Any]]:
        async with admin_service(settings_for(database_url)) as admin:
            return [asdict(k) for k in await admin.list_keys(endpoint)]

    rows = run(work)
    if as_json:
        print_records(rows)
    else:
        for row in rows:
            state = "revoked" if row["revoked_at"] else "live"
            out.print(f"{row['prefix']}…\t{row['role']}\t{row['endpoint'] or '*'}\t{state}")


def key_revoke(prefix: str, database_url: DatabaseOption = None) -> None:
    """Revoke the key(s) with this prefix."""

    async def work() -> None:
        async with admin_service(settings_for(database_url)) as admin:
            await admin.revoke_key(prefix)

    run(work)
    out.print(f"revoked {prefix}")
