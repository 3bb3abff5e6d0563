"""`kiln cost` and the budget alert end to end: a real flights run, then the real commands (child
processes) and the real monitor pass with a real webhook receiver."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.config.loader import LoadedConfig
from kiln.monitoring.hook import MonitorHook
from kiln.pipeline.plan import FALLBACK
from kiln.settings import Settings
from kiln.stores import Stores
from tests.monitoring.monitor_support import P, production
from tests.monitoring.test_notify import Receiver

pytestmark = pytest.mark.slow


def kinds_add_up(doc: dict[str, Any]) -> None:
    spent = doc["spent"]
    parts = sum(spent[k]["usd"] for k in ("training", "serving", "storage"))
    assert spent["total"]["usd"] == pytest.approx(parts, rel=1e-6)


def test_a_real_run_then_kiln_cost_and_status(
    tmp_path: Path, make_config: Callable[..., LoadedConfig], cli: Callable[..., Any]
) -> None:
    env = {"KILN_HOME": str(tmp_path / ".kiln")}
    loaded = make_config(deploy={"auto_promote": True})
    done = cli("run", str(loaded.path), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr

    shown = cli("cost", "--json", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["schema"] == 1 and doc["currency"] == "USD"
    (p,) = doc["pipelines"]
    assert p["pipeline"] == P
    assert p["spent"]["training"]["usd"] > 0 and p["spent"]["training"]["complete"]
    assert p["spent"]["storage"]["usd"] > 0  # measured by `kiln cost` before reporting
    kinds_add_up(p)
    assert {s["segment"] for s in p["top_segments"]} <= {"EWR", "JFK", "LGA", FALLBACK}
    assert p["previous_period"]["usd"] == 0 and p["trend"] is None

    for by in ("segment", "run", "version"):
        rows = json.loads(cli("cost", "--by", by, "--json", cwd=tmp_path, env=env).stdout)
        (q,) = rows["pipelines"]
        total = sum(r["total"]["usd"] for r in q["rows"])
        assert total == pytest.approx(q["spent"]["total"]["usd"], rel=1e-6), by

    table = cli("cost", "--pipeline", P, "--no-measure", cwd=tmp_path, env=env)
    assert table.returncode == 0, table.stderr
    assert "cost per month (USD)" in table.stdout and P in table.stdout

    status = cli("status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    assert "$/month" in status.stdout
    line = next(row for row in status.stdout.splitlines() if P in row)
    assert line.split("│")[-2].strip().startswith("$")

    bad = cli("cost", "--since", "tomorrow", cwd=tmp_path, env=env)
    assert bad.returncode != 0 and "--since" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_a_real_cost_over_a_tiny_budget_notifies_once_and_resolves_when_raised(
    settings: Settings,
    stores: Stores,
    make_config: Callable[..., LoadedConfig],
    receiver: Receiver,
) -> None:
    channel = {"type": "webhook", "url": receiver.url(), "timeout": 2, "retries": 0}
    tiny = make_config(cost={"budget_per_month": 1e-9}, monitor={"channels": [channel]})
    production(settings, stores, tiny)  # a real run: real training cost
    hook = MonitorHook(settings, stores, configs=lambda name: tiny.config)
    first, second = hook(P), hook(P)
    assert any("alert #" in line and "opened: budget" in line for line in first), first
    assert not any("budget" in line for line in second), second
    sent = [r["json"]["kiln"] for r in receiver.requests]
    assert [(s["event"], s["kind"]) for s in sent] == [("opened", "budget")]
    assert sent[0]["value"] > 1e-9 and sent[0]["threshold"] == 1e-9

    raised = make_config("raised.yaml", cost={"budget_per_month": 1e6},
                         monitor={"channels": [channel]})  # fmt: skip
    hook.configs = lambda name: raised.config
    hook(P)
    hook(P)
    assert [r["json"]["kiln"]["event"] for r in receiver.requests] == ["opened", "resolved"]


def test_a_pipeline_with_nothing_in_production_still_has_its_budget_checked(
    settings: Settings,
    stores: Stores,
    make_config: Callable[..., LoadedConfig],
    receiver: Receiver,
) -> None:
    from kiln.runs import Runner

    channel = {"type": "webhook", "url": receiver.url(), "timeout": 2, "retries": 0}
    tiny = make_config(cost={"budget_per_month": 1e-9}, monitor={"channels": [channel]})
    Runner(settings, stores).run(tiny)  # a candidate: nothing promoted, nothing to monitor
    hook = MonitorHook(settings, stores)  # no configs given: the latest run's kiln.yaml
    lines = hook(P)
    assert any("opened: budget" in line for line in lines), lines
    assert [r["json"]["kiln"]["kind"] for r in receiver.requests] == ["budget"]
