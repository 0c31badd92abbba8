"""The console's built files travel in the wheel, so an installed jobwire serves /console/ without Node."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from jobwire.server.console import INDEX, load_files

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "server" / "jobwire" / "server" / "console" / "static"
pytestmark = pytest.mark.packaging


def test_the_wheel_carries_the_console_and_it_loads_from_there(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env |= {"UV_OFFLINE": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    command = [uv, "build", "--wheel", "--quiet", "--out-dir", str(tmp_path)]
    built = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("jobwire-*.whl")

    committed = {p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file()}
    assert INDEX in committed and any(name.endswith(".js") for name in committed)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"jobwire/server/console/static/{name}" for name in committed} <= names

    files = load_files(zipfile.Path(wheel, "jobwire/server/console/static/"))
    assert set(files) == committed
    # Everything index.html refers to is there.
    referenced = re.findall(r'(?:src|href)="\./([^"]+)"', files[INDEX].body.decode())
    assert referenced and set(referenced) <= set(files)
