"""People on each backend: users, hashed tokens, sessions, and who may change which pipeline."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr

from kiln.errors import AuthError, ForbiddenError, NotFoundError
from kiln.registry.people import People, PeopleError, Principal, authorize, hash_secret
from kiln.stores import MetadataStore


@pytest.fixture
def people(store: MetadataStore) -> People:
    return People(store, SecretStr("boot-secret"))


def test_tokens_are_stored_hashed_and_authenticate_their_user(
    people: People, store: MetadataStore
) -> None:
    people.add_user("ana", "owner", pipelines="flights*")
    _, secret = people.create_token("ana", "laptop")
    assert secret.startswith("kiln_") and len(secret) > 40
    with store.read() as uow:
        (row,) = uow.tokens.list("ana")
    assert row.token_hash == hash_secret(secret) and secret not in repr(row)
    who = people.authenticate(secret)
    assert who == Principal("ana", "owner", "flights*", "token")
    assert people.authenticate("boot-secret").role == "admin"


@pytest.mark.parametrize("spoil", ["revoke", "expire", "disable", "unknown"])
def test_every_refused_token_says_the_same(people: People, spoil: str) -> None:
    people.add_user("ana", "viewer")
    record, secret = people.create_token(
        "ana", expires_in=timedelta(seconds=-1) if spoil == "expire" else None
    )
    if spoil == "revoke":
        people.revoke_token(record.id)
    elif spoil == "disable":
        people.disable("ana")
    elif spoil == "unknown":
        secret = secret[:-2] + "xx"
    with pytest.raises(AuthError) as e:
        people.authenticate(secret)
    assert e.value.message == "the user name, password or token is not valid"


def test_login_by_password_or_token_and_sessions_expire(people: People) -> None:
    people.add_user("bo", "admin", password="correct horse")
    _, token = people.create_token("bo")
    assert people.login("bo", "correct horse").name == "bo"
    assert people.login("bo", token).via == "session"
    for name, secret in [("bo", "wrong"), ("nobody", "correct horse"), ("admin", "boot-secret")]:
        with pytest.raises(AuthError, match="not valid"):
            people.login(name, secret)
    opened = people.open_session(people.login("bo", token), timedelta(hours=1))
    principal, csrf = people.session(opened.secret)
    assert principal.name == "bo" and csrf == opened.csrf_token
    old = people.open_session(principal, timedelta(seconds=-1))
    with pytest.raises(AuthError, match="expired"):
        people.session(old.secret)
    people.close_session(opened.secret)
    with pytest.raises(AuthError, match="expired"):
        people.session(opened.secret)


def test_bad_people_input_is_refused_with_the_fix(people: People) -> None:
    with pytest.raises(PeopleError, match="not valid"):
        people.add_user("<script>", "viewer")
    with pytest.raises(PeopleError, match="role"):
        people.add_user("x", "god")
    with pytest.raises(PeopleError, match="for owners"):
        people.add_user("x", "viewer", pipelines="*")
    people.add_user("x", "viewer")
    with pytest.raises(PeopleError, match="exists"):
        people.add_user("x", "admin")
    with pytest.raises(NotFoundError):
        people.create_token("nobody")
    with pytest.raises(NotFoundError):
        people.revoke_token(999)


def test_owners_change_their_own_pipelines_viewers_none_admins_all() -> None:
    owner = Principal("ana", "owner")
    scoped = Principal("bo", "owner", "flights-*")
    viewer = Principal("cy", "viewer")
    authorize(owner, "override", "p1", owner="ana")
    authorize(scoped, "promote", "flights-jfk", owner="someone")
    authorize(Principal("root", "admin"), "rollback", "anything", owner=None)
    with pytest.raises(ForbiddenError, match="not 'p1'"):
        authorize(owner, "promote", "p1", owner="bo")
    with pytest.raises(ForbiddenError, match="not 'weather'"):
        authorize(scoped, "promote", "weather", owner="bo")
    with pytest.raises(ForbiddenError, match="viewer"):
        authorize(viewer, "ack", "p1", owner="cy")


def test_revoking_a_token_or_changing_the_password_ends_the_sessions_opened_with_it(
    people: People,
) -> None:
    people.add_user("ana", "owner", password="first password")
    record, token = people.create_token("ana")
    by_token = people.open_session(people.login("ana", token), timedelta(hours=1))
    by_password = people.open_session(people.login("ana", "first password"), timedelta(hours=1))
    people.revoke_token(record.id)
    with pytest.raises(AuthError, match="expired"):
        people.session(by_token.secret)
    assert people.session(by_password.secret)[0].name == "ana"
    people.set_password("ana", "second password")
    with pytest.raises(AuthError, match="expired"):
        people.session(by_password.secret)


def test_a_token_is_checked_without_the_write_lock(people: People, store: MetadataStore) -> None:
    """A writer holding the database (a run, the monitor) never delays a token check."""
    people.add_user("ana", "viewer")
    _, token = people.create_token("ana")
    people.authenticate(token)  # last_used_at is fresh now: nothing to write for a minute
    with store.unit_of_work() as uow:  # holds the write lock (BEGIN IMMEDIATE on SQLite)
        uow.users.update("ana", pipelines="")
        assert people.authenticate(token).name == "ana"
