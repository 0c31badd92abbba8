"""Endpoints and API keys, as operators manage them (CLI, admin API)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobwire.server.clock import Clock
from jobwire.server.errors import InvalidArgument, NotFound
from jobwire.server.model import ApiKey, Endpoint, Role
from jobwire.server.service.auth import mint_key
from jobwire.server.store import AdminStore

#: Endpoint names appear in URLs (`/v2/{endpoint_id}/run`): one path segment, no escaping needed.
ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
DEFAULT_EXECUTION_TIMEOUT_MS = 10 * 60 * 1000
DEFAULT_MAX_ATTEMPTS = 3


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
    ) -> Endpoint:
        if not ENDPOINT_NAME.match(name):
            raise InvalidArgument(
                "an endpoint name is 1-63 letters, digits, '-' or '_', starting with a letter or digit"
            )
        if not 5_000 <= execution_timeout_ms <= 7 * 24 * 3600 * 1000:
            raise InvalidArgument("the execution timeout must be between 5 s and 7 days")
        if not 1 <= max_attempts <= 100:
            raise InvalidArgument("max attempts must be between 1 and 100")
        return await self._store.create_endpoint(name, execution_timeout_ms, max_attempts, self._clock.now())

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
