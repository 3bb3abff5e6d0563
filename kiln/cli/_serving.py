"""Serving and what it leaves behind: the prediction server, queries over captured traffic,
and the migration of the metadata database."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from kiln.cli._common import _num, _settings, _stores, out


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    reload_seconds: Annotated[
        float | None, typer.Option(help="How often to re-read the registry.")
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(
            min=1024,
            help="Largest predict body, in bytes (413 beyond it; default 8 MiB,"
            " KILN_MAX_BODY_BYTES).",
        ),
    ] = None,
) -> None:
    """Serve predictions of every pipeline's production version (shadow, capture, metrics)."""
    from kiln.serving import serve as run_server

    settings = _settings(ctx, reload_seconds=reload_seconds, max_body_bytes=max_body_bytes)
    _stores(ctx).close()  # fail here, with a clear message, if the registry is unreachable
    out.print(f"serving on http://{host}:{port} ({workers} worker(s)); OpenAPI at /docs")
    run_server(settings, host=host, port=port, workers=workers)


def capture_query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="SQL over the view `captures`.")],
    limit: Annotated[int, typer.Option(help="Rows to print at most.")] = 50,
) -> None:
    """Query captured traffic with DuckDB, e.g. `SELECT pipeline, count(*) FROM captures
    GROUP BY 1`.

    The view `captures`, one row per captured request (per row of a batch):
    - request_id, ts (UTC), pipeline, date, version, stage (production, canary, shadow)
    - segment, model, fallback, prediction, latency_ms, error (text)
    - status: the HTTP status, 200 answered, else the refusal's (null in older files)
    - inputs: the answered request's features, typed, e.g. `avg(inputs.distance)`
    - features: JSON text of features not stored typed (refused requests, older files)
    - label, probabilities (multiclass), unseen (features with a value unseen in training)
    """
    from kiln.stores.capture import query_captures

    table = query_captures(_settings(ctx).artifact_root, sql)
    t = Table(*table.column_names)
    for row in table.slice(0, limit).to_pylist():
        t.add_row(*(_cell(v) for v in row.values()))
    out.print(t)
    if table.num_rows > limit:
        out.print(f"... {table.num_rows - limit} more rows (--limit)")


def _cell(v: Any) -> str:
    return _num(v) if isinstance(v, float) else str(v)


def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the metadata database to the current schema."""
    settings = _settings(ctx)
    stores = _stores(ctx, upgrade=True)
    stores.close()
    out.print(f"[green]✓[/] metadata database at {_masked(settings.metadata_url)} is current")


def _masked(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
