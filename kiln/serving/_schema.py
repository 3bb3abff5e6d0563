"""The request body of one model version: a pydantic TypeAdapter built from its feature schema.

A body is ``{"features": {...}}`` (one row) or ``{"instances": [{...}, ...]}`` (a batch). What a
row may hold is the rule of ``kiln.pipeline.rows`` (the one batch scoring applies too): every
feature of the version, and its segment column even when that is not a feature; numeric
features take a finite number or null, categorical ones a string (of at most the version's
``serving.max_text_length`` characters) or null; no other key is allowed. The bytes are
validated by ``validate_json`` in one pass (no ``json.loads``). Under the version's
``unseen_categories: reject`` policy a categorical value never seen in training is refused too
(422 ``unseen_category``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, NotRequired, Required

import pyarrow as pa
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from kiln.pipeline.features import FeatureSchema, FeatureSpec
from kiln.pipeline.rows import (
    EXPECTED,
    MAX_TEXT_LENGTH,
    ColumnKind,
    ColumnRule,
    UnseenPolicy,
    known_categories,
    row_rules,
    too_long,
)
from kiln.serving._errors import ApiError

__all__ = ["MAX_INSTANCES", "RequestSchema"]

MAX_INSTANCES = 10_000
_SHOWN = 20
_FORBID = ConfigDict(extra="forbid")
_SHAPE = 'send {"features": {...}} for one row or {"instances": [{...}, ...]} for a batch'


def _bool_as_number(value: Any) -> Any:
    return float(value) if isinstance(value, bool) else value


def _integral(value: float | None) -> float | int | None:
    """Integers stay integers, so that a numeric segment column routes as training named it."""
    return int(value) if value is not None and value.is_integer() else value


def _int_as_text(value: Any) -> Any:
    return str(value) if type(value) is int else value


_Number = Annotated[float, Strict(), AllowInfNan(False)]
_Text = Annotated[str, Strict()]
_KINDS: dict[ColumnKind, Any] = {
    "number": _Number | None,
    "flag": Annotated[_Number | None, BeforeValidator(_bool_as_number)],
    "text": _Text | None,
    "segment": Annotated[_Text | None, BeforeValidator(_int_as_text)],
}
_ARROW: dict[ColumnKind, pa.DataType] = {
    "number": pa.float64(),
    "flag": pa.float64(),
    "text": pa.string(),
    "segment": pa.string(),
}
"""What each kind of value is once validated, as the capture stores it typed (an integral
numeric segment column: int64, as it routes; a row with a fraction there goes as JSON)."""


class RequestSchema:
    """Validates request bodies of one version; ``parse`` returns the rows and whether the
    body was a batch, or raises ApiError (400 bad JSON, 413 too many rows, 422 bad fields)."""

    def __init__(
        self,
        schema: FeatureSchema,
        segment_column: str | None,
        *,
        max_instances: int,
        unseen: UnseenPolicy = "accept",
        max_text: int = MAX_TEXT_LENGTH,
    ) -> None:
        self.max_instances = max_instances
        self.max_text = max_text
        rules = row_rules(schema, segment_column, max_text=max_text)
        fields: dict[str, Any] = {rule.name: Required[_kind(rule)] for rule in rules}
        self.names: tuple[str, ...] = tuple(fields)
        self.capture_type = pa.struct(
            [(r.name, pa.int64() if r.integral else _ARROW[r.kind]) for r in rules]
        )
        """A validated row's keys and types: how the capture stores its features."""
        self._problems = {rule.name: EXPECTED[rule.kind] for rule in rules}
        self._limits = {r.name: r.max_length for r in rules if r.max_length is not None}
        self._categorical = (
            [r.spec for r in rules if r.spec is not None and r.spec.kind == "categorical"]
            if unseen == "reject"
            else []
        )
        row = with_config(_FORBID)(TypedDict("Features", fields))  # type: ignore[operator]
        batch = Annotated[list[row], Field(min_length=1, max_length=max_instances)]  # type: ignore[valid-type]
        body = with_config(_FORBID)(
            TypedDict(  # type: ignore[operator]
                "PredictRequest", {"features": NotRequired[row], "instances": NotRequired[batch]}
            )
        )
        self._adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(body)

    def parse(self, body: bytes) -> tuple[list[dict[str, Any]], bool]:
        refusal: ApiError | None = None
        try:
            parsed = self._adapter.validate_json(body)
        except ValidationError as e:
            refusal = self._refusal(e)  # copies of small strings: no input, no frame, no context
        if refusal is not None:
            raise refusal
        features = parsed.get("features")
        instances = parsed.get("instances")
        if features is not None and instances is None:
            if self._categorical:
                self._refuse_unseen([features], "features")
            return [features], False
        if instances is not None and features is None:
            if self._categorical:
                self._refuse_unseen(instances, "instances")
            return instances, True
        which = "both" if features is not None else "neither"
        raise ApiError(
            422,
            "invalid_input",
            f'the body has {which} of "features" and "instances": {_SHAPE}',
            fields=[{"field": "(body)", "problem": _SHAPE}],
        )

    def _refuse_unseen(self, rows: list[dict[str, Any]], where: str) -> None:
        """Under the ``reject`` policy: 422 naming each unseen value and the known ones."""
        fields: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            for spec in self._categorical:
                if not _seen(spec, row[spec.name]):
                    field = (
                        f"features.{spec.name}"
                        if where == "features"
                        else f"instances.{i}.{spec.name}"
                    )
                    fields.append(
                        {
                            "field": field,
                            "problem": f"unseen category (known: {known_categories(spec)})",
                            "got": _short(row[spec.name]),
                        }
                    )
        if not fields:
            return
        shown = "; ".join(f"{f['field']}: {f['got']}" for f in fields[:5])
        more = f" (and {len(fields) - 5} more)" if len(fields) > 5 else ""
        raise ApiError(
            422,
            "unseen_category",
            f"{len(fields)} categorical value(s) never seen in training: {shown}{more}",
            hint="this version refuses unseen categories (serving.unseen_categories: reject);"
            " GET /v1/pipelines/{name} lists the known categories",
            fields=fields[:_SHOWN],
        )

    def _refusal(self, e: ValidationError) -> ApiError:
        errors = e.errors(include_url=False, include_context=False)
        first = errors[0]
        if first["type"] == "json_invalid":
            return ApiError(
                400,
                "invalid_json",
                f"the body is not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}",
                hint=_SHAPE,
            )
        if first["type"] == "too_long" and tuple(first["loc"]) == ("instances",):
            return ApiError(
                413,
                "too_many_instances",
                f"a batch holds at most {self.max_instances} instances",
                hint="split the batch into several requests",
                fields=[{"field": "instances", "problem": f"at most {self.max_instances} rows"}],
            )
        fields = [self._field(err) for err in errors]
        shown = "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:5])
        more = f" (and {len(fields) - 5} more)" if len(fields) > 5 else ""
        return ApiError(
            422,
            "invalid_input",
            f"{len(fields)} problem(s) in the request: {shown}{more}",
            hint="GET /v1/pipelines/{name} lists the features, their kinds and categories",
            fields=fields[:_SHOWN],
        )

    def _field(self, err: Any) -> dict[str, Any]:
        loc: Sequence[str | int] = err["loc"]
        field = ".".join(str(x) for x in loc) or "(body)"
        kind = err["type"]
        name = loc[-1] if loc else None
        in_row = len(loc) >= 2 and loc[0] in ("features", "instances")
        if kind == "missing" and in_row:
            problem = "missing: every feature is required (send null when it is unknown)"
        elif kind == "missing":
            problem = "missing"
        elif kind == "extra_forbidden" and in_row:
            problem = f"unknown feature; expected {_listed(self.names)}"
        elif kind == "extra_forbidden":
            problem = f"unknown key; {_SHAPE}"
        elif kind in ("float_type", "finite_number", "float_parsing", "string_type") and in_row:
            problem = self._problems.get(str(name), str(err["msg"]))
        elif kind == "string_too_long" and in_row and str(name) in self._limits:
            got = err.get("input")
            size = f"; got {len(got):,}" if isinstance(got, str) else ""
            problem = too_long(self._limits[str(name)]) + size
        elif kind in ("float_type", "finite_number", "float_parsing"):
            problem = EXPECTED["number"]
        elif kind == "string_type":
            problem = EXPECTED["text"]
        elif kind in ("dict_type", "typed_dict_type"):
            problem = "expected a JSON object"
        elif kind == "list_type":
            problem = "expected a JSON array of rows"
        elif kind == "too_short":
            problem = "expected at least one row"
        else:
            problem = str(err["msg"])
        out: dict[str, Any] = {"field": field, "problem": problem}
        if kind not in ("missing", "extra_forbidden"):
            out["got"] = _short(err.get("input"))
        return out


def _kind(rule: ColumnRule) -> Any:
    """The pydantic type of one column of a row."""
    kind = _KINDS[rule.kind]
    if rule.max_length is not None:
        text = Annotated[str, Strict(), StringConstraints(max_length=rule.max_length)]
        kind = (
            Annotated[text | None, BeforeValidator(_int_as_text)]
            if rule.kind == "segment"
            else text | None
        )
    if rule.integral:
        kind = Annotated[kind, AfterValidator(_integral)]
    return kind


def _seen(spec: FeatureSpec, value: Any) -> bool:
    return value is None or spec.index_of(value) is not None


def _listed(names: Sequence[str]) -> str:
    if len(names) <= 30:
        return "one of " + ", ".join(names)
    return "one of " + ", ".join(names[:30]) + f", ... ({len(names)} features)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
