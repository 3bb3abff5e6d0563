"""Open a page in Debian's headless Chromium and watch it through the DevTools protocol.

No browser driver package is installed (no Playwright, no Selenium), so this speaks the protocol
itself over aiohttp's WebSocket client: it records every request the *page* makes (the
browser's own update and time checks are not the page's and are not reported to it), every
uncaught script error, and evaluates expressions once the page has loaded. The browser comes
from Debian (`apt-get install chromium`); nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--remote-allow-origins=*",
]  # fmt: skip


@dataclass
class PageVisit:
    requests: list[str] = field(default_factory=list)
    """Every URL the page asked for, its own file included."""
    errors: list[str] = field(default_factory=list)
    """Uncaught exceptions and console errors of the page's scripts."""
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def network(self) -> list[str]:
        """What the page asked of anything but its own file and inline data."""
        return [u for u in self.requests if not u.startswith(("file:", "data:", "blob:"))]


def available() -> bool:
    return Path(CHROMIUM).exists()


def visit(url: str, probes: dict[str, str], *, ready: str, timeout: float = 60) -> PageVisit:
    """Load ``url``, wait until the JavaScript ``ready`` is true (bounded by ``timeout``), then
    evaluate each of ``probes`` (name -> JavaScript expression returning JSON-able values)."""
    profile = Path(tempfile.mkdtemp(prefix="kiln-chromium-"))
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port = _devtools_port(profile, proc, timeout)
        return asyncio.run(_visit(port, url, probes, ready, timeout))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with code {proc.returncode}")
        if marker.exists():
            first = marker.read_text().splitlines()
            if first and first[0].isdigit():
                return int(first[0])
        time.sleep(0.1)
    raise RuntimeError(f"chromium did not open its DevTools port within {timeout} s")


async def _visit(
    port: int, url: str, probes: dict[str, str], ready: str, timeout: float
) -> PageVisit:
    out = PageVisit()
    ids = itertools.count(1)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            pending: dict[int, asyncio.Future[Any]] = {}

            async def reader() -> None:
                async for msg in ws:
                    doc = json.loads(msg.data)
                    if "id" in doc and doc["id"] in pending:
                        pending.pop(doc["id"]).set_result(doc)
                    elif doc.get("method") == "Network.requestWillBeSent":
                        out.requests.append(doc["params"]["request"]["url"])
                    elif doc.get("method") == "Runtime.exceptionThrown":
                        out.errors.append(json.dumps(doc["params"]["exceptionDetails"])[:500])
                    elif doc.get("method") == "Log.entryAdded":
                        entry = doc["params"]["entry"]
                        if entry.get("level") == "error":
                            out.errors.append(f"{entry.get('url')}: {entry.get('text')}")

            async def call(method: str, **params: Any) -> Any:
                n = next(ids)
                pending[n] = asyncio.get_running_loop().create_future()
                await ws.send_json({"id": n, "method": method, "params": params})
                doc = await asyncio.wait_for(pending[n], timeout)
                if "error" in doc:
                    raise RuntimeError(f"{method}: {doc['error']}")
                return doc["result"]

            async def evaluate(expression: str) -> Any:
                result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
                if "exceptionDetails" in result:
                    raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
                return result["result"].get("value")

            task = asyncio.create_task(reader())
            for domain in ("Network", "Page", "Runtime", "Log"):
                await call(f"{domain}.enable")
            await call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            while not await evaluate(f"document.readyState === 'complete' && !!({ready})"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the page was not ready within {timeout} s: {ready}")
                await asyncio.sleep(0.2)
            out.values = {name: await evaluate(js) for name, js in probes.items()}
            task.cancel()
    return out
