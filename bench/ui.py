"""UI benchmark: the server time of every page and API endpoint with a registry at scale.

    python bench/ui.py [--pipelines 1000] [--versions 100] [--repeat 20] [--backend sqlite,postgres]

Fills a registry of ``--pipelines`` x ``--versions`` through Kiln's own repositories
(bench/_ui_fill.py; one unit of work per pipeline) on SQLite (a file under .kiln-bench/, kept and
reused when it already holds that registry) and PostgreSQL (a database ``kiln_bench_ui`` on the
server of KILN_TEST_PG_URL, created, and reused the same way; skipped with a message when the
server is down). Then asks each URL through the real ASGI app in-process (Starlette's TestClient,
signed in with a session cookie like a browser): one warm-up, then the median and p90 of
``--repeat`` requests, against the 150 ms budget and as a ratio to the floor: the same app
answering ``/api/me`` (authentication and framework only). A URL that answers 404 belongs to a
page not written yet: it is skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._ui_fill import fill, name_of  # noqa: E402
from kiln.registry.people import People  # noqa: E402
from kiln.registry.queries.versions import versions_page  # noqa: E402
from kiln.registry.status import pipeline_status  # noqa: E402
from kiln.settings import Settings  # noqa: E402
from kiln.stores import MetadataStore, Stores, open_stores  # noqa: E402
from kiln.ui import create_app  # noqa: E402

BUDGET_MS = 150.0
HOME = ROOT / ".kiln-bench"
PG_ADMIN = os.environ.get(
    "KILN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
PG_DB = "kiln_bench_ui"
PASSWORD = "bench password 1"


def _filled(url: str, pipelines: int, versions: int) -> bool:
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            p = conn.scalar(sa.text("select count(*) from pipelines"))
            v = conn.scalar(sa.text("select count(*) from model_versions"))
        engine.dispose()
    except sa.exc.SQLAlchemyError:
        return False
    return p >= pipelines and v >= pipelines * versions


REAL = "flights-bench"
"""A real pipeline beside the synthetic ones: two real runs on the real flights (real manifests,
tasks and gate evidence) for the version and run pages."""
WAREHOUSE = ROOT / "examples" / "flights" / "warehouse.duckdb"


def _real(settings: Settings, stores: Stores) -> None:
    import yaml

    from kiln.config import load_config
    from kiln.release.controller import Release
    from kiln.runs import Runner

    with stores.metadata.read() as uow:
        if any(v for v in uow.versions.list(REAL)):
            return
    if not WAREHOUSE.exists():
        raise SystemExit(f"{WAREHOUSE} is missing: `make bench-ui` builds it")
    features = ["origin", "dest", "carrier", "hour", "day_of_week", "distance", "temp",
                "wind_speed", "precip", "visib"]  # fmt: skip
    for i, extra in enumerate(([], ["dep_delay"]), start=1):
        config = {
            "name": REAL, "owner": "owner-1", "description": "arrival delays (real runs)",
            "data": {"source": str(WAREHOUSE), "time_column": "time_hour",
                     "query": "SELECT * FROM flights WHERE month IN (1, 2)"},
            "target": {"column": "arr_delay", "task": "regression"},
            "features": features + extra,
            "segments": {"column": "origin", "values": "auto", "min_rows": 100},
            "model": {"estimator": "lightgbm.LGBMRegressor",
                      "params": {"n_estimators": 20, "num_leaves": 15}},
            "evaluation": {"split": {"holdout_start": "2013-02-15"}, "metrics": ["mae", "rmse"]},
            "resources": {"cpus": 2},
            "deploy": {"auto_promote": True},
        }  # fmt: skip
        path = settings.home / f"{REAL}.v{i}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        number = Runner(settings, stores).run(load_config(path)).version
        if number is not None:
            Release(settings, stores).after_run(REAL, number)
    print(f"added {REAL}: two real runs on the flights (the version and run pages)")


def _counts(backend: str, url: str) -> None:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {
            table: conn.scalar(sa.text(f"select count(*) from {table}"))
            for table in ("pipelines", "model_versions", "runs", "gate_results", "steps",
                          "tasks", "deployments", "audit_events", "monitor_windows", "alerts")
        }  # fmt: skip
    engine.dispose()
    print(f"{backend}: " + ", ".join(f"{v:,} {k}" for k, v in found.items()))


def _sqlite(pipelines: int, versions: int) -> str:
    path = HOME / f"ui-{pipelines}x{versions}" / "kiln.db"
    url = f"sqlite:///{path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return url


def _postgres(pipelines: int, versions: int) -> str | None:
    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT",
                                 connect_args={"connect_timeout": 3})  # fmt: skip
        with admin.connect() as conn:
            url = sa.make_url(PG_ADMIN).set(database=PG_DB).render_as_string(hide_password=False)
            exists = conn.scalar(
                sa.text("select 1 from pg_database where datname = :n"), {"n": PG_DB}
            )
            if not exists:  # a partial fill is resumed, not dropped
                conn.execute(sa.text(f'CREATE DATABASE "{PG_DB}"'))
        admin.dispose()
    except sa.exc.SQLAlchemyError as e:
        print(f"PostgreSQL skipped: {PG_ADMIN} is not reachable ({str(e).splitlines()[0]})")
        return None
    return url


def _urls(metadata: MetadataStore, versions: int) -> list[tuple[str, str]]:
    """(label, url): the catalogue's and one pipeline's pages (with ``versions`` versions)
    and their /api twins."""
    name = name_of(1)  # blocked latest, production the version before
    with metadata.read() as uow:
        real = uow.versions.get(REAL, 2)
    return [
        ("catalogue", "/"),
        ("catalogue search", "/?q=model+42"),
        ("catalogue filter", "/?owner=owner-3&stage=blocked&state=alert"),
        ("catalogue page 20", "/?page=20"),
        ("api catalogue", "/api/pipelines"),
        ("api catalogue search", "/api/pipelines?q=model+42"),
        ("api catalogue filter", "/api/pipelines?owner=owner-3&stage=blocked&state=alert"),
        ("api catalogue page 20", "/api/pipelines?page=20"),
        ("pipeline", f"/pipelines/{name}"),
        ("version", f"/pipelines/{REAL}/versions/2"),
        ("run", f"/runs/{real.run_id}"),
        ("monitoring", f"/pipelines/{name}/monitoring"),
        ("cost", "/cost"),
        ("pipeline cost", f"/pipelines/{name}/cost"),
        ("api pipeline", f"/api/pipelines/{name}"),
        ("api versions", f"/api/pipelines/{name}/versions"),
        ("api version", f"/api/pipelines/{REAL}/versions/2"),
        ("api run", f"/api/runs/{real.run_id}"),
        ("api monitoring", f"/api/pipelines/{name}/monitoring"),
        ("api cost", "/api/cost"),
        ("api pipeline cost", f"/api/pipelines/{name}/cost"),
        ("api audit", f"/api/pipelines/{name}/audit?limit=50"),
    ]


def _time(client: TestClient, url: str, repeat: int) -> tuple[int, list[float]]:
    first = client.get(url)  # warm-up (and the status)
    took = []
    for _ in range(repeat):
        start = time.perf_counter()
        client.get(url)
        took.append((time.perf_counter() - start) * 1000)
    return first.status_code, took


def _time_cold(client: TestClient, url: str, repeat: int) -> list[float]:
    """``url`` with the app's $/month cache emptied before each request (cost read again)."""
    took = []
    for _ in range(repeat):
        client.app.state.catalogue_costs = {}  # type: ignore[attr-defined]
        start = time.perf_counter()
        client.get(url)
        took.append((time.perf_counter() - start) * 1000)
    return took


def _time_call(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()
    took = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        took.append((time.perf_counter() - start) * 1000)
    return took


def _p90(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.9 * len(values)) - 1)]


def bench(backend: str, url: str, home: Path, args: argparse.Namespace) -> None:
    settings = Settings(home=home, db_url=url)
    stores = open_stores(settings, upgrade=True)
    try:
        if args.as_is:
            print(f"{backend}: measuring the registry as it is (--as-is)")
        elif not _filled(url, args.pipelines, args.versions):
            start = time.perf_counter()
            fill(stores.metadata, args.pipelines, args.fill_versions or args.versions)
            print(f"{backend}: filled {args.pipelines} pipelines x {args.versions} versions"
                  f" in {time.perf_counter() - start:.1f} s")  # fmt: skip
        else:
            print(f"{backend}: reusing the registry at {url}")
        _real(settings, stores)
        _counts(backend, url)
        if args.fill_only:
            return
        people = People(stores.metadata, settings.admin_token)
        if not any(u.name == "bench" for u in people.users()):
            people.add_user("bench", "admin", password=PASSWORD)
        with TestClient(create_app(settings, stores), follow_redirects=False) as client:
            r = client.post("/login", data={"name": "bench", "secret": PASSWORD})
            if r.status_code != 303:
                raise SystemExit(f"sign-in failed: {r.status_code} {r.text[:200]}")
            # The app computes the cost overview in the background at start-up (seconds at
            # this size): wait for it, as a server that has been up a while has.
            started = time.perf_counter()
            client.get("/cost")
            print(f"{backend}: cost overview computed at start-up in"
                  f" {time.perf_counter() - started:.1f} s (waited for before timing)")  # fmt: skip
            _, floor_ms = _time(client, "/api/me", args.repeat)
            floor = statistics.median(floor_ms)
            print(f"\n{backend}: median of {args.repeat} after a warm-up; floor /api/me"
                  f" {floor:.1f} ms")  # fmt: skip
            print(f"{'page':<24}{'median ms':>10}{'p90 ms':>9}{'budget':>8}{'x floor':>9}  url")
            for label, target in _urls(stores.metadata, args.versions):
                status, took = _time(client, target, args.repeat)
                if status == 404:
                    print(f"{label:<24}{'-':>10}{'-':>9}{'':>8}{'':>9}  {target} (404: not built)")
                    continue
                med = statistics.median(took)
                verdict = "ok" if med <= BUDGET_MS else "OVER"
                note = "" if status == 200 else f" (HTTP {status})"
                print(f"{label:<24}{med:>10.1f}{_p90(took):>9.1f}{verdict:>8}"
                      f"{med / floor:>9.1f}  {target}{note}")  # fmt: skip
            cold = _time_cold(client, "/", max(3, args.repeat // 4))
            print(f"{'catalogue, cost cold':<24}{statistics.median(cold):>10.1f}"
                  f"{_p90(cold):>9.1f}{'':>8}{statistics.median(cold) / floor:>9.1f}"
                  "  / with the $/month cache emptied before each request")  # fmt: skip
        metadata = stores.metadata
        for label, fn in (
            ("kiln status (query)", lambda: pipeline_status(metadata)),
            ("models list (query)", lambda: versions_page(metadata)),
            ("models list --stage", lambda: versions_page(metadata, stage="blocked")),
        ):
            took = _time_call(fn, max(3, args.repeat // 4))
            print(f"{label:<24}{statistics.median(took):>10.1f}{_p90(took):>9.1f}")
    finally:
        stores.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backend", default="sqlite,postgres")
    parser.add_argument(
        "--fill-versions", type=int, default=None,
        help="versions of each pipeline that this fill adds (default --versions): a quicker"
        " fill that keeps the pipelines already filled with --versions",
    )  # fmt: skip
    parser.add_argument("--fill-only", action="store_true", help="fill (or resume), no timing")
    parser.add_argument(
        "--as-is", action="store_true", help="time the registry as it is (a partial fill)"
    )
    args = parser.parse_args()
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    size = f"{args.pipelines}x{args.versions}"
    if "sqlite" in backends:
        url = _sqlite(args.pipelines, args.versions)
        bench("sqlite", url, HOME / f"ui-{size}", args)
    if "postgres" in backends:
        pg = _postgres(args.pipelines, args.versions)
        if pg is not None:
            bench("postgres", pg, HOME / f"ui-pg-{size}", args)


if __name__ == "__main__":
    main()
