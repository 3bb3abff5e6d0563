"""The JSON shapes of the API, as pydantic models: they document the OpenAPI spec and check
the admin request bodies. The predict hot path writes its answers with orjson directly."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kiln.serving._schema import MAX_INSTANCES

__all__ = [
    "ErrorResponse",
    "PipelineDetail",
    "PipelineSummary",
    "PredictBatchResponse",
    "PredictResponse",
    "PromoteRequest",
    "Readiness",
    "RollbackRequest",
    "TransitionResponse",
    "predict_request_schema",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldProblem(BaseModel):
    field: str = Field(description="Where: features.NAME, instances.INDEX.NAME or (body).")
    problem: str
    got: str | None = None


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable error code, e.g. invalid_input, pipeline_not_found.")
    message: str
    hint: str | None = None
    fields: list[FieldProblem] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class PredictResponse(BaseModel):
    request_id: str
    pipeline: str
    version: int
    prediction: float | str | None = Field(
        description="The predicted number (a classifier: the probability of the positive class);"
        " a multiclass classifier: the most probable class. null only if the fallback gave a"
        " non-number."
    )
    probabilities: dict[str, float] | None = Field(
        default=None, description="A multiclass classifier only: each class's probability."
    )
    model: str = Field(description="The segment whose model answered, or __fallback__.")
    fallback: bool
    unseen: list[str] = Field(
        description="Categorical features whose value training never saw (empty when none);"
        " answered as the version's serving.unseen_categories says."
    )


class PredictBatchResponse(BaseModel):
    request_id: str = Field(description="Row i is captured as REQUEST_ID:i.")
    pipeline: str
    version: int
    predictions: list[float | str | None] = Field(
        description="One per instance, as PredictResponse.prediction."
    )
    probabilities: list[dict[str, float]] | None = Field(
        default=None, description="A multiclass classifier only: each class's probability."
    )
    models: list[str]
    fallback: list[bool]
    unseen: list[list[str]] = Field(
        description="Per row, the categorical features whose value training never saw."
    )


def predict_request_schema() -> dict[str, Any]:
    """The body of POST /v1/pipelines/{name}/predict. The features depend on the version in
    production: GET /v1/pipelines/{name} lists them."""
    row = {
        "type": "object",
        "description": "Every feature of the production version (and its segment column):"
        " numbers or null for numeric features, strings or null for categorical ones.",
        "additionalProperties": {"type": ["number", "string", "null"]},
    }
    return {
        "oneOf": [
            {
                "type": "object",
                "title": "One row",
                "properties": {"features": row},
                "required": ["features"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "title": "A batch",
                "properties": {
                    "instances": {
                        "type": "array",
                        "items": row,
                        "minItems": 1,
                        "maxItems": MAX_INSTANCES,
                    }
                },
                "required": ["instances"],
                "additionalProperties": False,
            },
        ]
    }


class FeatureInfo(BaseModel):
    name: str
    kind: Literal["numeric", "categorical", "segment"]
    dtype: str
    categories: list[str] | None = None


class VersionInfo(BaseModel):
    version: int
    manifest_digest: str
    segments: list[str]
    routed_to_fallback: list[str]
    capture_sample_rate: float
    loaded_at: str
    classes: list[str] | None = Field(
        default=None,
        description="A classifier's labels when its target is not 0/1: with more than two, the"
        " predict answer is the most probable one and each one's probability.",
    )


class ReloadError(BaseModel):
    version: int
    message: str
    at: str


class PipelineSummary(BaseModel):
    name: str
    production: int | None = Field(description="The version that answers here.")
    registry_production: int | None = Field(description="The registry's production version.")
    canary: int | None = Field(
        default=None, description="The canary version that answers canary_share of requests."
    )
    canary_share: float | None = Field(default=None, description="None when no canary serves.")
    shadows: list[int]
    last_reload_error: ReloadError | None


class PipelineDetail(BaseModel):
    name: str
    production: VersionInfo | None
    registry_production: int | None
    canary: VersionInfo | None = Field(
        default=None, description="The canary loaded here: it answers canary_share of requests."
    )
    canary_share: float | None = Field(
        default=None, description="The share of requests the canary answers (None: no canary)."
    )
    registry_canary: int | None = Field(
        default=None, description="The registry's canary version (it may have been refused)."
    )
    shadows: list[VersionInfo]
    registry_shadows: list[int]
    segment_column: str | None
    features: list[FeatureInfo]
    last_reload_error: ReloadError | None
    reload_errors: list[ReloadError]


class PromoteRequest(_Strict):
    version: int = Field(ge=1, le=2**31 - 1)
    reason: str | None = Field(default=None, max_length=2000)


class RollbackRequest(_Strict):
    reason: str | None = Field(default=None, max_length=2000)


class TransitionResponse(BaseModel):
    pipeline: str
    action: str
    version: int
    stage: str
    previous_stage: str
    from_version: int | None
    changed: bool
    message: str


class Readiness(BaseModel):
    ready: bool
    missing: list[str]
    registry_error: str | None = None
    capture_error: str | None = Field(
        default=None,
        description="Why captures are not being written now; predictions are still answered,"
        " so it does not make the server unready.",
    )
