"""The app's frame: sign in and out, the session cookie, CSRF, errors without tracebacks, the
OpenAPI spec, and plotly.js served by Kiln."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from kiln.settings import Settings
from kiln.ui._render import safe_path
from tests.ui.conftest import sign_in


def test_sign_in_gives_an_httponly_samesite_cookie_and_sign_out_ends_it(
    client: TestClient,
) -> None:
    r = client.post("/login", data={"name": "vic", "secret": "correct horse battery"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert client.get("/api/me").json()["name"] == "vic"
    csrf = client.app.state.kiln.people.session(client.cookies.get("kiln_session"))[1]  # type: ignore[attr-defined]
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/api/me").status_code == 401


def test_wrong_password_says_nothing_about_which_part_was_wrong(client: TestClient) -> None:
    wrong_password = client.post("/login", data={"name": "vic", "secret": "nope"})
    no_user = client.post("/login", data={"name": "nobody", "secret": "nope"})
    assert wrong_password.status_code == no_user.status_code == 401
    assert "not valid" in wrong_password.text and "not valid" in no_user.text
    assert "kiln_session" not in client.cookies


def test_a_write_without_the_sessions_csrf_token_is_refused(client: TestClient) -> None:
    sign_in(client, "vic")
    forged = client.post("/logout", data={"csrf_token": "forged"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    assert client.get("/api/me").status_code == 200  # still signed in


def test_bearer_tokens_and_the_bootstrap_admin_reach_the_api(client: TestClient) -> None:
    people = client.app.state.kiln.people  # type: ignore[attr-defined]
    _, token = people.create_token("olga")
    me = client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me == {"name": "olga", "role": "owner", "pipelines": None, "via": "token"}
    boot = client.get("/api/me", headers={"Authorization": "Bearer boot-admin-token"})
    assert boot.json()["role"] == "admin"
    bad = client.get("/api/me", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"] == "not_authorized"


def test_pages_redirect_to_login_and_unknown_pages_are_404_pages(client: TestClient) -> None:
    r = client.get("/api/me")
    assert r.status_code == 401 and "Traceback" not in r.text
    sign_in(client, "vic")
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "<html" in missing.text
    assert client.get("/api/nothing").json()["error"] == "http_error"


def test_openapi_spec_lists_the_api_and_plotly_is_served_locally(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    assert "/api/me" in spec["paths"] and "/login" not in spec["paths"]
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert client.get("/static/kiln.css").status_code == 200


def test_guessing_passwords_is_throttled_per_name_and_address(client: TestClient) -> None:
    for _ in range(10):
        assert client.post("/login", data={"name": "vic", "secret": "guess"}).status_code == 401
    slowed = client.post("/login", data={"name": "vic", "secret": "correct horse battery"})
    assert slowed.status_code == 429 and "wait" in slowed.text
    other = client.post("/login", data={"name": "olga", "secret": "correct horse battery"})
    assert other.status_code == 303  # another name from the same address is not slowed


def test_the_login_page_says_only_what_kiln_wrote(client: TestClient) -> None:
    """A link cannot make the login page say something (``why`` is a code, not text)."""
    forged = client.get("/login?why=Kiln+moved:+sign+in+at+evil.example")
    assert "evil.example" not in forged.text
    assert "expired" in client.get("/login?why=expired").text
    assert "why=signin" in client.get("/").headers["location"]
    client.cookies.set("kiln_session", "kiln_stale")
    assert "why=expired" in client.get("/").headers["location"]


@pytest.mark.parametrize(
    ("target", "sent_to"),
    [("/pipelines/x?page=2", "/pipelines/x?page=2"), ("//evil.example/x", "/"),
     ("https://evil.example", "/"), ("/\\evil.example", "/"), ("", "/"), (None, "/")],
)  # fmt: skip
def test_sign_in_sends_back_only_to_a_path_of_this_site(
    client: TestClient, target: str | None, sent_to: str
) -> None:
    assert safe_path(target, "/home") == ("/home" if sent_to == "/" else sent_to)
    data = {"name": "olga", "secret": "correct horse battery"}
    r = client.post("/login", data=data if target is None else {**data, "next": target})
    assert r.status_code == 303 and r.headers["location"] == sent_to


def test_a_run_started_from_the_ui_gets_no_token(
    ui_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run imports the pipeline's own code: it must not find the server's tokens."""
    from kiln.ui._runs import SECRETS, _env

    monkeypatch.setenv("KILN_ADMIN_TOKEN", "boot-admin-token")
    monkeypatch.setenv("KILN_TOKEN", "someone's")
    env = _env(ui_settings, "olga")
    assert not set(SECRETS) & set(env)
    assert env["USER"] == "olga" and env["KILN_HOME"]
