"""Hot reload on a real server: a promotion under load fails no request, a tampered package is
refused while the old version keeps serving, and a package built with other library versions
is refused naming the library."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from serving_support import ADMIN, PIPELINE, Trained, set_stage, wait_for

from kiln.registry.package import save_manifest
from kiln.serving._follower import RegistryFollower
from kiln.serving._metrics import Metrics
from kiln.settings import Settings
from kiln.stores import open_stores

pytestmark = pytest.mark.slow

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


def test_promotion_under_load_fails_no_request(
    trained: Trained, serve, tmp_path: Path, flight_rows: list[dict[str, Any]]
) -> None:
    server = serve(trained.copy(tmp_path / "home"), workers=2)
    server.wait_ready()  # nothing in production: nothing to load, ready
    predict = f"{server.url}/v1/pipelines/{PIPELINE}/predict"
    none = httpx.post(predict, json={"features": flight_rows[0]})
    assert none.status_code == 503
    assert "kiln promote" in none.json()["error"]["hint"]

    promote = f"{server.url}/v1/pipelines/{PIPELINE}/promote"
    r = httpx.post(promote, json={"version": 1, "reason": "first"}, headers=ADMIN_AUTH)
    assert r.status_code == 200 and r.json()["from_version"] is None
    wait_for(
        lambda: all(
            httpx.post(predict, json={"features": flight_rows[0]}).status_code == 200
            for _ in range(6)
        ),
        what="v1 to serve on every worker",
    )

    stop = threading.Event()
    seen: list[tuple[float, int, int | None]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=10) as c:
            i = k
            while not stop.is_set():
                row = flight_rows[i % len(flight_rows)]
                i += 7
                r = c.post(predict, json={"features": row})
                version = r.json().get("version") if r.status_code == 200 else None
                with lock:
                    seen.append((time.monotonic(), r.status_code, version))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    promoted_at = time.monotonic()
    r = httpx.post(promote, json={"version": 2, "reason": "better"}, headers=ADMIN_AUTH)
    assert r.status_code == 200 and r.json()["from_version"] == 1
    time.sleep(2.5)
    stop.set()
    for t in threads:
        t.join()

    codes = Counter(code for _, code, _ in seen)
    assert codes == {200: len(seen)}, codes
    before = {v for at, _, v in seen if at < promoted_at}
    tail = {v for at, _, v in seen if at > promoted_at + 1.5}
    assert before == {1}
    assert tail == {2}
    assert len(seen) > 100

    stores = open_stores(Settings(home=server.home))
    with stores.metadata.unit_of_work() as uow:
        events = uow.audit.list(PIPELINE)
    stores.close()
    promotions = [e for e in events if e.action == "promote"]
    assert {e.actor for e in promotions} == {"api:127.0.0.1"}
    assert {e.reason for e in promotions} == {"first", "better"}


def test_tampered_package_is_refused_and_the_old_version_keeps_serving(
    trained: Trained, serve, tmp_path: Path, flight_rows: list[dict[str, Any]]
) -> None:
    home = trained.copy(tmp_path / "home")
    set_stage(home, 1, "production")
    server = serve(home)
    server.wait_ready()

    stores = open_stores(Settings(home=home))
    with stores.metadata.unit_of_work() as uow:
        digest = uow.versions.get(PIPELINE, 2).manifest_digest
    manifest = orjson.loads(stores.content.get(digest, what="v2"))
    artifact = manifest["models"]["JFK"]["sha256"]
    path = Path(Settings(home=home).artifact_root) / stores.content.key_of(artifact)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    stores.close()
    set_stage(home, 2, "production")

    detail_url = f"{server.url}/v1/pipelines/{PIPELINE}"
    detail = wait_for(
        lambda: (d := httpx.get(detail_url).json())["last_reload_error"] and d,
        what="the refusal of v2",
    )
    error = detail["last_reload_error"]
    assert error["version"] == 2
    assert "segment 'JFK'" in error["message"] and artifact in error["message"]
    assert detail["production"]["version"] == 1 and detail["registry_production"] == 2

    r = httpx.post(
        f"{server.url}/v1/pipelines/{PIPELINE}/predict", json={"features": flight_rows[0]}
    )
    assert r.status_code == 200 and r.json()["version"] == 1
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'kiln_reload_failures_total{{pipeline="{PIPELINE}"}}' in metrics
    time.sleep(1.0)  # several reloads later, the refusal is still logged only once
    server.stop()
    assert server.log().count("refused flights-serve v2") == 1


def test_a_package_built_with_other_library_versions_is_refused(
    trained: Trained, tmp_path: Path
) -> None:
    """In process: register v3 = v2 with a lock saying lightgbm 3.3, and follow the registry."""
    home = trained.copy(tmp_path / "home")
    set_stage(home, 1, "production")
    stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.unit_of_work() as uow:
            v2 = uow.versions.get(PIPELINE, 2)
            run = uow.runs.get(v2.run_id)
        manifest = orjson.loads(stores.content.get(v2.manifest_digest, what="v2"))
        manifest["environment"]["packages"]["lightgbm"] = "3.3.5"
        digest = save_manifest(stores.content, manifest)
        with stores.metadata.unit_of_work() as uow:
            copy = uow.runs.create(
                PIPELINE, "manual", run.config_text, run.config_digest, run.config_path, "h", 1
            )
            v3 = uow.versions.register(PIPELINE, copy.id, digest, {}, {})
        follower = RegistryFollower(stores, Metrics(), interval=1.0, max_instances=10)
        assert follower.refresh().pipelines[PIPELINE].production.version == 1

        set_stage(home, v3.version, "production")
        route = follower.refresh().pipelines[PIPELINE]
        assert route.production is not None and route.production.version == 1
        refusal = route.last_reload_error
        assert refusal is not None and refusal.version == 3
        assert "lightgbm: package built with 3.3.5" in refusal.message
        assert follower.table.missing() == []  # v1 still serves
    finally:
        stores.close()


def test_a_fresh_server_that_cannot_load_production_says_nothing_serves(
    trained: Trained, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: v2 (production) is corrupt and no version ever loaded here; the log must not
    claim that "the version that served keeps serving". Once v1 served, a refusal says it does."""
    home = trained.copy(tmp_path / "home")
    stores = open_stores(Settings(home=home))
    try:
        with stores.metadata.unit_of_work() as uow:
            digest = uow.versions.get(PIPELINE, 2).manifest_digest
        manifest = orjson.loads(stores.content.get(digest, what="v2"))
        path = Path(Settings(home=home).artifact_root) / stores.content.key_of(
            manifest["models"]["JFK"]["sha256"]
        )
        path.write_bytes(path.read_bytes()[:-10])
        set_stage(home, 2, "production")
        follower = RegistryFollower(stores, Metrics(), interval=1.0, max_instances=10)
        with caplog.at_level("ERROR", logger="kiln.serving"):
            route = follower.refresh().pipelines[PIPELINE]
        assert route.production is None
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1
        assert f"refused {PIPELINE} v2 (nothing serves {PIPELINE}" in refused[0]
        assert "keeps serving" not in refused[0]
        assert follower.table.missing() and "v2: refused" in follower.table.missing()[0]

        caplog.clear()
        set_stage(home, 1, "production")
        follower = RegistryFollower(stores, Metrics(), interval=1.0, max_instances=10)
        assert follower.refresh().pipelines[PIPELINE].production.version == 1
        set_stage(home, 2, "production")
        with caplog.at_level("ERROR", logger="kiln.serving"):
            route = follower.refresh().pipelines[PIPELINE]
        assert route.production is not None and route.production.version == 1
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert refused and "v1, the version that served, keeps serving" in refused[-1]
        assert follower.table.missing() == []
    finally:
        stores.close()
