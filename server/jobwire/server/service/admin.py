"""Endpoints and API keys, as operators manage them (CLI, admin API)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jobwire.server.clock import Clock
from jobwire.server.errors import InvalidArgument, NotFound
from jobwire.server.model import OPERATIONS, ApiKey, Endpoint, RateLimit, Role
from jobwire.server.service.auth import mint_key
from jobwire.server.store import AdminStore

#: Endpoint names appear in URLs (`/v2/{endpoint_id}/run`): one path segment, no escaping needed.
ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
DEFAULT_EXECUTION_TIMEOUT_MS = 10 * 60 * 1000
DEFAULT_MAX_ATTEMPTS = 3
DAY_MS = 24 * 3600 * 1000


#: Bounds of each endpoint setting (milliseconds, counts).
SETTING_BOUNDS: dict[str, tuple[int, int]] = {
    "execution_timeout_ms": (5_000, 7 * DAY_MS),
    "max_attempts": (1, 100),
    "run_retention_ms": (10_000, 30 * DAY_MS),
    "sync_retention_ms": (10_000, DAY_MS),
    "workers_max": (0, 100_000),
}
RATE_LIMIT_BOUNDS = (1, 10_000_000)


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings, if every one is known and within its bounds; InvalidArgument names the first that
    is not."""
    for name, value in settings.items():
        if name == "rate_limits":
            _check_rate_limits(value)
        elif name not in SETTING_BOUNDS:
            raise InvalidArgument(f"{name!r} is not an endpoint setting")
        elif not (name == "workers_max" and value is None):
            low, high = SETTING_BOUNDS[name]
            if not isinstance(value, int) or not low <= value <= high:
                raise InvalidArgument(f"{name} must be between {low} and {high}, got {value!r}")
    return dict(settings)


def _check_rate_limits(limits: Mapping[str, RateLimit]) -> None:
    low, high = RATE_LIMIT_BOUNDS
    for operation, limit in limits.items():
        if operation not in OPERATIONS:
            raise InvalidArgument(
                f"{operation!r} is not a rate-limited operation: one of {', '.join(OPERATIONS)}"
            )
        if not low <= limit.limit <= high or not 0 <= limit.per_worker <= high:
            raise InvalidArgument(
                f"the rate limit of {operation} must be {low} to {high} requests per 10 s "
                f"(and 0 to {high} per worker)"
            )


@dataclass(frozen=True)
class CreatedKey:
    secret: str
    key: ApiKey


class AdminService:
    def __init__(self, store: AdminStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def create_endpoint(
        self,
        name: str,
        execution_timeout_ms: int = DEFAULT_EXECUTION_TIMEOUT_MS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        **settings: Any,
    ) -> Endpoint:
        """Creates an endpoint; `settings` are further columns of `EndpointSettings` names
        (run_retention_ms, sync_retention_ms, workers_max, rate_limits)."""
        if not ENDPOINT_NAME.match(name):
            raise InvalidArgument(
                "an endpoint name is 1-63 letters, digits, '-' or '_', starting with a letter or digit"
            )
        values = {"execution_timeout_ms": execution_timeout_ms, "max_attempts": max_attempts, **settings}
        return await self._store.create_endpoint(name, self._clock.now(), check_settings(values))

    async def configure_endpoint(self, name: str, **settings: Any) -> Endpoint:
        """Changes some of an endpoint's settings (the others keep their values)."""
        endpoint = await self._store.update_endpoint(name, check_settings(settings))
        if endpoint is None:
            raise NotFound(f"endpoint {name!r} not found")
        return endpoint

    async def get_endpoint(self, name: str) -> Endpoint:
        endpoint = await self._store.get_endpoint(name)
        if endpoint is None:
            raise NotFound(f"endpoint {name!r} not found")
        return endpoint

    async def webhook_secret(self, name: str) -> str:
        """The secret that signs the endpoint's webhook deliveries, for their receivers to verify them."""
        return (await self.get_endpoint(name)).webhook_secret

    async def ensure_endpoint(self, name: str) -> Endpoint:
        existing = await self._store.get_endpoint(name)
        return existing if existing is not None else await self.create_endpoint(name)

    async def list_endpoints(self) -> list[Endpoint]:
        return await self._store.list_endpoints()

    async def delete_endpoint(self, name: str) -> None:
        if not await self._store.delete_endpoint(name):
            raise NotFound(f"endpoint {name!r} not found")

    async def create_key(
        self, role: Role, endpoint: str | None, expires_in: timedelta | None = None
    ) -> CreatedKey:
        """Mints a key. Client and worker keys belong to one endpoint; admin keys may span all."""
        if role is not Role.ADMIN and endpoint is None:
            raise InvalidArgument(f"a {role} key needs an endpoint")
        if endpoint is not None and await self._store.get_endpoint(endpoint) is None:
            raise NotFound(f"endpoint {endpoint!r} not found")
        now = self._clock.now()
        expires_at: datetime | None = now + expires_in if expires_in is not None else None
        minted = mint_key()
        key = await self._store.create_key(minted.prefix, minted.key_hash, role, endpoint, now, expires_at)
        return CreatedKey(minted.secret, key)

    async def list_keys(self, endpoint: str | None = None) -> list[ApiKey]:
        return await self._store.list_keys(endpoint)

    async def revoke_key(self, prefix: str) -> None:
        if not await self._store.revoke_key(prefix, self._clock.now()):
            raise NotFound(f"no live key starts with {prefix!r}")
