"""The REST client of the client commands: the few calls they make to a running jobwire, with httpx, and
their failures as `ClientError`s that carry the message for stderr and the exit code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import typer
from rich.markup import escape

from jobwire.server.cli.output import EXIT_FAILED, EXIT_UNREACHABLE, err
from jobwire.server.version import jobwire_version

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


def rest_path(*segments: str) -> str:
    """A /v2 REST path, each segment escaped (ids and names come from the command line)."""
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
        stream_path = rest_path(endpoint, "stream", job_id) + ":follow"
        params = {"fromSeq": str(from_seq)}
        try:
            # No read timeout: chunks may be minutes apart while the job waits in the queue.
            async with self.http.stream(
                "GET", stream_path, params=params, timeout=httpx.Timeout(None, connect=10)
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


def run_client(url: str, key: str | None, work: Callable[[RestClient], Awaitable[int]]) -> None:
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
