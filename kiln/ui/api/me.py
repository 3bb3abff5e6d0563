"""Who am I: the principal the request's token or session resolves to."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from kiln.ui._deps import Viewer

router = APIRouter(prefix="/api", tags=["people"])


class Me(BaseModel):
    name: str
    role: str
    pipelines: str | None
    via: str


@router.get("/me", response_model=Me)
def me(who: Viewer) -> Me:
    """The signed-in user (or the bootstrap admin) and its role."""
    p = who.principal
    return Me(name=p.name, role=p.role, pipelines=p.pipelines, via=p.via)
