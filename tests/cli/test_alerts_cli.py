"""`kiln alerts list|ack` as a user runs them: a real child process per command, over episodes
made by real window findings."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiln.monitoring.alerts import update_alerts
from kiln.monitoring.findings import Finding
from kiln.stores import MetadataStore

P = "flights-delay"
ADMIN_TOKEN = "adm-Secret-51c0de"
ROOT = Path(__file__).resolve().parents[2]
START = datetime(2013, 10, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def kiln(cwd: Path, db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", "--db", db_url, *args],
        cwd=cwd, env={**clean, **env, "COLUMNS": "220", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def judge(store: MetadataStore, n: int, *findings: Finding) -> None:
    with store.unit_of_work() as uow:
        update_alerts(uow, P, START + n * DAY, START + (n + 1) * DAY, findings, 2, ["log"],
                      START + (n + 1) * DAY)  # fmt: skip


def episodes(store: MetadataStore) -> dict[str, int]:
    """Three episodes: drift:temp:EWR open (alert), errors pending, latency:p99 resolved."""
    temp = ("drift:temp:EWR", "drift")
    errors = ("errors", "errors")
    p99 = ("latency:p99", "latency")

    def f(check: tuple[str, str], level: str, value: float) -> Finding:
        return Finding(check[0], check[1], level, value, 0.25, f"{check[0]} at {value}")  # type: ignore[arg-type]

    judge(store, 0, f(temp, "warn", 0.2), f(p99, "warn", 900.0))
    judge(store, 1, f(temp, "alert", 0.31), f(p99, "warn", 950.0), f(errors, "warn", 0.02))
    judge(store, 2, f(p99, "ok", 120.0))
    with store.read() as uow:
        return {a.check: a.id for a in uow.alerts.list(P, limit=10)}


@pytest.mark.slow  # child processes
def test_list_shows_open_and_pending_episodes_and_all_of_them_with_all(
    tmp_path: Path, store: MetadataStore
) -> None:
    ids = episodes(store)
    result = kiln(tmp_path, store.url, "alerts", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for header in ("id", "pipeline", "check", "level", "status", "since", "streak", "acked"):
        assert header in result.stdout
    temp = next(line for line in lines if "drift:temp:EWR" in line)
    assert "alert" in temp and "open" in temp and "0.31 / 0.25" in temp
    assert any("errors" in line and "pending" in line for line in lines)
    assert "latency:p99" not in result.stdout  # resolved: only with --all
    assert result.stdout.index("drift:temp:EWR") < result.stdout.index("errors")  # open first

    result = kiln(tmp_path, store.url, "alerts", "list", P, "--all", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {a["check"]: a["status"] for a in doc} == {
        "drift:temp:EWR": "open", "errors": "pending", "latency:p99": "resolved",
    }  # fmt: skip
    assert {a["check"]: a["id"] for a in doc} == ids
    assert kiln(tmp_path, store.url, "alerts", "list", "weather").stdout.startswith(
        "no open or pending alerts of weather"
    )


@pytest.mark.slow  # child processes
def test_ack_needs_the_admin_token_is_audited_and_says_what_it_acknowledged(
    tmp_path: Path, store: MetadataStore
) -> None:
    ids = episodes(store)
    admin = {"KILN_ADMIN_TOKEN": ADMIN_TOKEN}
    temp = str(ids["drift:temp:EWR"])

    refused = kiln(tmp_path, store.url, "alerts", "ack", temp, **admin)
    assert refused.returncode == 9 and "needs a token (yours, or the admin token)" in refused.stderr

    result = kiln(
        tmp_path, store.url, "alerts", "ack", temp, "--note", "retraining on autumn data",
        "--token", ADMIN_TOKEN, **admin,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    me = getpass.getuser()
    assert f"alert {temp} (flights-delay drift:temp:EWR, alert) acknowledged by {me}" in (
        result.stdout
    )

    resolved = str(ids["latency:p99"])
    result = kiln(
        tmp_path, store.url, "alerts", "ack", resolved, "--actor", "oncall-bob",
        KILN_TOKEN=ADMIN_TOKEN, **admin,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "acknowledged by oncall-bob" in result.stdout
    assert "it had already resolved at" in result.stdout

    missing = kiln(tmp_path, store.url, "alerts", "ack", "999", KILN_TOKEN=ADMIN_TOKEN, **admin)
    assert missing.returncode == 6
    assert "no alert 999" in missing.stderr and "kiln alerts list --all" in missing.stderr
    assert "Traceback" not in missing.stderr

    listed = kiln(tmp_path, store.url, "alerts", "list")
    row = next(line for line in listed.stdout.splitlines() if "drift:temp" in line)
    assert row.rstrip("│ ").endswith(me)
    with store.read() as uow:
        audit = [(e.actor, e.action, e.reason) for e in uow.audit.list(P)]
    assert audit == [
        ("oncall-bob", "ack_alert", None), (me, "ack_alert", "retraining on autumn data"),
    ]  # fmt: skip
    for out in (result.stdout, result.stderr, listed.stdout):
        assert ADMIN_TOKEN not in out
