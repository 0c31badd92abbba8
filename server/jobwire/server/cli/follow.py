"""`jobwire submit --follow`: the job's streamed output as it comes, with its progress updates alongside
(a progress bar on a terminal), resuming after a cut stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from jobwire.server.cli.client import ClientError, RestClient, rest_path
from jobwire.server.cli.output import TERMINAL_STATES, err, print_json, report_end

#: How often --follow polls the job's status for progress updates (the stream carries output only).
PROGRESS_POLL_S = 0.5


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
            print_json({"progress": value})
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
        job = await client.call("GET", rest_path(endpoint, "status", job_id))
        if job.get("status") == "IN_PROGRESS" and "output" in job:
            view.update(job["output"])
        if job.get("status") in TERMINAL_STATES:
            return
        await asyncio.sleep(PROGRESS_POLL_S)


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


async def follow(client: RestClient, endpoint: str, job_id: str, as_json: bool) -> dict[str, Any]:
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
                        print_json(event)
                    else:
                        chunks.write(chunk.get("output"))
                elif "done" in event:
                    job: dict[str, Any] = event["done"]
                    if as_json:
                        print_json(event)
                    else:
                        chunks.end()
                        view.close()
                        # Output that was streamed is not printed again (a generator's is its chunks).
                        report_end(job, show_output=chunks.seen == 0)
                    return job
    finally:
        view.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientError):
            await watcher
