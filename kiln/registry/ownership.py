"""Who owns a pipeline: the ``owner`` of its first registered kiln.yaml, changed only by an
admin (`kiln transfer`). An owner-role user without a ``--pipelines`` glob may change the
pipelines it owns, so a run must not be able to hand a pipeline to whoever wrote its kiln.yaml:
`kiln run` needs no token."""

from __future__ import annotations

from kiln.errors import ConfigError, NotFoundError
from kiln.stores import MetadataStore, UnitOfWork

__all__ = ["check_owner", "transfer"]


def check_owner(uow: UnitOfWork, pipeline: str, owner: str, where: str) -> None:
    """Refuse a run whose kiln.yaml (``where``) names another owner than the registered one."""
    try:
        registered = uow.pipelines.get(pipeline).owner
    except NotFoundError:
        return  # a new pipeline: its first kiln.yaml says who owns it
    if registered == owner:
        return
    raise ConfigError(
        f"{where}: owner: {pipeline!r} is owned by {registered!r} in the registry, and this"
        f" kiln.yaml says {owner!r}; its owner decides who may promote it, so a run cannot"
        " change it",
        hint=f"put `owner: {registered}` back, or ask an admin to run"
        f" `kiln transfer {pipeline} {owner} --reason TEXT` first",
    )


def transfer(
    metadata: MetadataStore, pipeline: str, owner: str, *, actor: str, reason: str | None
) -> str:
    """Give ``pipeline`` to ``owner`` (callers check that the actor is an admin); audited.
    Returns the previous owner."""
    if not owner.strip():
        raise ConfigError("the new owner is empty", hint="give a user or team name")
    with metadata.unit_of_work() as uow:
        found = uow.pipelines.lock(pipeline)
        uow.pipelines.upsert(pipeline, owner, found.description, found.config_path)
        uow.audit.record(
            actor, "pipeline.transfer", pipeline, reason=reason,
            details={"from": found.owner, "to": owner},
        )  # fmt: skip
    return found.owner
