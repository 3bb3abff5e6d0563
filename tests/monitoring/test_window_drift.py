"""The drift of a capture window against the training reference, on real flights: a version
trained on January-February serves July (hot: temperature drifts) and its own season (no
drift); a canary trained on June-July is judged against its own reference in the same window."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from kiln.config.monitor import MonitorConfig
from kiln.errors import ConfigError
from kiln.monitoring.drift import no_reference_note, window_drift
from kiln.monitoring.findings import ALL, PREDICTION, FeatureDrift
from kiln.pipeline.drift import statistic
from kiln.pipeline.histograms import bin_counts
from kiln.stores.capture import open_window
from tests.monitoring.flights_traffic import PIPELINE, Trained, capture, flights, train

pytestmark = pytest.mark.slow

JULY = (datetime(2013, 7, 1, tzinfo=UTC), datetime(2013, 8, 1, tzinfo=UTC))
WINTER = (datetime(2013, 1, 1, tzinfo=UTC), datetime(2013, 3, 1, tzinfo=UTC))
SUMMER = {
    "data": {"query": "SELECT * FROM flights WHERE month = 7"},
    "evaluation": {"split": {"holdout_start": "2013-07-25"}},
}


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory, warehouse: Path) -> list[Trained]:
    return train(tmp_path_factory.mktemp("drift"), warehouse, winter={}, summer=SUMMER)


def row(report_rows: list[FeatureDrift], version: int, segment: str, feature: str) -> FeatureDrift:
    (found,) = [
        r for r in report_rows
        if (r.version, r.segment, r.feature) == (version, segment, feature)
    ]  # fmt: skip
    return found


def drift(root: str, span: tuple[datetime, datetime], refs: dict, cfg: MonitorConfig | None = None):  # type: ignore[no-untyped-def]
    with open_window(root, PIPELINE, start=span[0], end=span[1]) as window:
        return window.skipped, window_drift(window, refs, cfg or MonitorConfig())


def test_summer_traffic_drifts_from_a_winter_reference_and_the_same_season_does_not(
    versions: list[Trained], warehouse: Path, tmp_path: Path
) -> None:
    winter = versions[0]
    refs = {winter.version: winter.manifest["reference"]}
    july = flights(warehouse, "month = 7")
    capture(str(tmp_path / "july"), winter, july)
    _, hot = drift(str(tmp_path / "july"), JULY, refs)
    for seg in (ALL, "EWR", "JFK", "LGA"):
        temp = row(hot.features, winter.version, seg, "temp")
        assert temp.statistic == "psi" and temp.value is not None and temp.value > 1.0
        assert temp.level == "alert" and temp.outside_range_share is not None
        assert temp.outside_range_share > 0.9  # July is hotter than any January-February hour
    # The SQL's bins are numpy's: the EWR figure from the same rows, binned in Python.
    entry = winter.manifest["reference"]["segments"]["EWR"]["features"]["temp"]
    ewr = np.array([r["temp"] for r in july if r["origin"] == "EWR"], dtype=float)
    counts, nulls = bin_counts(ewr, np.array(entry["edges"]))
    temp = row(hot.features, winter.version, "EWR", "temp")
    assert temp.value == pytest.approx(statistic("psi", np.array(entry["counts"]), counts))
    assert temp.rows == len(ewr) and temp.null_share == nulls / len(ewr)
    assert row(hot.features, winter.version, ALL, PREDICTION).value is not None
    shares = {t.segment: t for t in hot.traffic}
    assert set(shares) == {"EWR", "JFK", "LGA"}
    assert shares["EWR"].rows == len(ewr)
    assert sum(t.share for t in shares.values()) == pytest.approx(1.0)
    assert abs(shares["JFK"].share - shares["JFK"].share_reference) < 0.05

    season = flights(warehouse, "month = 1 OR (month = 2 AND day < 15)", every=7)
    capture(str(tmp_path / "winter"), winter, season)
    _, calm = drift(str(tmp_path / "winter"), WINTER, refs)
    for seg in (ALL, "EWR", "JFK", "LGA"):
        temp = row(calm.features, winter.version, seg, "temp")
        assert temp.value is not None and temp.value < 0.1 and temp.level == "ok"
        assert temp.outside_range_share == 0.0


def test_production_and_canary_are_each_judged_against_their_own_reference(
    versions: list[Trained], warehouse: Path, tmp_path: Path
) -> None:
    winter, summer = versions
    root = str(tmp_path)
    july = flights(warehouse, "month = 7 AND day < 25")  # the canary's training days
    capture(root, winter, july[0::2])
    capture(root, summer, july[1::2], stage="canary")
    refs = {v.version: v.manifest["reference"] for v in versions}
    _, report = drift(root, JULY, refs)
    assert row(report.features, winter.version, ALL, "temp").level == "alert"
    assert row(report.features, summer.version, ALL, "temp").level == "ok"  # trained on July
    assert {t.version for t in report.traffic} == {winter.version, summer.version}

    old = {winter.version: None, summer.version: summer.manifest["reference"]}
    _, report = drift(root, JULY, old)  # a version packaged before references existed
    assert report.no_reference == [winter.version]
    assert {r.version for r in report.features} == {summer.version}
    assert no_reference_note(winter.version) == (
        f"version {winter.version} has no training reference: re-run the pipeline to record one"
    )


def test_bad_input_corrupt_file_absent_feature_thin_segment_unseen_category(
    versions: list[Trained], warehouse: Path, tmp_path: Path
) -> None:
    winter = versions[0]
    root = str(tmp_path)
    refs = {winter.version: winter.manifest["reference"]}
    rows = flights(warehouse, "month = 2 AND day < 15 AND origin <> 'LGA'", every=3)
    lga = flights(warehouse, "month = 2 AND day < 15 AND origin = 'LGA'", every=3)[:40]
    for r in rows[:30]:
        r["carrier"] = "ZZ"  # an airline training never saw
    capture(root, winter, rows, drop=("temp",))  # an old client that sends no temperature
    capture(root, winter, lga, drop=("temp",))
    folder = tmp_path / "captures" / f"pipeline={PIPELINE}" / "date=2013-02-03"
    folder.mkdir(parents=True, exist_ok=True)
    bad = folder / "zz-corrupt.parquet"
    bad.write_bytes(b"PAR1 not a parquet file")

    skipped, report = drift(root, WINTER, refs)
    assert list(skipped) == [str(bad)]  # skipped and named; the rest is judged
    temp = row(report.features, winter.version, "EWR", "temp")
    assert temp.missing and temp.value is None and temp.level == "alert"
    assert temp.null_share == 1.0 and temp.null_share_reference == 0.0
    thin = row(report.features, winter.version, "LGA", "distance")
    assert thin.rows == 40 and thin.level == "unjudged" and thin.value is None
    assert row(report.features, winter.version, "LGA", "temp").level == "unjudged"
    assert row(report.features, winter.version, "EWR", "distance").level in ("ok", "warn")
    carrier = row(report.features, winter.version, ALL, "carrier")
    assert carrier.unseen == {"ZZ": 30} and carrier.value is not None

    judged = MonitorConfig.model_validate({"min_rows": 10, "drift": {"features": {
        "temp": {"ignore": True}, "distance": {"statistic": "wasserstein"}}}})  # fmt: skip
    _, report = drift(root, WINTER, refs, judged)
    assert row(report.features, winter.version, "LGA", "distance").statistic == "wasserstein"
    assert row(report.features, winter.version, "LGA", "distance").level != "unjudged"
    assert row(report.features, winter.version, "EWR", "temp").level == "unjudged"  # ignored
    # the kind-wide choice is refused when kiln.yaml loads; a feature's own one when judged
    wrong = MonitorConfig.model_validate(
        {"drift": {"features": {"carrier": {"statistic": "wasserstein"}}}}
    )
    with pytest.raises(ConfigError, match="categorical and wasserstein needs numbers"):
        drift(root, WINTER, refs, wrong)
