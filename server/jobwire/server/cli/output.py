"""What the commands print, and how they exit.

stdout carries what a script captures (an id, a key, a job's output, JSON with --json); stderr carries
what people read (how a job went, errors, progress). Rich markup in printed values is escaped.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console()
# Messages on stderr are not wrapped at the terminal width: scripts grep them.
err = Console(stderr=True, soft_wrap=True)

#: The job FAILED, TIMED_OUT or was CANCELLED, or the request was refused (a domain error, a 4xx).
EXIT_FAILED = 1
#: A usage error (Click's own code), or a database that needs `jobwire migrate`.
EXIT_USAGE = 2
#: No answer from the server, or a server error (5xx).
EXIT_UNREACHABLE = 3
FAILED_STATES = frozenset({"FAILED", "TIMED_OUT", "CANCELLED"})
TERMINAL_STATES = FAILED_STATES | {"COMPLETED"}


def print_json(document: object) -> None:
    """Compact JSON on stdout, one document per line, for pipes (`| jq`)."""
    print(json.dumps(document, ensure_ascii=False, separators=(",", ":")), flush=True)


def print_records(rows: list[dict[str, Any]]) -> None:
    """Database records (endpoints, keys) as indented JSON; datetimes as their str()."""
    out.print_json(json.dumps(rows, default=str))


def seconds(ms: object) -> str:
    return f"{int(ms) / 1000:.3g} s" if isinstance(ms, int | float) else "-"


def exit_code(job: dict[str, Any]) -> int:
    return EXIT_FAILED if job.get("status") in FAILED_STATES else 0


def report_end(job: dict[str, Any], *, show_output: bool = True) -> None:
    """A finished job for people: its output on stdout, how it went on stderr."""
    status = job.get("status")
    timing = f"delay {seconds(job.get('delayTime'))}, execution {seconds(job.get('executionTime'))}"
    if status == "COMPLETED":
        if show_output and "output" in job:
            print_json(job["output"])
        err.print(f"job {job.get('id')} [green]COMPLETED[/green] ({timing})")
    else:
        detail = f": {escape(str(job['error']))}" if job.get("error") else ""
        err.print(f"job {job.get('id')} [red]{status}[/red]{detail}")


def show_job(job: dict[str, Any]) -> None:
    """A job's status view as a two-column table on stdout."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    colour = {"COMPLETED": "green", "IN_PROGRESS": "cyan", "IN_QUEUE": "yellow"}.get(
        str(job.get("status")), "red"
    )
    table.add_row("id", escape(str(job.get("id"))))
    table.add_row("status", f"[{colour}]{job.get('status')}[/{colour}]")
    table.add_row("delay", seconds(job.get("delayTime")))
    table.add_row("execution", seconds(job.get("executionTime")))
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
