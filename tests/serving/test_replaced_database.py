"""Fault: the SQLite registry file of a running server is moved away and put back (issue 9,
defect 2). A CLI read meanwhile fails naming the file and creates nothing (so no stray
connection deletes the server's -wal/-shm); the server reports not-ready with the reason,
refuses admin writes, is ready again once the file is back, follows a CLI rollback made on it,
and an API rollback made then is durable after the server stops."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serving_support import ADMIN, PIPELINE, Trained, register_copy, set_stage, wait_for

from kiln.settings import Settings
from kiln.stores import open_stores

pytestmark = [pytest.mark.fault, pytest.mark.slow]

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _production(url: str) -> int | None:
    body = httpx.get(f"{url}/v1/pipelines/{PIPELINE}").json()
    production = body.get("production")
    return production["version"] if production else None


def test_a_moved_away_database_is_noticed_and_followed_when_back(
    trained: Trained, serve, cli, tmp_path: Path
) -> None:
    home = trained.copy(tmp_path / "home")
    v3 = register_copy(home, 2)
    for version in (1, 2, v3):
        set_stage(home, version, "production")
    server = serve(home, reload_seconds=0.3)
    server.wait_ready()
    assert _production(server.url) == v3
    db = home / "kiln.db"
    wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
    assert wal.exists() and shm.exists()  # the server has the database open

    moved = tmp_path / "kiln.db.moved"
    db.rename(moved)
    status = cli("--home", str(home), "status", cwd=tmp_path)
    assert status.returncode == 7, status.stdout + status.stderr
    assert f"{db} does not exist" in status.stderr and "kiln db upgrade" in status.stderr
    assert not db.exists()  # nothing created ...
    assert wal.exists() and shm.exists()  # ... and nothing deleted the server's WAL

    def not_ready() -> dict | None:
        r = httpx.get(f"{server.url}/readyz")
        return r.json() if r.status_code == 503 else None

    body = wait_for(not_ready, timeout=15, what="/readyz to answer 503")
    assert any(f"{db} is missing" in reason for reason in body["missing"]), body
    refused = httpx.post(
        f"{server.url}/v1/pipelines/{PIPELINE}/rollback",
        json={"reason": "while the file is away"},
        headers=ADMIN_AUTH,
    )
    assert refused.status_code == 503, refused.text
    assert "moved, deleted or replaced" in refused.json()["error"]["message"]

    moved.rename(db)
    server.wait_ready(timeout=15)
    rollback = cli(
        "--home", str(home), "rollback", PIPELINE, "--reason", "cli", "--token", ADMIN,
        cwd=tmp_path, env={"KILN_ADMIN_TOKEN": ADMIN},
    )  # fmt: skip
    assert rollback.returncode == 0, rollback.stdout + rollback.stderr
    wait_for(lambda: _production(server.url) == 2, timeout=10, what="the server to follow")

    r = httpx.post(
        f"{server.url}/v1/pipelines/{PIPELINE}/rollback",
        json={"reason": "api after the restore"},
        headers=ADMIN_AUTH,
    )
    assert r.status_code == 200, r.text
    server.stop()
    log = server.log()
    assert "is missing (moved or deleted) while this server has it open" in log
    assert "is back: following it" in log

    stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.read() as uow:
            assert [v.version for v in uow.versions.by_stage(PIPELINE, "production")] == [1]
            reasons = [e.reason for e in uow.audit.list(pipeline=PIPELINE)]
    finally:
        stores.close()
    assert "api after the restore" in reasons and "cli" in reasons
    assert "while the file is away" not in reasons
