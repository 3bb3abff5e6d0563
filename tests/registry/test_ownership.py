"""A run cannot hand a pipeline to whoever wrote its kiln.yaml: the registered owner stays
until an admin transfers it (audited)."""

from __future__ import annotations

import pytest

from kiln.errors import ConfigError
from kiln.registry.ownership import check_owner, transfer
from kiln.stores import MetadataStore


def test_a_run_naming_another_owner_is_refused_until_an_admin_transfers_it(
    store: MetadataStore,
) -> None:
    with store.unit_of_work() as uow:
        uow.pipelines.upsert("flights", "olga", "d", "kiln.yaml")
    with store.read() as uow:
        check_owner(uow, "flights", "olga", "kiln.yaml")  # the same owner: fine
        check_owner(uow, "new-one", "anyone", "kiln.yaml")  # a new pipeline: fine
        with pytest.raises(ConfigError, match="owned by 'olga'") as e:
            check_owner(uow, "flights", "mallory", "other/kiln.yaml")
    assert "kiln transfer flights mallory" in (e.value.hint or "")
    assert transfer(store, "flights", "mallory", actor="ada", reason="team change") == "olga"
    with store.read() as uow:
        assert uow.pipelines.get("flights").owner == "mallory"
        (event,) = uow.audit.list("flights")
        check_owner(uow, "flights", "mallory", "kiln.yaml")
    assert (event.action, event.actor, event.reason) == ("pipeline.transfer", "ada", "team change")
    assert event.details == {"from": "olga", "to": "mallory"}
