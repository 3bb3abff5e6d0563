"""`kiln promote|rollback|shadow|audit` as a user runs them: a real child process per command."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kiln.stores import MetadataStore

P = "flights-delay"
ADMIN_TOKEN = "adm-Secret-7f3a9c"
WRONG_TOKEN = "wrong-Guess-12b4"
_REFUSED = "the user name, password or token is not valid"  # a user's token is accepted too
ROOT = Path(__file__).resolve().parents[2]


def kiln(cwd: Path, db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `kiln --db URL ARGS` with no KILN_* variables but those given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", "--db", db_url, *args],
        cwd=cwd, env={**clean, **env, "COLUMNS": "200", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def assert_no_token(result: subprocess.CompletedProcess[str]) -> None:
    for token in (ADMIN_TOKEN, WRONG_TOKEN):
        assert token not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({}, ["--token", ADMIN_TOKEN], "KILN_ADMIN_TOKEN is not set here"),
        ({"KILN_ADMIN_TOKEN": ADMIN_TOKEN}, [], "needs a token (yours, or the admin token)"),
        ({"KILN_ADMIN_TOKEN": ADMIN_TOKEN}, ["--token", WRONG_TOKEN], _REFUSED),
        ({"KILN_ADMIN_TOKEN": ADMIN_TOKEN, "KILN_TOKEN": WRONG_TOKEN}, [], _REFUSED),
    ],
    ids=["no-admin-token-configured", "no-token", "wrong-token", "wrong-KILN_TOKEN"],
)
def test_writes_without_the_admin_token_exit_9(
    tmp_path: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    """On SQLite only. A missing token is refused before any store is opened; a wrong one
    says nothing of what was wrong with it (it may have been meant as a user's token)."""
    store = MetadataStore(f"sqlite:///{tmp_path / 'kiln.db'}", create=True)
    try:
        store.upgrade()
        with store.unit_of_work() as uow:
            uow.pipelines.upsert(P, "data-team", "arrival delays", "kiln.yaml")
            run = uow.runs.create(P, "manual", "", "c" * 64, "kiln.yaml", "host", 1)
            uow.versions.register(P, run.id, "m" * 64, {}, {})
        result = kiln(tmp_path, store.url, "promote", P, "1", *args, **env)
        assert result.returncode == 9, result.stderr
        assert message in result.stderr
        assert_no_token(result)
        with store.unit_of_work() as uow:
            assert uow.audit.list(P) == [] and uow.deployments.list(P) == []
            assert uow.versions.get(P, 1).stage == "candidate"
    finally:
        store.dispose()


def test_promote_shadow_rollback_audit(tmp_path: Path, store: MetadataStore, register: Any) -> None:
    register(3)
    admin = {"KILN_ADMIN_TOKEN": ADMIN_TOKEN}
    me = getpass.getuser()

    result = kiln(tmp_path, store.url, "promote", P, "1", KILN_TOKEN=ADMIN_TOKEN, **admin)
    assert result.returncode == 0, result.stderr
    assert "flights-delay: v1 -> production" in result.stdout

    result = kiln(
        tmp_path, store.url, "promote", P, "2", "--reason", "lower mae", "--token", ADMIN_TOKEN,
        **admin,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "flights-delay: v2 -> production (v1 archived)" in result.stdout
    assert_no_token(result)

    result = kiln(tmp_path, store.url, "shadow", P, "3", KILN_TOKEN=ADMIN_TOKEN, **admin)
    assert result.returncode == 0, result.stderr
    assert "flights-delay: v3 -> shadow (was candidate)" in result.stdout
    result = kiln(tmp_path, store.url, "shadow", P, "3", "--off", KILN_TOKEN=ADMIN_TOKEN, **admin)
    assert result.returncode == 0, result.stderr
    assert "flights-delay: v3 -> candidate (was shadow)" in result.stdout

    result = kiln(
        tmp_path, store.url, "rollback", P, "--reason", "v2 answers late", KILN_TOKEN=ADMIN_TOKEN,
        **admin,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "flights-delay: v1 -> production (v2 archived)" in result.stdout

    result = kiln(tmp_path, store.url, "rollback", P, KILN_TOKEN=ADMIN_TOKEN, **admin)
    assert result.returncode == 6
    assert "no earlier production version of 'flights-delay' to roll back to" in result.stderr

    with store.unit_of_work() as uow:
        uow.versions.set_stage(P, 3, "blocked")
    result = kiln(tmp_path, store.url, "promote", P, "3", KILN_TOKEN=ADMIN_TOKEN, **admin)
    assert result.returncode == 2
    assert "kiln override flights-delay 3 --reason" in result.stderr

    result = kiln(tmp_path, store.url, "audit", "--pipeline", P)  # reading needs no token
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if P in line]
    assert [row.split("│")[3].strip() for row in rows] == [
        "rollback", "unshadow", "shadow", "promote", "promote",
    ]  # fmt: skip
    assert all(me in row for row in rows)
    assert "v2 answers late" in rows[0] and "lower mae" in rows[3]
    with store.unit_of_work() as uow:
        assert {v.version: v.stage for v in uow.versions.list(P)} == {
            1: "production", 2: "archived", 3: "blocked",
        }  # fmt: skip
        events = uow.audit.list(P)
    assert {e.actor for e in events} == {me}


def test_override_needs_the_admin_token_and_a_reason(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'kiln.db'}", create=True)
    try:
        store.upgrade()
        with store.unit_of_work() as uow:
            uow.pipelines.upsert(P, "data-team", "arrival delays", "kiln.yaml")
            for i in range(2):
                run = uow.runs.create(P, "manual", "", "c" * 64, "kiln.yaml", "host", 1)
                uow.versions.register(P, run.id, f"{i:064x}", {}, {})
            uow.versions.set_stage(P, 1, "production")
            uow.versions.set_stage(P, 2, "blocked")
        env = {"KILN_ADMIN_TOKEN": ADMIN_TOKEN}
        why = "approved by the route owner"

        no_token = kiln(tmp_path, store.url, "override", P, "2", "--reason", why, **env)
        assert no_token.returncode == 9, no_token.stderr
        assert "needs a token (yours, or the admin token)" in no_token.stderr

        for reason in ([], ["--reason", " "]):
            refused = kiln(
                tmp_path, store.url, "override", P, "2", *reason, "--token", ADMIN_TOKEN, **env
            )
            assert refused.returncode == 2, refused.stderr
            assert "needs a reason" in refused.stderr and "--reason" in refused.stderr
            assert "Traceback" not in refused.stderr

        with store.unit_of_work() as uow:
            assert uow.versions.get(P, 2).stage == "blocked"  # nothing changed so far
            assert uow.audit.list(P) == []

        done = kiln(
            tmp_path, store.url, "override", P, "2", "--reason", why, "--token", ADMIN_TOKEN, **env
        )
        assert done.returncode == 0, done.stderr
        assert "v2 -> production (v1 archived)" in done.stdout
        assert_no_token(done)
        with store.unit_of_work() as uow:
            assert uow.versions.get(P, 2).stage == "production"
            event = uow.audit.list(P)[0]
        assert (event.action, event.actor, event.reason) == ("override", getpass.getuser(), why)

        shown = kiln(tmp_path, store.url, "audit", "--pipeline", P)
        assert "override" in shown.stdout and why in shown.stdout
    finally:
        store.dispose()
