"""The wheel as `pip install jobwire` gets it: built from this checkout with uv, installed without the
`server` extra into a fresh venv, and used there.

Offline: the base dependencies are pinned to uv.lock's versions and come from uv's cache, which
`scripts/bootstrap` filled (uv sync installed the same versions and built the project with hatchling).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.packaging


def _uv() -> str:
    found = shutil.which("uv") or ROOT / ".tools" / "bin" / "uv"
    assert Path(found).is_file(), "uv not found: run scripts/bootstrap"
    return str(found)


def _run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # Never the network, never a downloaded Python, never this test run's own venv.
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env |= {"UV_OFFLINE": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def _ok(*command: str | Path) -> str:
    result = _run(*command)
    assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"
    return result.stdout


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    bin: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel, and a fresh venv with it and its base dependencies (not the server extra)."""
    uv, work = _uv(), tmp_path_factory.mktemp("wheel")
    _ok(uv, "build", "--wheel", "--quiet", "--out-dir", work / "dist")
    (wheel,) = (work / "dist").glob("jobwire-*.whl")
    requirements = work / "requirements.txt"
    _ok(uv, "export", "--frozen", "--no-default-groups", "--no-emit-project", "--no-hashes", "--quiet",
        "--output-file", requirements)  # fmt: skip
    venv = work / "venv"
    _ok(uv, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _ok(uv, "pip", "install", "--quiet", "--python", python, "-r", requirements, wheel)
    return Installed(wheel, python, venv / "bin")


def test_the_base_install_has_the_sdks_and_the_stubs_and_nothing_of_the_server(
    installed: Installed,
) -> None:
    probe = (
        "import importlib.util, jobwire.worker, jobwire.client, jobwire.v1.jobs_pb2_grpc, "
        "jobwire.v1.worker_pb2_grpc; "
        "print([m for m in ('typer', 'httpx', 'sqlalchemy', 'asyncpg', 'alembic', 'uvicorn') "
        "if importlib.util.find_spec(m)])"
    )
    assert _ok(installed.python, "-c", probe).strip() == "[]"
    assert "MODULE:FUNCTION" in _ok(installed.python, "-m", "jobwire.worker", "--help")


def test_the_jobwire_command_asks_for_the_server_extra(installed: Installed) -> None:
    commands: list[list[str | Path]] = [
        [installed.bin / "jobwire", "--help"],
        [installed.python, "-m", "jobwire.server"],
    ]
    for command in commands:
        result = _run(*command)
        assert result.returncode == 1
        assert "needs the server extra" in result.stderr and "pip install 'jobwire[server]'" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_wheel_carries_types_migrations_and_the_license(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    dist_info = installed.wheel.name.split("-py3")[0] + ".dist-info"
    typed = ("v1", "server", "worker", "client")
    assert {f"jobwire/{package}/py.typed" for package in typed} <= names
    assert f"{dist_info}/licenses/LICENSE" in names
    migrations = {
        "jobwire/server/_migrations/" + p.relative_to(ROOT / "migrations").as_posix()
        for p in (ROOT / "migrations").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert migrations and migrations <= names
    # One import root: nothing but the jobwire package and the metadata.
    assert {name.split("/")[0] for name in names} == {"jobwire", dist_info}
    assert not [name for name in names if "__pycache__" in name or name.startswith("jobwire/__init__")]
