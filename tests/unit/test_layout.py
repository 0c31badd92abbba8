"""The layout rules of the one import root `jobwire` (see the house style)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import jobwire

ROOT = Path(__file__).resolve().parents[2]


def test_jobwire_is_one_namespace_over_gen_server_worker_and_client() -> None:
    # An installed wheel (editable or not) may add one portion holding only the shipped migrations.
    roots = {Path(p).parent.name for p in jobwire.__path__ if not p.endswith("site-packages/jobwire")}
    assert roots == {"gen", "server", "worker", "client"}
    for portion in (Path(p) for p in jobwire.__path__ if p.endswith("site-packages/jobwire")):
        assert {q.relative_to(portion).parts[:2] for q in portion.rglob("*") if q.is_file()} <= {
            ("server", "_migrations")
        }
    # Other languages' stubs sit beside the Python ones in gen/; they hold no Python, so no import root.
    others = {"gen": {"go", "openapi", "ts"}, "server": set(), "worker": set(), "client": set()}
    for root, extra in others.items():
        assert not (ROOT / root / "jobwire" / "__init__.py").exists()
        # Nothing but jobwire/ at the top of a source root: anything else would become a top-level module.
        top = {p.name for p in (ROOT / root).iterdir() if not p.name.startswith((".", "__"))}
        assert top == {"jobwire", *extra}
        assert not [p for name in extra for p in (ROOT / root / name).rglob("*.py")]


@pytest.mark.parametrize("sdk", ["jobwire.worker", "jobwire.client"])
def test_the_sdks_import_nothing_of_the_server(sdk: str) -> None:
    probe = (
        f"import sys, {sdk}; "
        "bad = [m for m in sys.modules "
        "if m.startswith(('jobwire.server', 'sqlalchemy', 'alembic', 'asyncpg'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_command_loads_no_server_stack_until_a_command_runs_it() -> None:
    # `jobwire --help` and the client commands stay fast: SQLAlchemy, grpc, the app are imported inside
    # the commands that need them.
    probe = (
        "import sys, jobwire.server.cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'sqlalchemy', 'alembic', 'asyncpg', 'grpc', 'starlette', 'uvicorn', 'opentelemetry'} "
        "or m.startswith(('jobwire.server.app', 'jobwire.server.service', 'jobwire.server.store'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
