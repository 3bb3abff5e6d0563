"""Schemathesis against a real server's OpenAPI spec: generated requests (valid and invalid,
with and without the real pipeline's name and the admin token) never get a 500."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from serving_support import ADMIN, PIPELINE, PREDICT, Server, Trained, set_stage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home: Path = trained.copy(tmp_path_factory.mktemp("fuzz") / "home")
    set_stage(home, 1, "production")
    server = Server(home, predict_token=PREDICT)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("target", ["any name, no token", "the pipeline, admin token"])
def test_generated_requests_never_get_a_500(fuzzed: Server, mode: GenerationMode, target: str):
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    fixed: dict[str, Any] = {}
    if target.startswith("the pipeline"):
        fixed = {
            "path_parameters": {"name": PIPELINE},
            "headers": {"Authorization": f"Bearer {ADMIN}"},
        }
    seen: list[int] = []

    @given(case=schema.as_strategy(mode, **fixed))
    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=[not_a_server_error])
        seen.append(response.status_code)

    run()
    codes = Counter(seen)
    assert codes and max(codes) < 500, codes
    if fixed:
        assert codes[422] > 0, codes  # the request schema of the real pipeline was exercised
