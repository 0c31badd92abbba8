"""The `jobwire` command: this module assembles it; each command lives in the module named for its kind.

- `server_commands`: `serve`, `dev`, `worker`, `migrate` (with `database`: the database they work on).
- `admin_commands`: `endpoint ...` and `key ...`, on the database.
- `client_commands`: `submit`, `status`, `cancel`, `retry`, `purge`, `health`: a running jobwire over
  its REST API (`client`: the httpx client; `follow`: `submit --follow`'s stream and progress bar).
- `output`: what is printed where, and the exit codes.

Exit codes: 0 success; 1 the job FAILED, TIMED_OUT or was CANCELLED, or the request was refused (a domain
error, a 4xx: the server's message on stderr); 2 usage errors (and an unmigrated database); 3 the server
could not be reached or failed (5xx).

The server stack (SQLAlchemy, Alembic, grpc, the app) is imported inside the commands that run it, so
that the client commands and --help start in a fraction of the time.
"""

from __future__ import annotations

from typing import Annotated

try:
    # What every command needs; `pip install jobwire` alone (the worker SDK) has none of it.
    import httpx  # noqa: F401
    import rich  # noqa: F401
    import typer
except ModuleNotFoundError as missing:
    raise SystemExit(
        f"the jobwire command needs the server extra ({missing.name} is not installed): "
        "pip install 'jobwire[server]'"
    ) from None

from jobwire.server.cli import admin_commands, client_commands, server_commands
from jobwire.server.version import jobwire_version

__all__ = ["app", "main"]

SERVER_PANEL = "Server"
ADMIN_PANEL = "Administration (on the database)"
CLIENT_PANEL = "Jobs (a running jobwire, over REST)"

app = typer.Typer(
    help="jobwire: a self-hosted job service with Runpod's queue API.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
endpoint_app = typer.Typer(help="Manage endpoints.", no_args_is_help=True)
key_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(endpoint_app, name="endpoint", rich_help_panel=ADMIN_PANEL)
app.add_typer(key_app, name="key", rich_help_panel=ADMIN_PANEL)


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


# The command tree, in the order --help lists it within each panel.
app.command(rich_help_panel=SERVER_PANEL)(server_commands.serve)
app.command(rich_help_panel=SERVER_PANEL)(server_commands.dev)
# `jobwire worker` hands every argument, --help included, to the worker SDK's own parser.
app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
    rich_help_panel=SERVER_PANEL,
)(server_commands.worker)
app.command(rich_help_panel=ADMIN_PANEL)(server_commands.migrate)

endpoint_app.command("create")(admin_commands.endpoint_create)
endpoint_app.command("set")(admin_commands.endpoint_set)
endpoint_app.command("list")(admin_commands.endpoint_list)
endpoint_app.command("show")(admin_commands.endpoint_show)
endpoint_app.command("secret")(admin_commands.endpoint_secret)
endpoint_app.command("delete")(admin_commands.endpoint_delete)
key_app.command("create")(admin_commands.key_create)
key_app.command("list")(admin_commands.key_list)
key_app.command("revoke")(admin_commands.key_revoke)

for command in (
    client_commands.submit,
    client_commands.status,
    client_commands.cancel,
    client_commands.retry,
    client_commands.purge,
    client_commands.health,
):
    app.command(rich_help_panel=CLIENT_PANEL)(command)


def main() -> None:
    app(prog_name="jobwire")  # also under `python -m jobwire.server` and `python -m jobwire.server.cli`
