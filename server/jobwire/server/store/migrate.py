"""Alembic, driven from code: `jobwire migrate`, the embedded default and the test fixtures use it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine


def migrations_dir() -> Path:
    """The Alembic scripts: the checkout's `migrations/` when running from one (an editable install also
    carries a copy, which goes stale as migrations are added), else the copy shipped in the wheel."""
    checkout = Path(__file__).resolve().parents[4] / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    return Path(__file__).resolve().parent.parent / "_migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # Date first, so the files sort by time.
    config.set_main_option(
        "file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(rev)s_%%(slug)s"
    )
    # ConfigParser interpolation would read a '%' in a password as a directive.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrates the database at `url` (an asyncpg URL) to `revision`. Blocking: call it off the loop."""
    command.upgrade(alembic_config(url), revision)


def revision(url: str, message: str) -> None:
    """Writes a new migration with the difference between the database at `url` (at head) and the models."""
    command.revision(alembic_config(url), message=message, autogenerate=True)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://unused/")).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None for an unmigrated database."""
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
