"""API keys: minting, and checking a request's key against the endpoint and role it needs.

Keys are `jw_` followed by 40 base62 characters (about 238 bits). Only their SHA-256 is stored. Lookups
are cached for a few seconds per process, so a request does not cost a database round trip; the price is
that a revoked key keeps working for up to `cache_seconds` on replicas that saw it recently.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

from jobwire.server.clock import Clock
from jobwire.server.errors import NotFound, PermissionDenied, Unauthenticated
from jobwire.server.model import ApiKey, Endpoint, Role
from jobwire.server.store import AdminStore

_ALPHABET = string.ascii_letters + string.digits
KEY_PREFIX = "jw_"
#: How many characters of a key are kept in clear to name it in listings.
SHOWN_PREFIX_LENGTH = 11

V = TypeVar("V")


@dataclass(frozen=True)
class MintedKey:
    """A new key: the secret is shown once and never stored."""

    secret: str
    prefix: str
    key_hash: bytes


def mint_key() -> MintedKey:
    secret = KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(40))
    return MintedKey(secret, secret[:SHOWN_PREFIX_LENGTH], hash_key(secret))


def hash_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_credential(header: str | None) -> str | None:
    """The key from an Authorization value: `Bearer KEY` (SDK clients) or the bare `KEY` (Runpod workers
    and the docs' cURL examples)."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip() or None
    return header.strip()


class _TtlCache(Generic[V]):
    """A small time-bounded cache; cleared when full so unknown keys cannot grow it without bound."""

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self._seconds = seconds
        self._max = max_entries
        self._entries: dict[object, tuple[float, V]] = {}

    def get(self, key: object) -> tuple[bool, V | None]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, key: object, value: V) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self._seconds, value)

    def clear(self) -> None:
        self._entries.clear()


class Authenticator:
    def __init__(self, admin: AdminStore, clock: Clock, cache_seconds: float = 5.0) -> None:
        self._admin = admin
        self._clock = clock
        self._keys: _TtlCache[ApiKey | None] = _TtlCache(cache_seconds)
        self._endpoints: _TtlCache[Endpoint | None] = _TtlCache(cache_seconds)

    async def authorize(self, authorization: str | None, endpoint_name: str, role: Role) -> Endpoint:
        """The endpoint, if the key may act on it in `role`. Admin keys may act on every endpoint."""
        key = await self._key(authorization)
        endpoint = await self._endpoint(endpoint_name)
        if key.role is not Role.ADMIN:
            if key.endpoint != endpoint.name:
                raise PermissionDenied("this API key belongs to another endpoint")
            if key.role is not role:
                raise PermissionDenied(f"a {key.role} key cannot perform {role} operations")
        return endpoint

    async def visible_endpoints(self, authorization: str | None) -> list[Endpoint]:
        """Every endpoint for an admin key; the key's own endpoint for a client key."""
        key = await self._key(authorization)
        if key.role is Role.ADMIN:
            return await self._admin.list_endpoints()
        if key.role is not Role.CLIENT or key.endpoint is None:
            raise PermissionDenied(f"a {key.role} key cannot list endpoints")
        return [await self._endpoint(key.endpoint)]

    def forget(self) -> None:
        """Drops cached keys and endpoints (after this process changed them)."""
        self._keys.clear()
        self._endpoints.clear()

    async def _key(self, authorization: str | None) -> ApiKey:
        secret = parse_credential(authorization)
        if secret is None:
            raise Unauthenticated("missing API key: send `Authorization: Bearer KEY`")
        digest = hash_key(secret)
        found, key = self._keys.get(digest)
        if not found:
            key = await self._admin.key_by_hash(digest)
            self._keys.put(digest, key)
        now = self._clock.now()
        if (
            key is None
            or key.revoked_at is not None
            or (key.expires_at is not None and key.expires_at <= now)
        ):
            raise Unauthenticated("invalid API key")
        return key

    async def _endpoint(self, name: str) -> Endpoint:
        found, endpoint = self._endpoints.get(name)
        if not found:
            endpoint = await self._admin.get_endpoint(name)
            self._endpoints.put(name, endpoint)
        if endpoint is None:
            raise NotFound(f"endpoint {name!r} not found")
        return endpoint
