"""How a version is served: capture of its traffic (and how long it is kept) and the answers to
rows it was not trained for; packaged into each version."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kiln.config.base import Retention
from kiln.config.base import Strict as _Strict

__all__ = ["CaptureConfig", "ServingConfig", "UnseenCategories"]


class CaptureConfig(_Strict):
    sample_rate: float = Field(default=1.0, ge=0, le=1)
    retention: Retention = Field(
        default=None,
        description="`kiln gc --apply` deletes captures (and labels) older than this (e.g."
        " 30d), except the newest requests the replay gate reads and those a gate's evidence"
        " names. Unset: kept.",
    )


UnseenCategories = Literal["accept", "fallback", "reject"]


class ServingConfig(_Strict):
    """How the server (and `kiln predict`) answer rows; packaged into each version."""

    unseen_categories: UnseenCategories = Field(
        default="accept",
        description="A categorical value that training never saw: accept (the model sees it as"
        " missing; the row is flagged and counted), fallback (the fallback model answers the"
        " row) or reject (the server answers 422, `kiln predict` reports the row as bad).",
    )
    max_text_length: int = Field(
        default=256,
        ge=1,
        description="Longest text a categorical feature (or the segment column) may hold, in"
        " characters; longer is answered 422 by the server and a bad row by `kiln predict`"
        " (never captured). A category seen in training is always allowed, however long.",
    )
