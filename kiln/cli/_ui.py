"""`kiln ui`: the management web pages and JSON API in one process (not the prediction path)."""

from __future__ import annotations

import errno
import signal
import socket
import threading
import webbrowser
from typing import Annotated

import typer

from kiln.cli._common import _settings, _sigterm, _stores, err, out
from kiln.errors import KilnError


def _port_free(host: str, port: int) -> None:
    """Refuse, with a clear message, a port that another process listens on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be used ({e.strerror})"
            raise KilnError(
                f"port {port} on {host} {why}",
                hint=f"stop what listens there, or pick another: `kiln ui --port {port + 1}`",
            ) from None


def ui(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the catalogue in a web browser.")
    ] = False,
) -> None:
    """Serve the web pages and the management API (OpenAPI at /api/docs) until Ctrl-C.

    Sign in with a user (`kiln users add NAME --role admin --password-stdin`) and its password
    or one of its tokens; the API also takes KILN_ADMIN_TOKEN as a bearer token (the bootstrap
    admin has no page session: add a user with it first)."""
    import uvicorn

    from kiln.ui import create_app

    settings = _settings(ctx)
    _port_free(host, port)
    stores = _stores(ctx)  # fails here, with a clear message, if the registry is unreachable
    with stores.metadata.read() as uow:
        users = uow.users.list()
    if not users:
        err.print(
            "[yellow]warning:[/] no user exists yet, so nobody can sign in: add one with"
            " `kiln users add NAME --role admin --password-stdin --token $KILN_ADMIN_TOKEN`",
            highlight=False,
        )
    app = create_app(settings, stores)
    url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/"
    out.print(f"Kiln UI on {url} (API at {url}api/docs); Ctrl-C stops it", highlight=False)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    # uvicorn shuts down on SIGINT and SIGTERM, then raises the signal again for the handler that
    # was there before it: both end as a KeyboardInterrupt here, and `kiln ui` exits 0.
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        uvicorn.run(
            app, host=host, port=port, log_level="warning", access_log=False,
            server_header=False, timeout_graceful_shutdown=5,
        )  # fmt: skip
    except KeyboardInterrupt:
        pass
    finally:
        stores.close()
