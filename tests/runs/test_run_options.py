"""The options of a run survive in its extract step, so `kiln run --resume` finishes an
experiment as an experiment and a partial run as a partial run."""

from __future__ import annotations

import json

import pytest

from kiln.errors import ConfigError
from kiln.runs.options import RunOptions, check_experiment_name


@pytest.mark.parametrize(
    "options",
    [
        RunOptions(),
        RunOptions(experiment="more-trees"),
        RunOptions(segments=("EWR", "JFK")),
        RunOptions(stop_after="train", from_run="abc123"),
        RunOptions(force=True),
        RunOptions(experiment="x", force=True),
    ],
)
def test_options_round_trip_through_json_step_details(options: RunOptions) -> None:
    stored = json.loads(json.dumps(options.to_details()))
    assert RunOptions.from_details(stored) == options


def test_lineage_names_the_experiment() -> None:
    assert RunOptions(experiment="x").lineage(None) == {"experiment": "x"}
    assert RunOptions().lineage(None) == {}


@pytest.mark.parametrize("name", ["", "has space", "-leading", "x" * 64, "a/b"])
def test_experiment_names_are_checked(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid experiment name"):
        check_experiment_name(name)
