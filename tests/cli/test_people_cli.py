"""`kiln users` and `kiln tokens` as an admin runs them, and writes (promote, override,
rollback, alerts ack) with a user's own token: a real `kiln` child process per command over a
real registry."""

from __future__ import annotations

import getpass
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from kiln.monitoring.alerts import update_alerts
from kiln.monitoring.findings import Finding
from kiln.registry.people import People
from kiln.stores import MetadataStore

P = "flights-delay"  # owned by olga (its kiln.yaml owner)
Q = "weather"  # owned by data-team; ana owns it by her pattern "weather*"
ADMIN_TOKEN = "adm-Secret-9e1f4b"
PASSWORD = "correct horse battery"
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def kiln(cli: Cli, tmp_path: Path, store: MetadataStore) -> Cli:
    """``kiln(*args, token=None, input=None)``: `kiln --db URL ARGS` with KILN_ADMIN_TOKEN set
    and ``token`` as KILN_TOKEN."""

    def run(
        *args: str, token: str | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {"KILN_ADMIN_TOKEN": ADMIN_TOKEN, "KILN_TOKEN": token or ""}
        return cli("--db", store.url, *args, cwd=tmp_path, env=env, input=input, timeout=180)

    return run


@pytest.fixture
def registry(store: MetadataStore) -> MetadataStore:
    """P (owner olga) with v1, v2 candidates and v3 blocked; Q (owner data-team) with v1."""
    with store.unit_of_work() as uow:
        for name, owner, count in ((P, "olga", 3), (Q, "data-team", 1)):
            uow.pipelines.upsert(name, owner, "a test pipeline", "kiln.yaml")
            for i in range(count):
                run = uow.runs.create(name, "manual", "", "c" * 64, "kiln.yaml", "host", 1)
                digest = f"{name}{i}".encode().hex().ljust(64, "0")
                uow.versions.register(name, run.id, digest, {}, {})
        uow.versions.set_stage(P, 3, "blocked")
    return store


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def refused(result: subprocess.CompletedProcess[str], code: int, *says: str) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for text in says:
        assert text in result.stderr, result.stderr
    return result.stderr


def stages(store: MetadataStore, pipeline: str) -> dict[int, str]:
    with store.read() as uow:
        return {v.version: v.stage for v in uow.versions.list(pipeline)}


def audit(store: MetadataStore, pipeline: str | None = None) -> list[tuple[str, str, str]]:
    """(actor, action, pipeline) of every audit event, oldest first."""
    with store.read() as uow:
        events = uow.audit.list(pipeline, limit=1000)
    return [(e.actor, e.action, e.pipeline) for e in reversed(events)]


@pytest.mark.slow  # child processes
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_users_of_each_role_and_their_tokens_change_what_they_may(
    kiln: Cli, registry: MetadataStore
) -> None:
    me = getpass.getuser()
    ok(kiln("users", "add", "olga", "--role", "owner", token=ADMIN_TOKEN))
    ok(kiln("users", "add", "ana", "--role", "owner", "--pipelines", "weather*", token=ADMIN_TOKEN))
    ok(kiln("users", "add", "vic", "--role", "viewer", token=ADMIN_TOKEN))
    added = ok(
        kiln("users", "add", "bob", "--role", "admin", "--password-stdin", token=ADMIN_TOKEN,
             input=PASSWORD + "\n")
    )  # fmt: skip
    assert "user bob added: admin" in added.stdout and PASSWORD not in added.stdout
    refused(kiln("users", "add", "olga", "--role", "viewer", token=ADMIN_TOKEN), 2,
            "user 'olga' exists", "kiln users list")  # fmt: skip
    refused(kiln("users", "add", "zed", "--role", "god", token=ADMIN_TOKEN), 2,
            "role 'god' is not one of viewer, owner, admin")  # fmt: skip
    assert People(registry).login("bob", PASSWORD).role == "admin"

    created = ok(kiln("tokens", "create", "olga", "--label", "laptop", "--expires", "30d",
                      token=ADMIN_TOKEN))  # fmt: skip
    olga = created.stdout.strip()
    assert olga.startswith("kiln_") and len(created.stdout.splitlines()) == 1
    assert "shown once" in created.stderr and "stores only its hash" in created.stderr
    bob = json.loads(ok(kiln("tokens", "create", "bob", "--json", token=ADMIN_TOKEN)).stdout)
    # an admin user's own token manages people too
    vic = json.loads(ok(kiln("tokens", "create", "vic", "--json", token=bob["secret"])).stdout)
    ana = ok(kiln("tokens", "create", "ana", token=bob["secret"])).stdout.strip()
    secrets = [olga, bob["secret"], vic["secret"], ana, ADMIN_TOKEN]

    # the owner promotes and overrides its own pipeline, and rolls it back; audited as olga
    ok(kiln("promote", P, "1", "--reason", "first", token=olga))
    ok(kiln("override", P, "3", "--reason", "the gate's data was stale", token=olga))
    ok(kiln("rollback", P, token=olga))
    assert stages(registry, P) == {1: "production", 2: "candidate", 3: "archived"}
    assert [(a, act) for a, act, _ in audit(registry, P)] == [
        ("olga", "promote"), ("olga", "override"), ("olga", "rollback"),
    ]  # fmt: skip

    # ... not another's; a viewer changes nothing; neither leaves an audit row
    says = refused(kiln("promote", Q, "1", token=olga), 9, "promote of 'weather' refused")
    assert "olga owns" in says and "data-team" in says
    refused(kiln("promote", P, "2", token=vic["secret"]), 9, "vic is a viewer")
    assert stages(registry, Q) == {1: "candidate"} and audit(registry, Q) == []
    assert stages(registry, P)[2] == "candidate" and len(audit(registry, P)) == 3
    ok(kiln("promote", Q, "1", token=ana))  # her pattern "weather*"
    assert audit(registry, Q) == [("ana", "promote", Q)]

    # listings never show a secret (nor its hash)
    listed = ok(kiln("tokens", "list", token=ADMIN_TOKEN))
    as_json = ok(kiln("tokens", "list", "--json", token=ADMIN_TOKEN))
    assert {t["user"] for t in json.loads(as_json.stdout)} == {"olga", "bob", "vic", "ana"}
    with registry.read() as uow:
        hashes = [t.token_hash for t in uow.tokens.list()]
    for text in (listed.stdout, as_json.stdout):
        assert "laptop" in text
        assert not any(s in text for s in secrets + hashes)

    # a revoked token is refused with the very words of an unknown one
    ok(kiln("tokens", "revoke", str(created_id(registry, "olga")), token=ADMIN_TOKEN))
    revoked = refused(kiln("promote", P, "2", token=olga), 9, "not valid")
    unknown = refused(kiln("promote", P, "2", token="kiln_" + "x" * 43), 9, "not valid")
    assert revoked == unknown
    assert stages(registry, P)[2] == "candidate"
    refused(kiln("users", "list", token=vic["secret"]), 9,
            "vic is a viewer; managing people needs an admin")  # fmt: skip

    people = [e for e in audit(registry) if e[2] == ""]
    assert people == [
        (me, "user.add", ""), (me, "user.add", ""), (me, "user.add", ""), (me, "user.add", ""),
        (me, "token.create", ""), (me, "token.create", ""), ("bob", "token.create", ""),
        ("bob", "token.create", ""), (me, "token.revoke", ""),
    ]  # fmt: skip
    with registry.read() as uow:
        logged = json.dumps([(e.reason, e.details) for e in uow.audit.list(limit=1000)])
    assert not any(s in logged for s in [*secrets, PASSWORD])


def created_id(store: MetadataStore, user: str) -> int:
    with store.read() as uow:
        (token,) = uow.tokens.list(user)
    return token.id


@pytest.mark.slow  # child processes
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_passwords_disabling_and_ones_own_tokens(kiln: Cli, registry: MetadataStore) -> None:
    people = People(registry, SecretStr(ADMIN_TOKEN))
    people.add_user("olga", "owner")
    people.add_user("vic", "viewer")
    mine, olga = people.create_token("olga", "laptop")
    _, olga_ci = people.create_token("olga", "ci", expires_in=timedelta(days=1))
    theirs, vic = people.create_token("vic")

    # anyone lists and revokes their own tokens, and only those
    listed = ok(kiln("tokens", "list", "--json", token=olga))
    assert [t["label"] for t in json.loads(listed.stdout)] == ["laptop", "ci"]
    assert olga not in listed.stdout and olga_ci not in listed.stdout
    refused(kiln("tokens", "list", "--user", "vic", token=olga), 9, "needs an admin")
    refused(kiln("tokens", "revoke", str(theirs.id), token=olga), 6,
            f"no token of yours with id {theirs.id}")  # fmt: skip
    ok(kiln("tokens", "revoke", str(mine.id), token=olga_ci))
    refused(kiln("tokens", "list", token=olga), 9, "not valid")

    # a password only from stdin, at least 8 characters
    refused(kiln("users", "passwd", "olga", token=ADMIN_TOKEN), 2, "--password-stdin")
    refused(kiln("users", "passwd", "olga", "--password-stdin", token=ADMIN_TOKEN, input="short\n"),
            2, "at least 8 characters")  # fmt: skip
    ok(kiln("users", "passwd", "olga", "--password-stdin", token=ADMIN_TOKEN, input=PASSWORD))
    assert people.login("olga", PASSWORD).name == "olga"
    refused(kiln("users", "passwd", "nobody", "--password-stdin", token=ADMIN_TOKEN,
                 input=PASSWORD), 6, "no user named 'nobody'")  # fmt: skip

    # a disabled user's tokens stop at once, with the same words as any refused token
    ok(kiln("users", "disable", "vic", token=ADMIN_TOKEN))
    refused(kiln("tokens", "list", token=vic), 9, "the user name, password or token is not valid")
    users = json.loads(ok(kiln("users", "list", "--json", token=ADMIN_TOKEN)).stdout)
    assert {u["name"]: (u["disabled_at"] is not None, u["tokens"]) for u in users} == {
        "olga": (False, 1), "vic": (True, 1),
    }  # fmt: skip
    assert "password_hash" not in json.dumps(users) and "scrypt" not in json.dumps(users)
    me = getpass.getuser()
    assert [e for e in audit(registry) if e[2] == ""] == [
        ("olga", "token.revoke", ""), (me, "user.passwd", ""), (me, "user.disable", ""),
    ]  # fmt: skip


@pytest.mark.slow  # child processes
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_alerts_ack_with_a_users_token(kiln: Cli, registry: MetadataStore) -> None:
    start = datetime(2013, 10, 1, tzinfo=UTC)
    finding = Finding("errors", "errors", "alert", 0.3, 0.05, "errors at 0.3")
    for n in range(2):
        with registry.unit_of_work() as uow:
            at = start + timedelta(days=n)
            update_alerts(uow, P, at, at + timedelta(days=1), [finding], 1, ["log"], at)
    with registry.read() as uow:
        (alert,) = uow.alerts.list(P)
    people = People(registry)
    for name, role in (("olga", "owner"), ("ana", "owner"), ("vic", "viewer")):
        people.add_user(name, role, pipelines="weather*" if name == "ana" else None)
    olga, ana, vic = (people.create_token(n)[1] for n in ("olga", "ana", "vic"))

    refused(kiln("alerts", "ack", str(alert.id), token=vic), 9, "vic is a viewer")
    refused(kiln("alerts", "ack", str(alert.id), token=ana), 9, "'flights-delay'")
    refused(kiln("alerts", "ack", str(alert.id), "--actor", "bob", token=olga), 2,
            "only the admin token names someone else")  # fmt: skip
    assert audit(registry, P) == []
    done = ok(kiln("alerts", "ack", str(alert.id), "--note", "on it", token=olga))
    assert "acknowledged by olga" in done.stdout
    assert audit(registry, P) == [("olga", "ack_alert", P)]


@pytest.mark.postgres
@pytest.mark.slow  # child processes
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_an_owners_token_on_postgresql(kiln: Cli, registry: MetadataStore) -> None:
    people = People(registry)
    people.add_user("olga", "owner")
    _, olga = people.create_token("olga")
    refused(kiln("promote", Q, "1", token=olga), 9, "olga owns")
    ok(kiln("promote", P, "2", token=olga))
    assert stages(registry, P)[2] == "production" and stages(registry, Q) == {1: "candidate"}
    assert audit(registry) == [("olga", "promote", P)]
