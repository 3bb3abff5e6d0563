"""The catalogue query on SQLite and PostgreSQL: filters, search, paging, totals, and the
latest-version, production, gates, monitoring, alerts and last-run columns, over a registry
filled through Kiln's own repositories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kiln.errors import KilnError
from kiln.registry.queries import CatalogueFilter, catalogue, versions_page
from kiln.stores import MetadataStore

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _version(uow, pipeline: str, lineage: dict | None = None, trigger: str = "manual") -> int:  # type: ignore[no-untyped-def]
    run = uow.runs.create(pipeline, trigger, "", "c" * 64, "kiln.yaml", "host", 1)
    uow.runs.mark_finished(run.id, "succeeded")
    return int(uow.versions.register(pipeline, run.id, "d" * 64, {}, lineage or {}).version)


@pytest.fixture
def registry(store: MetadataStore) -> MetadataStore:
    """alpha (olga): v1 production, v2 blocked by a failed replay gate, an alert window with
    one open alert. beta (data-team): v1 candidate with a pending gate, v2 an experiment, an
    ok window. gamma (olga): no version, never monitored; its description holds `50%_off`."""
    with store.unit_of_work() as uow:
        uow.pipelines.upsert("alpha", "olga", "Arrival delays at JFK", "a/kiln.yaml")
        uow.pipelines.upsert("beta", "data-team", "departure delays", "b/kiln.yaml")
        uow.pipelines.upsert("gamma", "olga", "50%_off coupons", "c/kiln.yaml")
        one = _version(uow, "alpha")
        uow.versions.set_stage("alpha", one, "production")
        two = _version(uow, "alpha")
        uow.versions.set_stage("alpha", two, "blocked")
        uow.gates.record("alpha", two, "data", "passed", "ok", {})
        uow.gates.record("alpha", two, "replay", "failed", "worse in JFK", {})
        uow.gates.record("alpha", two, "replay", "passed", "recheck", {}, trigger="recheck")
        uow.windows.store("alpha", T0, T0 + timedelta(hours=1), 3600, 500, "ok", None, {})
        later = T0 + timedelta(hours=1)
        finding = {"check": "drift:temp", "feature": "temp", "segment": "JFK", "value": 0.4,
                   "threshold": 0.25, "details": {"statistic": "psi"}}  # fmt: skip
        uow.windows.store(
            "alpha", later, later + timedelta(hours=1), 3600, 400, "alert", "drift:temp",
            {"findings": [finding]},
        )  # fmt: skip
        alert = uow.alerts.start("alpha", "drift:temp", "drift", "alert", later, 0.4, 0.25, "x")
        assert alert is not None
        uow.alerts.open(alert.id, later)
        b1 = _version(uow, "beta", trigger="schedule")
        uow.gates.record("beta", b1, "shadow", "pending", "waiting", {})
        _version(uow, "beta", lineage={"experiment": "bigger-trees"})
        uow.windows.store("beta", T0, T0 + timedelta(hours=1), 3600, 0, "no_traffic", None, {})
    return store


def test_every_row_shows_production_latest_gates_monitoring_and_last_run(
    registry: MetadataStore,
) -> None:
    page = catalogue(registry)
    assert page.total == 3 and [r.pipeline for r in page.rows] == ["alpha", "beta", "gamma"]
    assert page.owners == ["data-team", "olga"]
    alpha, beta, gamma = page.rows
    assert (alpha.production, alpha.latest, alpha.latest_stage) == (1, 2, "blocked")
    assert alpha.production_since is not None
    assert alpha.gates.outcome == "failed"
    assert alpha.gates.gates == {"data": "passed", "replay": "failed"}  # a recheck never decides
    assert alpha.monitoring.state == "alert" and alpha.monitoring.segment == "JFK"
    assert alpha.monitoring.statistic == "psi" and alpha.open_alerts == 1
    assert alpha.last_run is not None and alpha.last_run.trigger == "manual"
    assert alpha.monthly_usd is None
    # an experiment is never the latest released version
    assert (beta.production, beta.latest, beta.latest_stage) == (None, 1, "candidate")
    assert beta.gates.outcome == "pending" and beta.monitoring.state == "no traffic"
    assert beta.last_run is not None and beta.last_run.status == "succeeded"
    assert (gamma.latest, gamma.gates.outcome, gamma.last_run) == (None, "none", None)
    assert gamma.monitoring.state == "not monitored yet" and gamma.open_alerts == 0


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (CatalogueFilter(owner="olga"), ["alpha", "gamma"]),
        (CatalogueFilter(stage="blocked"), ["alpha"]),
        (CatalogueFilter(stage="candidate"), ["beta"]),
        (CatalogueFilter(stage="production"), []),
        (CatalogueFilter(state="alert"), ["alpha"]),
        (CatalogueFilter(state="no traffic"), ["beta"]),
        (CatalogueFilter(state="not monitored yet"), ["gamma"]),
        (CatalogueFilter(q="DELAYS"), ["alpha", "beta"]),
        (CatalogueFilter(q="jfk"), ["alpha"]),
        (CatalogueFilter(q="team"), ["beta"]),
        (CatalogueFilter(q="%_o"), ["gamma"]),  # LIKE wildcards are searched literally
        (CatalogueFilter(q="%"), ["gamma"]),
        (CatalogueFilter(q="delays", owner="olga", stage="blocked", state="alert"), ["alpha"]),
    ],
)
def test_filters_and_search_narrow_rows_and_total(
    registry: MetadataStore, flt: CatalogueFilter, expected: list[str]
) -> None:
    page = catalogue(registry, flt)
    assert [r.pipeline for r in page.rows] == expected
    assert page.total == len(expected)


def test_pages_split_the_total_and_a_page_beyond_the_end_is_empty(
    registry: MetadataStore,
) -> None:
    first = catalogue(registry, CatalogueFilter(per_page=2))
    second = catalogue(registry, CatalogueFilter(per_page=2, page=2))
    assert [r.pipeline for r in first.rows] == ["alpha", "beta"] and first.has_next
    assert [r.pipeline for r in second.rows] == ["gamma"] and not second.has_next
    assert first.total == second.total == 3 and first.pages == 2 and first.after == 1
    beyond = catalogue(registry, CatalogueFilter(per_page=2, page=9))
    assert beyond.rows == [] and beyond.total == 3


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("stage", "live", "unknown stage 'live'"),
        ("state", "fine", "unknown monitoring state 'fine'"),
        ("page", 0, "page 0"),
        ("per_page", 201, "per_page 201"),
    ],
)
def test_a_bad_filter_names_the_field_and_the_values_it_takes(
    field: str, value: object, says: str
) -> None:
    with pytest.raises(KilnError) as e:
        CatalogueFilter(**{field: value})  # type: ignore[arg-type]
    assert says in e.value.message and e.value.hint


def test_an_empty_registry_is_an_empty_page(store: MetadataStore) -> None:
    page = catalogue(store)
    assert (page.rows, page.total, page.owners, page.pages) == ([], 0, [], 1)


def test_versions_page_is_newest_first_filtered_and_paged(registry: MetadataStore) -> None:
    every = versions_page(registry)
    assert every.total == 4
    assert [(r.pipeline, r.version) for r in every.rows] == [
        ("alpha", 2), ("alpha", 1), ("beta", 2), ("beta", 1),
    ]  # fmt: skip
    assert every.rows[2].experiment == "bigger-trees" and every.rows[0].experiment is None
    blocked = versions_page(registry, stage="blocked")
    assert [(r.pipeline, r.version, r.stage) for r in blocked.rows] == [("alpha", 2, "blocked")]
    second = versions_page(registry, pipeline="alpha", page=2, per_page=1)
    assert [r.version for r in second.rows] == [1] and second.total == 2 and second.after == 0
    assert versions_page(registry, page=3, per_page=2).rows == []
    with pytest.raises(KilnError, match="unknown stage 'live'"):
        versions_page(registry, stage="live")


def test_versions_page_reads_the_headline_metric(store: MetadataStore) -> None:
    metrics = {"primary": "mae", "segments": 3, "overall": {"mae": 11.5, "rmse": 20.0},
               "per_segment": {"JFK": {"mae": 9.0}}}  # fmt: skip
    with store.unit_of_work() as uow:
        uow.pipelines.upsert("alpha", "olga", "", "k")
        run = uow.runs.create("alpha", "manual", "", "c" * 64, "kiln.yaml", "host", 1)
        uow.versions.register("alpha", run.id, "d" * 64, metrics, {})
    (row,) = versions_page(store).rows
    assert (row.primary, row.primary_value, row.segments) == ("mae", 11.5, 3)


def test_open_alerts_are_counted_for_many_pipelines(store: MetadataStore) -> None:
    """Twelve alerts started one after the other on one pooled connection: on PostgreSQL the
    insert is a prepared statement with a generic plan from its 11th run, whose ON CONFLICT
    must still find the partial unique index (it did not while its predicate was bound
    parameters)."""
    for i in range(12):
        with store.unit_of_work() as uow:
            uow.pipelines.upsert(f"a{i}", "olga", "", "k")
            alert = uow.alerts.start(f"a{i}", "drift:temp", "drift", "alert", T0, 0.4, 0.3, "x")
            assert alert is not None
            uow.alerts.open(alert.id, T0)
    page = catalogue(store)
    assert [r.open_alerts for r in page.rows] == [1] * 12
