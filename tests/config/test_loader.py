"""kiln.yaml loading: every problem names file:line:column, the field and what was expected."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from kiln.config import json_schema, load_config
from kiln.errors import ConfigError

GOOD = """\
name: flights
owner: ds@example.com
data:
  source: warehouse.duckdb
  query: SELECT * FROM flights
  time_column: time_hour
target: arr_delay
features: [distance, carrier]
segments:
  column: origin
  values: [EWR, JFK]
  min_rows: 10
model:
  estimator: lightgbm.LGBMRegressor
  params: {n_estimators: 10}
schedule: "0 3 * * *"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "kiln.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.problems or [info.value.message]


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, GOOD))
    cfg = loaded.config
    assert cfg.target.column == "arr_delay" and cfg.target.task == "regression"
    assert cfg.metrics == ["mae", "rmse", "r2"] and cfg.primary_metric == "mae"
    assert cfg.segments is not None and cfg.segments.fallback == "global"
    assert cfg.schedule is not None and cfg.schedule.cron == "0 3 * * *"
    assert len(cfg.digest) == 64
    assert loaded.where("segments", "min_rows").endswith("kiln.yaml:12:13")


def test_digest_changes_with_content(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, GOOD)).config.digest
    b = load_config(write(tmp_path, GOOD.replace("min_rows: 10", "min_rows: 11"))).config.digest
    assert a != b


def test_unknown_key_gives_position_and_did_you_mean(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD.replace("  min_rows: 10", "  min_rowz: 10"))
    assert "kiln.yaml:12:3" in p and "segments.min_rowz" in p
    assert "did you mean 'min_rows'" in p


def test_unknown_top_level_key(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD + "featurs: [x]\n")
    assert "kiln.yaml:17:1" in p and "did you mean 'features'" in p


def test_unknown_key_without_close_match_lists_the_known_ones(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD.replace("  values: [EWR, JFK]", "  zzz: 1"))
    assert "unknown key 'zzz'" in p and "'min_rows'" in p


def test_wrong_type(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD.replace("min_rows: 10", "min_rows: many"))
    assert "kiln.yaml:12:13" in p and "segments.min_rows" in p and "integer" in p
    assert "'many'" in p


def test_missing_required_section(tmp_path: Path) -> None:
    text = GOOD.replace("target: arr_delay\n", "")
    [p] = problems(tmp_path, text)
    assert "target: required field is missing" in p


def test_bad_cron(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD.replace('"0 3 * * *"', '"every day at 3"'))
    assert "schedule.cron" in p and "is not a cron expression" in p and "kiln.yaml:16" in p


def test_cron_out_of_range(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD.replace('"0 3 * * *"', '"0 25 * * *"'))
    assert "is not a cron expression" in p


def test_bad_time_zone(tmp_path: Path) -> None:
    [p] = problems(
        tmp_path, GOOD.replace('"0 3 * * *"', '{cron: "0 3 * * *", timezone: Mars/Base}')
    )
    assert "unknown time zone 'Mars/Base'" in p


def test_metrics_must_fit_task(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD + "evaluation: {metrics: [auc]}\n")
    assert "do not fit a regression target" in p


def test_primary_must_be_a_chosen_metric(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD + "evaluation: {metrics: [mae], primary: rmse}\n")
    assert "evaluation.primary 'rmse' is not in metrics" in p


def test_estimator_or_train_not_both(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD.replace("  params: {n_estimators: 10}", "  train: train:train"))
    assert "give exactly one of `estimator` or `train`" in p


def test_target_in_features(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD.replace("[distance, carrier]", "[distance, arr_delay]"))
    assert "also listed in features" in p


def test_several_problems_are_reported_in_file_order(tmp_path: Path) -> None:
    text = GOOD.replace("min_rows: 10", "min_rows: -1").replace("owner: ds@example.com", "ownr: x")
    ps = problems(tmp_path, text)
    assert len(ps) == 3  # unknown ownr, missing owner, min_rows >= 1
    lines = [int(p.split("kiln.yaml:")[1].split(":")[0]) for p in ps]
    assert lines == sorted(lines)


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    [p] = problems(tmp_path, GOOD.replace("features: [distance, carrier]", "features: [distance"))
    assert "not valid YAML" in p and "kiln.yaml:" in p


def test_not_a_mapping(tmp_path: Path) -> None:
    [p] = problems(tmp_path, "- just\n- a list\n")
    assert "expected a mapping of sections" in p


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_json_schema_is_complete() -> None:
    schema = json_schema()
    assert schema["title"] == "kiln.yaml"
    assert {"name", "data", "target", "features", "segments", "model"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    json.dumps(schema)


def test_duration_and_size_parsing(tmp_path: Path) -> None:
    text = GOOD + "resources: {cpus: 2, memory: 512MiB}\nchecks: {freshness: {max_age: 36h}}\n"
    cfg = load_config(write(tmp_path, text)).config
    assert cfg.resources.memory == 512 * 2**20
    assert cfg.checks.freshness is not None
    assert cfg.checks.freshness.max_age.total_seconds() == 36 * 3600
    [p] = problems(tmp_path, GOOD + "resources: {memory: lots}\n")
    assert "resources.memory" in p and "expected a size" in p


def test_a_key_given_twice_names_both_lines(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  query: SELECT * FROM flights\n", "  query: SELECT 1\n  query: SELECT 2\n"
    )
    [p] = problems(tmp_path, text)
    assert f"{tmp_path / 'kiln.yaml'}:5:3 and {tmp_path / 'kiln.yaml'}:6:3:" in p
    assert "key 'query' given twice in one mapping (data.query)" in p


def test_every_key_given_twice_is_reported_in_file_order(tmp_path: Path) -> None:
    text = GOOD + "name: again\n"  # top level, last line
    text = text.replace("{n_estimators: 10}", "{n_estimators: 10, n_estimators: 5}")
    ps = problems(tmp_path, text)
    assert len(ps) == 2
    assert ":1:1 and " in ps[0] and ":17:1: key 'name'" in ps[0]
    assert ":15:12 and " in ps[1] and ":15:30: key 'n_estimators'" in ps[1]
    assert "(model.params.n_estimators)" in ps[1]


def test_equal_keys_in_different_mappings_and_merge_keys_are_fine(tmp_path: Path) -> None:
    text = GOOD + "evaluation: {split: {holdout_fraction: 0.2}, metrics: [mae]}\n"
    text += "deploy:\n  shadow: &s {min_requests: 5}\n  rollback: {min_requests: 5}\n"
    assert load_config(write(tmp_path, text)).config.deploy.shadow.min_requests == 5


def test_a_train_module_beside_each_config_is_its_own(tmp_path: Path) -> None:
    """Two pipelines' train.py in one process: each config gets the function beside it, not the
    module of the same name imported first from the other folder."""
    from kiln.config.loader import import_object

    first, second = tmp_path / "a", tmp_path / "b"
    for folder, name in ((first, "fit_a"), (second, "fit_b")):
        folder.mkdir()
        (folder / "kiln_test_train_mod.py").write_text(f"def {name}():\n    return {name!r}\n")
    spec = "kiln_test_train_mod:{}"
    fn = import_object(spec.format("fit_a"), base_dir=first, where="a", field="model.train")
    assert fn() == "fit_a"
    fn = import_object(spec.format("fit_b"), base_dir=second, where="b", field="model.train")
    assert fn() == "fit_b"
