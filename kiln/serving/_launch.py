"""``serve``: run the server under uvicorn, in one process or several workers.

Workers are separate processes (uvicorn spawns them), so the settings travel as ``KILN_*``
environment variables and each worker builds its app with ``app_from_env``. The registry is the
only state the workers share: each one follows it on its own, so N workers (or N replicas on
N machines) serve the same versions within ``reload_seconds`` of a change. Metrics use
prometheus multiprocess mode in a fresh folder, so ``/metrics`` of any worker sums them all.
"""

from __future__ import annotations

import os
import shutil

import uvicorn

from kiln.serving._metrics import multiprocess_dir
from kiln.settings import Settings, settings_env

__all__ = ["serve", "settings_env"]

_FACTORY = "kiln.serving._app:app_from_env"
_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Serve until SIGTERM or SIGINT; then every worker drains shadow and flushes captures."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    for key, value in settings_env(settings).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    metrics_dir = None
    if workers > 1:
        metrics_dir = multiprocess_dir()
        os.environ[_MULTIPROC] = metrics_dir
    try:
        uvicorn.run(
            _FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers if workers > 1 else None,
            lifespan="on",
            access_log=False,
            log_level=log_level,
            timeout_graceful_shutdown=30,
            server_header=False,
        )
    finally:
        if metrics_dir is not None:
            os.environ.pop(_MULTIPROC, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)
