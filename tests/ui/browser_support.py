"""Real pages in a real browser: Debian's Chromium (never downloaded) driven by Playwright,
against `kiln ui`'s app served by uvicorn on a free port. Every page a test visits is saved as
a screenshot in ``test-screenshots/`` at the repository's root (the note lists them)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-screenshots"


def available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


needs_chromium = pytest.mark.skipif(
    not available() and os.environ.get("KILN_REQUIRE_CHROMIUM", "") in ("", "0"),
    reason="needs Debian's chromium: apt-get install chromium (KILN_REQUIRE_CHROMIUM=1 in CI)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UiServer:
    """The app on a free port in a thread (uvicorn, as `kiln ui` runs it)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> UiServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError("the UI server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot of ``page`` as test-screenshots/NAME.png."""
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Any, base: str, name: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=secret]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
