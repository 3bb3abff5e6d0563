"""Shared fixtures: real PostgreSQL and Ray, skipped on a laptop without them, mandatory in CI.

``KILN_REQUIRE_POSTGRES=1`` / ``KILN_REQUIRE_RAY=1`` (set by .ci/run) turn a skip into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "KILN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _require(var: str) -> bool:
    return os.environ.get(var, "") not in ("", "0", "false")


def _pg_reachable() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as e:  # any driver error means "not reachable here"
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    problem = _pg_reachable()
    pg = "PostgreSQL: available" if problem is None else f"PostgreSQL: NOT available ({problem})"
    try:
        import ray  # noqa: F401

        ray_line = "Ray: installed"
    except ImportError:
        ray_line = "Ray: NOT installed (pip install 'kiln[ray]')"
    return [pg + " -- postgres tests will be skipped" if problem else pg, ray_line]


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Admin URL of a reachable PostgreSQL server, or skip (fail in CI)."""
    problem = _pg_reachable()
    if problem:
        msg = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {problem}"
        if _require("KILN_REQUIRE_POSTGRES"):
            pytest.fail(msg + " (KILN_REQUIRE_POSTGRES=1)")
        pytest.skip(msg)
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"kiln_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def ray_available() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        if _require("KILN_REQUIRE_RAY"):
            pytest.fail("ray is not installed but KILN_REQUIRE_RAY=1")
        pytest.skip("ray not installed (pip install 'kiln[ray]')")
