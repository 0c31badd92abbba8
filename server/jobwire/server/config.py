"""Settings, from the environment (`JOBWIRE_*`) with command-line overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def default_data_dir() -> Path:
    """jobwire's own files (the embedded Postgres among them): $JOBWIRE_DATA_DIR, else the platform's
    user data directory (`~/.local/share/jobwire` on Linux), so the data survives a fresh checkout."""
    configured = os.environ.get("JOBWIRE_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("jobwire"))


@dataclass(frozen=True)
class Settings:
    #: Any Postgres, as a SQLAlchemy asyncpg URL. None: an embedded Postgres in `data_dir`.
    database_url: str | None = None
    http_addr: str = "127.0.0.1:8080"
    grpc_addr: str = "127.0.0.1:50051"
    data_dir: Path = field(default_factory=default_data_dir)
    #: Migrate the database at start-up. On by default for the embedded database only.
    migrate: bool | None = None
    log_level: str = "info"
    log_json: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            database_url=env.get("JOBWIRE_DATABASE_URL") or None,
            http_addr=env.get("JOBWIRE_HTTP_ADDR", cls.http_addr),
            grpc_addr=env.get("JOBWIRE_GRPC_ADDR", cls.grpc_addr),
            log_level=env.get("JOBWIRE_LOG_LEVEL", cls.log_level),
            log_json=env.get("JOBWIRE_LOG_JSON", "") in ("1", "true", "yes"),
        )

    def with_overrides(self, **overrides: object) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


def split_addr(addr: str) -> tuple[str, int]:
    """`127.0.0.1:8080` or `[::1]:8080` -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)
