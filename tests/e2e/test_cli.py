"""The `jobwire` command as operators run it: real processes, real ports on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import httpx

JOBWIRE = [sys.executable, "-m", "jobwire.server"]


async def jobwire(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *JOBWIRE,
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_worker_command_delegates_to_the_sdk() -> None:
    code, out, _ = await jobwire("worker", "--help")
    assert code == 0 and "MODULE:FUNCTION" in out and "--concurrency" in out


async def test_commands_run_on_the_chosen_event_loop_and_refuse_an_unknown_one(database_url: str) -> None:
    db = ["--database-url", database_url]
    # The in-process suite runs on asyncio's loop: uvloop's subprocess spawn forks this multi-threaded
    # process (gRPC's threads) and the child crashed before exec in CI. A served process never spawns
    # from its loop, and the `serve` and `dev` tests here run it on uvloop (the default).
    for choice in ("asyncio", "uvloop"):
        assert (await jobwire("endpoint", "list", *db, env={"JOBWIRE_EVENT_LOOP": choice}))[0] == 0
    code, _, err = await jobwire("endpoint", "list", *db, env={"JOBWIRE_EVENT_LOOP": "trio"})
    assert code == 2 and "JOBWIRE_EVENT_LOOP must be one of auto, uvloop, asyncio" in err


async def test_migrate_then_manage_endpoints_and_keys(empty_database_url: str) -> None:
    db = ["--database-url", empty_database_url]
    code, _, err = await jobwire("endpoint", "create", "demo", *db)
    assert code == 2 and "jobwire migrate" in err  # an unmigrated database is refused with the fix
    assert (await jobwire("migrate", *db))[0] == 0
    assert (await jobwire("endpoint", "create", "demo", *db))[0] == 0
    code, _, err = await jobwire("endpoint", "create", "demo", *db)
    assert code == 1 and "already exists" in err
    code, out, _ = await jobwire("key", "create", "--role", "client", "--endpoint", "demo", *db)
    assert code == 0 and re.fullmatch(r"jw_[A-Za-z0-9]{40}\n", out)
    code, _, err = await jobwire("key", "create", "--role", "worker", *db)
    assert code == 1 and "needs an endpoint" in err
    code, out, _ = await jobwire("key", "list", "--json", *db)
    assert code == 0 and '"role": "client"' in out and out.count('"prefix"') == 1
    prefix = out.split('"prefix": "')[1][:11]
    assert (await jobwire("key", "revoke", prefix, *db))[0] == 0
    assert (await jobwire("key", "revoke", prefix, *db))[0] == 1


async def test_serve_answers_on_the_addresses_it_prints_and_stops_on_sigterm(database_url: str) -> None:
    db = ["--database-url", database_url]
    assert (await jobwire("endpoint", "create", "demo", *db))[0] == 0
    key = (await jobwire("key", "create", "--role", "client", "--endpoint", "demo", *db))[1].strip()
    process = await asyncio.create_subprocess_exec(
        *JOBWIRE, "serve", *db, "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    log = ""
    while "jobwire serving" not in log:
        line = await asyncio.wait_for(process.stderr.readline(), timeout=60)
        assert line, f"serve exited early: {log}"
        log += line.decode()
    http_url = re.search(r"HTTP on (http://\S+)", log).group(1)  # type: ignore[union-attr]
    assert "(event loop: uvloop)" in log  # the default where uvloop is installed (jobwire.server.loop)
    async with httpx.AsyncClient(base_url=http_url) as http:
        response = await http.post(
            "/v2/demo/run", json={"input": 1}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200 and response.json()["status"] == "IN_QUEUE"
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), timeout=30) == 0


async def test_dev_starts_an_embedded_postgres_and_prints_a_working_key(tmp_path: Path) -> None:
    env = {**os.environ, "JOBWIRE_DATA_DIR": str(tmp_path / "data")}
    process = await asyncio.create_subprocess_exec(
        *JOBWIRE, "dev", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    printed = ""
    while "try:" not in printed:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=120)
        assert line, f"dev exited early: {printed}"
        printed += line.decode()
    key = re.search(r"key\s+(jw_\S+)", printed).group(1)  # type: ignore[union-attr]
    run_url = re.search(r"REST\s+(\S+)", printed).group(1)  # type: ignore[union-attr]
    async with httpx.AsyncClient() as http:
        response = await http.post(
            run_url, json={"input": {"hello": "world"}}, headers={"Authorization": key}
        )
        assert response.status_code == 200
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), timeout=60) == 0
    # dev started the embedded Postgres, so it stopped it too.
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists()


async def test_endpoint_secret_prints_the_webhook_signing_secret_and_show_never_does(
    database_url: str,
) -> None:
    from jobwire.server.store import AdminStore, Database

    db = ["--database-url", database_url]
    assert (await jobwire("endpoint", "create", "demo", "--max-attempts", "5", *db))[0] == 0
    database = Database(database_url, pool_size=1)
    try:
        stored = await AdminStore(database).get_endpoint("demo")
    finally:
        await database.dispose()
    assert stored is not None and stored.webhook_secret

    # The bare secret on stdout, the one that signs the endpoint's deliveries.
    code, out, _ = await jobwire("endpoint", "secret", "demo", *db)
    assert code == 0 and out == stored.webhook_secret + "\n"
    code, out, _ = await jobwire("endpoint", "secret", "demo", "--json", *db)
    assert code == 0 and json.loads(out) == {"endpoint": "demo", "secret": stored.webhook_secret}

    code, out, _ = await jobwire("endpoint", "show", "demo", "--json", *db)
    shown = json.loads(out)
    assert code == 0 and shown["name"] == "demo" and shown["max_attempts"] == 5
    assert "webhook_secret" not in shown and stored.webhook_secret not in out
    code, out, _ = await jobwire("endpoint", "show", "demo", *db, env={"COLUMNS": "200"})
    assert code == 0 and "max_attempts" in out and stored.webhook_secret not in out
    code, out, _ = await jobwire("endpoint", "list", "--json", *db)
    assert code == 0 and json.loads(out)[0]["name"] == "demo" and stored.webhook_secret not in out

    for command in ("secret", "show"):
        code, out, err = await jobwire("endpoint", command, "nope", *db)
        assert code == 1 and out == "" and "'nope' not found" in err


async def test_endpoint_settings_are_set_at_creation_and_changed_later(database_url: str) -> None:
    db = ["--database-url", database_url]
    created = await jobwire(
        "endpoint", "create", "tuned", "--run-retention-ms", "60000", "--workers-max", "2",
        "--rate-limit", "run=50:5", *db,
    )  # fmt: skip
    assert created[0] == 0, created
    code, out, _ = await jobwire("endpoint", "show", "tuned", "--json", *db)
    shown = json.loads(out)
    assert (shown["run_retention_ms"], shown["sync_retention_ms"], shown["workers_max"]) == (
        60_000,
        60_000,
        2,
    )
    assert shown["rate_limits"] == {"run": {"limit": 50, "per_worker": 5}}

    changed = await jobwire(
        "endpoint", "set", "tuned", "--sync-retention-ms", "120000", "--no-workers-max",
        "--rate-limit", "cancel=7", *db,
    )  # fmt: skip
    assert changed[0] == 0, changed
    shown = json.loads((await jobwire("endpoint", "show", "tuned", "--json", *db))[1])
    assert (shown["run_retention_ms"], shown["sync_retention_ms"], shown["workers_max"]) == (
        60_000,
        120_000,
        None,
    )
    assert set(shown["rate_limits"]) == {"run", "cancel"}  # overrides are merged

    code, _, err = await jobwire("endpoint", "set", "tuned", "--run-retention-ms", "5", *db)
    assert code == 1 and "run_retention_ms must be between" in err
    code, _, err = await jobwire("endpoint", "set", "tuned", "--rate-limit", "run=lots", *db)
    assert code == 2 and "OP=LIMIT[:PER_WORKER]" in err
    code, _, err = await jobwire("endpoint", "set", "tuned", *db)
    assert code == 2 and "nothing to change" in err
