"""Kiln's one error tree.

Every error a user can cause names the object at fault (file:line, field, column, segment,
version, URL) and says what to do next. The CLI prints ``str(error)`` and exits with
``error.exit_code``; nothing below the CLI prints or exits.

    KilnError
     ├── ConfigError            kiln.yaml is not valid (file:line:column, field, expected, hint)
     ├── DataError              the data cannot be used
     │    ├── SourceError       unreachable source, failing query, empty result
     │    ├── SchemaError       missing target/feature/segment column, nulls in the segment column
     │    └── DataCheckError    a declared data check failed (carries the report)
     ├── TrainingError          a segment's training failed, or the whole fan-out did
     ├── IntegrityError         an artifact or package does not match its recorded SHA-256
     ├── NotFoundError          no such run, pipeline or version
     ├── StoreError             the metadata or artifact store is unreachable or inconsistent
     │    └── ConcurrentRunError another run of the same pipeline holds the lock
     ├── ExecutorError          an executor could not start or lost its workers
     └── AuthError              a write without the admin token, or a wrong token

Exit codes of the `kiln` command: 0 success; 1 internal error; 2 ConfigError (or a bad command
line); 3 DataError; 4 TrainingError; 5 IntegrityError; 6 NotFoundError; 7 StoreError; 8
ExecutorError; 9 AuthError; 10 ``EXIT_BLOCKED``: `kiln run` registered its version but the
version's gates blocked it (an outcome, not an error: the scheduler does not retry it, a CI
job can fail on it); 130 interrupted.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EXIT_BLOCKED",
    "AuthError",
    "ConcurrentRunError",
    "ConfigError",
    "DataCheckError",
    "DataError",
    "ExecutorError",
    "ForbiddenError",
    "IntegrityError",
    "KilnError",
    "NotFoundError",
    "NotifyError",
    "SchemaError",
    "SourceError",
    "StoreError",
    "TrainingError",
]


EXIT_BLOCKED = 10
"""`kiln run`: the version was registered, but its gates blocked it."""


class KilnError(Exception):
    """Base of every error Kiln raises on purpose.

    ``message`` says what is wrong and where; ``hint`` says what to do about it.
    """

    exit_code = 1
    code = "kiln_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class ConfigError(KilnError):
    """kiln.yaml (or a setting) is invalid. ``problems`` lists each one with its location."""

    exit_code = 2
    code = "config_error"

    def __init__(
        self, message: str, *, hint: str | None = None, problems: list[str] | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or []

    def __str__(self) -> str:
        lines = [self.message, *(f"  {p}" for p in self.problems)]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class DataError(KilnError):
    exit_code = 3
    code = "data_error"


class SourceError(DataError):
    code = "source_error"


class SchemaError(DataError):
    code = "schema_error"


class DataCheckError(DataError):
    """A declared data check failed. ``report`` holds one entry per failed check."""

    code = "data_check_failed"

    def __init__(
        self, message: str, *, report: list[dict[str, Any]], hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.report = report

    def __str__(self) -> str:
        lines = [self.message]
        for item in self.report:
            examples = item.get("failing_examples") or []
            shown = ", ".join(repr(e) for e in examples[:5])
            lines.append(
                f"  column {item['column']!r}: check {item['check']} failed"
                f" (expected {item['expected']}, observed {item['observed']})"
                + (f"; failing examples: {shown}" if shown else "")
            )
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class TrainingError(KilnError):
    exit_code = 4
    code = "training_error"


class IntegrityError(KilnError):
    exit_code = 5
    code = "integrity_error"


class NotFoundError(KilnError):
    exit_code = 6
    code = "not_found"


class StoreError(KilnError):
    exit_code = 7
    code = "store_error"


class ConcurrentRunError(StoreError):
    code = "concurrent_run"


class ExecutorError(KilnError):
    exit_code = 8
    code = "executor_error"


class AuthError(KilnError):
    exit_code = 9
    code = "not_authorized"


class ForbiddenError(AuthError):
    """Who is asking is known, and may not do this (a viewer's write, another team's pipeline)."""

    code = "forbidden"


class NotifyError(KilnError):
    """A channel (a webhook) did not take a notification; the outbox retries it later."""

    code = "notify_failed"
