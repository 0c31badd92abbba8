"""Every SQL statement on endpoints and API keys."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from jobwire.server.errors import AlreadyExists
from jobwire.server.model import ApiKey, Endpoint, RateLimit, Role
from jobwire.server.store.database import Database
from jobwire.server.store.tables import api_keys, endpoints

#: Postgres's SQLSTATE for a unique constraint's violation.
UNIQUE_VIOLATION = "23505"

#: Endpoint settings an operator may change (`endpoint create` / `endpoint set`), as column names.
SETTINGS = (
    "execution_timeout_ms",
    "max_attempts",
    "run_retention_ms",
    "sync_retention_ms",
    "workers_max",
    "rate_limits",
)


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        name=row.name,
        created_at=row.created_at,
        execution_timeout_ms=row.execution_timeout_ms,
        max_attempts=row.max_attempts,
        webhook_secret=row.webhook_secret,
        run_retention_ms=row.run_retention_ms,
        sync_retention_ms=row.sync_retention_ms,
        workers_max=row.workers_max,
        rate_limits={
            operation: RateLimit(int(value["limit"]), int(value.get("perWorker", 0)))
            for operation, value in (row.rate_limits or {}).items()
        },
    )


def _columns(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Endpoint settings as column values (rate limits as their JSON document)."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ValueError(f"not endpoint settings: {sorted(unknown)}")
    values = dict(settings)
    if "rate_limits" in values:
        values["rate_limits"] = {
            operation: {"limit": limit.limit, "perWorker": limit.per_worker}
            for operation, limit in values["rate_limits"].items()
        }
    return values


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        prefix=row.prefix,
        role=Role(row.role),
        endpoint=row.endpoint,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class AdminStore:
    """Endpoints and API keys in Postgres."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_endpoint(
        self, name: str, now: datetime, settings: Mapping[str, Any], webhook_secret: str | None = None
    ) -> Endpoint:
        statement = insert(endpoints).values(
            name=name,
            created_at=now,
            webhook_secret=webhook_secret or secrets.token_hex(32),
            **_columns(settings),
        )
        try:
            async with self._db.transaction() as conn:
                row = (await conn.execute(statement.returning(*endpoints.c))).one()
        except IntegrityError as error:
            # Only the name's uniqueness means "exists"; any other violation (a setting left out) is a
            # bug of the caller and stays the error it is.
            if getattr(error.orig, "sqlstate", None) != UNIQUE_VIOLATION:
                raise
            raise AlreadyExists(f"endpoint {name!r} already exists") from error
        return _endpoint(row)

    async def update_endpoint(self, name: str, settings: Mapping[str, Any]) -> Endpoint | None:
        """Changes the given settings; None when there is no such endpoint."""
        statement = update(endpoints).where(endpoints.c.name == name).values(**_columns(settings))
        async with self._db.transaction() as conn:
            row = (await conn.execute(statement.returning(*endpoints.c))).first()
        return None if row is None else _endpoint(row)

    async def get_endpoint(self, name: str) -> Endpoint | None:
        async with self._db.transaction() as conn:
            row = (await conn.execute(select(endpoints).where(endpoints.c.name == name))).first()
        return None if row is None else _endpoint(row)

    async def list_endpoints(self) -> list[Endpoint]:
        async with self._db.transaction() as conn:
            rows = await conn.execute(select(endpoints).order_by(endpoints.c.name))
            return [_endpoint(row) for row in rows]

    async def delete_endpoint(self, name: str) -> bool:
        """Deletes the endpoint with its jobs and keys."""
        async with self._db.transaction() as conn:
            result = await conn.execute(delete(endpoints).where(endpoints.c.name == name))
        return bool(result.rowcount)

    async def create_key(
        self,
        prefix: str,
        key_hash: bytes,
        role: Role,
        endpoint: str | None,
        now: datetime,
        expires_at: datetime | None,
    ) -> ApiKey:
        statement = (
            insert(api_keys)
            .values(
                prefix=prefix,
                key_hash=key_hash,
                role=str(role),
                endpoint=endpoint,
                created_at=now,
                expires_at=expires_at,
            )
            .returning(*api_keys.c)
        )
        async with self._db.transaction() as conn:
            row = (await conn.execute(statement)).one()
        return _key(row)

    async def key_by_hash(self, key_hash: bytes) -> ApiKey | None:
        async with self._db.transaction() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))).first()
        return None if row is None else _key(row)

    async def list_keys(self, endpoint: str | None = None) -> list[ApiKey]:
        statement = select(api_keys).order_by(api_keys.c.id)
        if endpoint is not None:
            statement = statement.where(api_keys.c.endpoint == endpoint)
        async with self._db.transaction() as conn:
            return [_key(row) for row in await conn.execute(statement)]

    async def revoke_key(self, prefix: str, now: datetime) -> int:
        """Revokes every live key with this prefix; returns how many."""
        statement = (
            update(api_keys)
            .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        async with self._db.transaction() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount)
