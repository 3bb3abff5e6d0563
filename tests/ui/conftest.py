"""The UI over real stores: an app on a fresh registry, with a user of each role."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from kiln.registry.people import People
from kiln.settings import Settings
from kiln.stores import Stores
from kiln.ui import create_app

PASSWORD = "correct horse battery"


@pytest.fixture
def ui_settings(settings: Settings) -> Settings:
    """The bootstrap admin token set; cost reports computed on every view (not kept: the tests
    compare them with `kiln cost` right after changing the registry; tests/ui/test_cache.py
    tests keeping them)."""
    update = {"admin_token": SecretStr("boot-admin-token"), "ui_cost_cache_seconds": 0}
    return settings.model_copy(update=update)


@pytest.fixture
def people(ui_settings: Settings, stores: Stores) -> People:
    found = People(stores.metadata, ui_settings.admin_token)
    found.add_user("ada", "admin", password=PASSWORD)
    found.add_user("olga", "owner", password=PASSWORD)
    found.add_user("vic", "viewer", password=PASSWORD)
    return found


@pytest.fixture
def client(ui_settings: Settings, stores: Stores, people: People) -> Iterator[TestClient]:
    with TestClient(create_app(ui_settings, stores), follow_redirects=False) as c:
        yield c


def sign_in(client: TestClient, name: str, secret: str = PASSWORD) -> str:
    """Sign ``client`` in as ``name``; returns the session's CSRF token (read from the store)."""
    r = client.post("/login", data={"name": name, "secret": secret, "next": "/"})
    assert r.status_code == 303, r.text
    people: People = client.app.state.kiln.people  # type: ignore[attr-defined]
    _, csrf = people.session(client.cookies.get("kiln_session"))
    return csrf
