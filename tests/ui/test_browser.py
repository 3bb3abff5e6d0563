"""`kiln ui` in a real headless Chromium on a real registry: real runs of the real flights, a
version blocked by its gates over real captured traffic, and a real prediction server.

The story: an owner signs in, finds her pipeline, opens the blocked version, reads why it was
blocked (the failing gate and the requests it failed on), overrides it with a reason, sees the
audit entry naming her, and the prediction server switches to the version. A viewer sees no
buttons and the API refuses her writes; hostile text is shown as text; a forged form is
refused. Every page visited is saved in test-screenshots/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from kiln.config import load_config
from kiln.registry.people import People
from kiln.registry.version import Version
from kiln.release.controller import Release
from kiln.runs.runner import Runner
from kiln.settings import Settings
from kiln.stores import open_stores
from kiln.stores.capture import CaptureRecord, CaptureWriter
from kiln.ui import create_app
from tests.conftest import BASE, merge
from tests.serving.serving_support import Server
from tests.ui.browser_support import CHROMIUM, FLAGS, UiServer, needs_chromium, shot, sign_in

pytestmark = [pytest.mark.slow, needs_chromium]

P = BASE["name"]
PASSWORD = "correct horse battery"
ADMIN = "browser-admin-token"
HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
REASON = "dep_delay is sent by the <b>booking app</b> from today; the replay predates it. " * 3
"""Long (it wraps) and holding HTML (shown as text)."""


def _capture(settings: Settings, stores: Any, number: int, n: int) -> None:
    """Capture ``n`` requests as the server would: real holdout rows and the version's answers."""
    with stores.metadata.unit_of_work() as uow:
        version = Version(stores, uow.versions.get(P, number))
    frame = version.holdout[version.features].head(n)
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    prediction = version.predictor.predict(rows)
    now = datetime.now(UTC)
    with CaptureWriter(settings.artifact_root, writer_id="browser") as writer:
        for i, row in enumerate(rows):
            writer.offer(
                CaptureRecord(
                    request_id=f"req-{i}", ts=now, pipeline=P, version=number,
                    stage="production", segment=row.get("origin"), model=prediction.model[i],
                    fallback=bool(prediction.fallback[i]), features=row,
                    prediction=float(prediction.values[i]), error=None, latency_ms=2.0,
                )
            )  # fmt: skip


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, warehouse: Path) -> Iterator[SimpleNamespace]:
    """v1 in production with captured traffic; v2 (needs dep_delay) blocked by its gates; a
    second pipeline whose owner and description hold HTML and script; users of each role."""
    base = tmp_path_factory.mktemp("browser")
    settings = Settings(home=base / ".kiln", admin_token=SecretStr(ADMIN))
    stores = open_stores(settings, upgrade=True)
    release = Release(settings, stores)

    def train(name: str, **changes: Any) -> int:
        data = merge(merge(BASE, {"data": {"source": str(warehouse)}}), changes)
        data = merge(data, {"deploy": {"auto_promote": True}})
        path = base / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        number = Runner(settings, stores).run(load_config(path)).version
        assert number is not None
        release.after_run(P, number)
        return number

    v1 = train("v1")
    _capture(settings, stores, v1, 300)
    v2 = train("v2", features=[*BASE["features"], "dep_delay"])
    with stores.metadata.unit_of_work() as uow:
        assert uow.versions.get(P, v2).stage == "blocked"
        uow.pipelines.upsert("hostile-names", HOSTILE, HOSTILE, "kiln.yaml")
    people = People(stores.metadata, settings.admin_token)
    people.add_user("olga", "owner", pipelines="flights-*", password=PASSWORD)
    people.add_user("vic", "viewer", password=PASSWORD)
    _, viewer_token = people.create_token("vic")
    server = Server(settings.home, admin_token=ADMIN, reload_seconds=0.3)
    try:
        server.wait_ready()
        with UiServer(create_app(settings, stores)) as ui:
            yield SimpleNamespace(
                ui=ui.url, server=server, stores=stores, v1=v1, v2=v2,
                viewer_token=viewer_token,
            )  # fmt: skip
    finally:
        server.stop()
        stores.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield found
        found.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda e: errors.append(str(e)))
    opened.errors = errors
    yield opened
    context.close()


def serving_version(server: Server) -> int | None:
    info = httpx.get(f"{server.url}/v1/pipelines/{P}", timeout=5).json()
    production = info.get("production") or {}
    return production.get("version")


def test_owner_finds_the_blocked_version_reads_why_and_overrides_it(
    story: SimpleNamespace, page: Any
) -> None:
    base = story.ui
    sign_in(page, base, "olga", PASSWORD)
    assert page.get_attribute("header .user", "data-role") == "owner"
    shot(page, "01-catalogue")

    page.fill("form#filters input[name=q]", "flights")
    page.press("form#filters input[name=q]", "Enter")
    page.wait_for_load_state()
    assert page.locator("tr[data-pipeline]").count() == 1
    shot(page, "02-catalogue-search")
    page.click(f'tr[data-pipeline="{P}"] a.pipeline')
    page.wait_for_load_state()
    versions = page.locator("section#versions")
    assert versions.locator(f'[data-version="{story.v2}"][data-stage="blocked"]').count()
    shot(page, "03-pipeline")

    page.click(f'section#versions [data-version="{story.v2}"] a >> nth=0')
    page.wait_for_load_state()
    assert page.url.endswith(f"/pipelines/{P}/versions/{story.v2}")
    failed = page.locator('section#gates [data-gate="replay"][data-status="failed"]')
    assert failed.count() == 1
    assert "dep_delay" in failed.inner_text()
    assert page.locator('section#gates [data-gate][data-status="failed"] .failing-requests').count()
    shot(page, "04-version-blocked")

    override = page.locator(f'form[action="/pipelines/{P}/actions/override"]')
    override.locator("textarea[name=reason]").fill(REASON)
    override.locator("button[type=submit]").click()
    page.wait_for_load_state()
    assert "error" not in (page.get_attribute("p.flash", "class") or "")
    shot(page, "05-version-overridden")

    page.goto(f"{base}/pipelines/{P}")
    row = page.locator('table#audit tr[data-action="override"]').first
    assert row.locator("td.actor").inner_text().strip() == "olga"
    assert row.locator("td.reason").inner_text().strip() == REASON.strip()
    versions = page.locator("section#versions")
    assert versions.locator(f'[data-version="{story.v2}"][data-stage="production"]').count()
    shot(page, "06-pipeline-audit")

    deadline = time.monotonic() + 20
    while serving_version(story.server) != story.v2:
        assert time.monotonic() < deadline, "the prediction server did not switch to v2"
        time.sleep(0.2)
    assert not page.errors


def test_every_page_renders_and_is_saved(story: SimpleNamespace, page: Any) -> None:
    base = story.ui
    sign_in(page, base, "olga", PASSWORD)
    with story.stores.metadata.read() as uow:
        run_id = uow.versions.get(P, story.v1).run_id
    for name, path in [
        ("07-run", f"/runs/{run_id}"),
        ("08-monitoring", f"/pipelines/{P}/monitoring"),
        ("09-cost", "/cost"),
        ("10-cost-pipeline", f"/pipelines/{P}/cost"),
        ("11-version-v1", f"/pipelines/{P}/versions/{story.v1}"),
        ("11-pipeline-long-reasons", f"/pipelines/{P}"),
    ]:
        response = page.goto(base + path)
        assert response is not None and response.status == 200, (path, response and response.status)
        shot(page, name)
        # long names and reasons wrap: nothing makes the page scroll sideways
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 1, (path, wide)
    for name, path in [("12-not-found", "/pipelines/no-such-pipeline"),
                       ("13-version-not-found", f"/pipelines/{P}/versions/999")]:  # fmt: skip
        response = page.goto(base + path)
        assert response is not None and response.status == 404
        shot(page, name)
    assert not page.errors


def test_a_viewer_sees_no_action_and_the_api_refuses_her_writes(
    story: SimpleNamespace, page: Any
) -> None:
    base = story.ui
    sign_in(page, base, "vic", PASSWORD)
    for path in [f"/pipelines/{P}", f"/pipelines/{P}/versions/{story.v1}"]:
        page.goto(base + path)
        assert page.locator('form[action*="/actions/"]').count() == 0, path
    shot(page, "14-viewer-version")
    refused = httpx.post(
        f"{base}/api/pipelines/{P}/rollback",
        json={"reason": "viewer tries"},
        headers={"Authorization": f"Bearer {story.viewer_token}"},
    )
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"


def test_html_in_names_is_shown_as_text_and_never_runs(story: SimpleNamespace, page: Any) -> None:
    base = story.ui
    sign_in(page, base, "olga", PASSWORD)
    page.goto(f"{base}/?q=hostile")
    row = page.locator('tr[data-pipeline="hostile-names"]')
    assert "<script>" in row.inner_text()
    assert page.evaluate("window.__pwned === undefined")
    shot(page, "15-hostile-escaped")


def test_forged_forms_are_refused(story: SimpleNamespace, page: Any) -> None:
    base = story.ui
    sign_in(page, base, "olga", PASSWORD)
    page.goto(f"{base}/pipelines/{P}")
    # A form planted in the page itself (same origin, the session cookie goes with it) without
    # the session's CSRF token.
    with page.expect_navigation():
        page.evaluate(
            """([action]) => {
            const f = document.createElement('form');
            f.method = 'post'; f.action = action;
            const r = document.createElement('input');
            r.name = 'reason'; r.value = 'forged'; f.appendChild(r);
            document.body.appendChild(f); f.submit();
        }""",
            [f"/pipelines/{P}/actions/rollback"],
        )
    page.wait_for_load_state()
    assert "CSRF" in page.content()
    shot(page, "16-forged-form-refused")
    # The same form on another site (http://forger.test, answered by the browser itself): the
    # SameSite cookie stays home, so the post arrives signed out and goes to the login page.
    forged = (
        f'<form method="post" action="{base}/pipelines/{P}/actions/rollback">'
        '<input name="reason" value="forged"></form>'
    )
    page.route(
        "http://forger.test/**", lambda route: route.fulfill(body=forged, content_type="text/html")
    )
    page.goto("http://forger.test/")
    with page.expect_navigation():
        page.evaluate("document.forms[0].submit()")
    page.wait_for_load_state()
    assert "/login" in page.url
    with story.stores.metadata.read() as uow:
        assert not [e for e in uow.audit.list(P) if e.reason == "forged"]


def test_wrong_password_and_expired_session_send_back_to_login(
    story: SimpleNamespace, page: Any
) -> None:
    base = story.ui
    sign_in(page, base, "olga", "not the password")
    assert (
        page.locator("p.flash")
        .inner_text()
        .strip()
        .startswith("the user name, password or token is not valid")
    )
    shot(page, "17-login-refused")
    page.context.add_cookies([{"name": "kiln_session", "value": "kiln_expired", "url": base}])
    page.goto(f"{base}/pipelines/{P}")
    assert "/login" in page.url and "expired" in page.content()
