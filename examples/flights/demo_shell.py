"""What the flights demos share: the real `kiln` commands, printed as they run, a `kiln serve`
they start, wait for, ask which version it serves, and stop, and the closing cost table."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class KilnShell:
    def __init__(self, home: Path, port: int, pipeline: str, env: dict[str, str]) -> None:
        self.home = home
        self.port = port
        self.pipeline = pipeline
        self.env = {
            **os.environ,
            "KILN_HOME": str(home),
            "KILN_RELOAD_SECONDS": "1",
            "KILN_USAGE_FLUSH_SECONDS": "2",  # serving usage recorded in time for `kiln cost`
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            **env,
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.masked: dict[str, str] = {}
        """Secrets (tokens) printed as the name of a shell variable instead."""

    # -- commands -----------------------------------------------------------------------------
    def run(
        self, *args: str, check: bool = True, capture: bool = False, stdin: str | None = None
    ) -> tuple[int, str]:
        """Run `kiln ARGS` in HERE, printed first (secrets as their variable) and timed; its
        exit code and (with ``capture``) its standard output. ``stdin`` is piped in."""
        shown = " ".join(self.masked.get(a) or shlex.quote(a) for a in args)
        piped = "printf '%s\\n' \"$PASSWORD\" | " if stdin is not None else ""
        print(f"\n\033[1m$ {piped}kiln {shown}\033[0m", flush=True)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "kiln.cli", *args], env=self.env, cwd=HERE, check=False,
            stdout=subprocess.PIPE if capture else None, text=True,
            input=None if stdin is None else stdin + "\n",
        )  # fmt: skip
        print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)
        if check and done.returncode != 0:
            raise SystemExit(f"`kiln {shown}` failed with exit code {done.returncode}")
        return done.returncode, done.stdout or ""

    def cost(self) -> None:
        """`kiln cost`: what the demo's pipeline cost, from what Kiln measured while it ran
        (training tasks and steps, the server's CPU and memory, the bytes stored)."""
        self.say("What it cost: training, serving and storage, as measured (`kiln cost`)")
        time.sleep(2.5)  # the server records its usage every 2 s (KILN_USAGE_FLUSH_SECONDS)
        self.run("cost", "--pipeline", self.pipeline)

    def say(self, text: str) -> None:
        print(f"\n\033[1;34m== {text}\033[0m", flush=True)

    # -- the server ---------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self) -> None:
        print(f"\n\033[1m$ kiln serve --port {self.port} &\033[0m", flush=True)
        self.server = subprocess.Popen(
            [sys.executable, "-m", "kiln.cli", "serve", "--port", str(self.port)],
            env=self.env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise SystemExit("`kiln serve` exited; run it by hand to see why")
            try:
                with urllib.request.urlopen(self.url("/readyz"), timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise SystemExit("`kiln serve` did not become ready within 60 s")

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()  # SIGTERM: the server flushes its captures
            self.server.wait(timeout=30)

    def serving_version(self) -> int | None:
        with urllib.request.urlopen(self.url(f"/v1/pipelines/{self.pipeline}"), timeout=5) as r:
            info = json.loads(r.read())
        production = info.get("production") or {}
        version = production.get("version") if isinstance(production, dict) else None
        return int(version) if version is not None else None

    def wait_for_version(self, version: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.serving_version() == version:
                print(f"  the server now answers with v{version}")
                return
            time.sleep(0.25)
        raise SystemExit(f"the server did not switch to v{version} within 30 s")


def build(out: Path, until: str | None, *, quiet: bool = False) -> None:
    """`python build_warehouse.py --out OUT [--until DATE]`: the flights warehouse, printed."""
    cmd = [sys.executable, str(HERE / "build_warehouse.py"), "--out", str(out)]
    if until:
        cmd += ["--until", until]
    print(f"\n\033[1m$ python build_warehouse.py{' --until ' + until if until else ''}\033[0m")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if quiet else None)
