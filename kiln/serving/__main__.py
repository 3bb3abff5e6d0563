"""``python -m kiln.serving --host H --port P --workers N [--home/--db/--artifacts/...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kiln.errors import ConfigError
from kiln.serving._launch import serve
from kiln.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kiln.serving", description="Run the Kiln prediction server (uvicorn)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument("--home", type=Path, help="folder of the embedded stores (.kiln)")
    parser.add_argument("--db", help="metadata database URL (KILN_DB_URL)")
    parser.add_argument("--artifacts", help="artifact store URL (KILN_ARTIFACTS_URL)")
    parser.add_argument("--reload-seconds", type=float, help="registry re-read interval")
    parser.add_argument(
        "--max-body-bytes", type=int, help="largest predict body (KILN_MAX_BODY_BYTES, 8 MiB)"
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    given: dict[str, Any] = {
        "home": args.home,
        "db_url": args.db,
        "artifacts_url": args.artifacts,
        "reload_seconds": args.reload_seconds,
        "max_body_bytes": args.max_body_bytes,
    }
    try:
        settings = load_settings(**{k: v for k, v in given.items() if v is not None})
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    serve(settings, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
