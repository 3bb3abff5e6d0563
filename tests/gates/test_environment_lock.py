"""The version handle that gates use loads a package through the same check as the server: a
version whose environment lock says another lightgbm major.minor is refused, naming it, before
a gate scores anything with it (the release controller turns the error into a failed gate)."""

from __future__ import annotations

import orjson
import pytest

from kiln.errors import IntegrityError
from kiln.gates.quality import DataQualityGate
from kiln.registry.package import environment_lock, save_manifest
from tests.gates.conftest import PIPELINE, GateEnv, GateHome

pytestmark = pytest.mark.slow

LOCK_MESSAGE = "was built with other library versions than this environment has"


def register_with_lightgbm(env: GateEnv, version: int, lightgbm: str) -> int:
    """A new candidate: ``version``'s package, run and lineage (its data snapshot), with an
    environment lock that says ``lightgbm``."""
    with env.stores.metadata.unit_of_work() as uow:
        record = uow.versions.get(PIPELINE, version)
        manifest = orjson.loads(env.stores.content.get(record.manifest_digest, what="manifest"))
        lock = environment_lock()
        lock["packages"]["lightgbm"] = lightgbm
        digest = save_manifest(env.stores.content, manifest | {"environment": lock})
        run = uow.runs.get(record.run_id)
        again = uow.runs.create(  # a version per run: the same config, data and code again
            PIPELINE, "manual", run.config_text, run.config_digest, run.config_path, "h", 1
        )
        copy = uow.versions.register(PIPELINE, again.id, digest, record.metrics, record.lineage)
        return copy.version


def test_a_gate_refuses_a_version_built_with_another_lightgbm(gate_env: GateEnv) -> None:
    number = register_with_lightgbm(gate_env, GateHome.HONEST, "1.0.0")
    candidate = gate_env.version(number)
    champion = gate_env.version(GateHome.PRODUCTION)
    with pytest.raises(IntegrityError) as e:
        DataQualityGate().evaluate(candidate, champion, gate_env.context(candidate.policy))
    message = str(e.value)
    assert f"version {number} of {PIPELINE!r} {LOCK_MESSAGE}" in message
    assert "lightgbm: package built with 1.0.0, this process has" in message

    here = environment_lock()["packages"]["lightgbm"]
    same = gate_env.version(register_with_lightgbm(gate_env, GateHome.HONEST, here))
    # the same copy with this process's lock loads and scores its holdout: only the lock differs
    assert len(same.predictor.predict(same.holdout).values) == len(same.holdout) > 0
