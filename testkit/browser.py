"""A headless Chromium driven over the Chrome DevTools Protocol (CDP): no Selenium, no Playwright.

`Browser` launches Debian's `chromium` in a fresh profile on a DevTools port the browser picks
itself (read back from ``<profile>/DevToolsActivePort``), attaches to its page target over a
websocket (the `websockets` package, synchronous client) and offers what the tests and the
screenshot script need: navigate, evaluate JavaScript and read the DOM, wait for a condition by
polling it against a deadline, screenshot, set the viewport. Every request the page makes
(Network.requestWillBeSent), every failed load, console error, uncaught exception and CSP
violation is recorded. The browser always dies with the context (its whole process group).

    with Browser.launch(tmp_dir) as browser:
        browser.navigate("http://127.0.0.1:8000/status")
        browser.wait_for("document.querySelector('#serving').textContent !== '—'")
        png = browser.screenshot()

Used by tests/e2e/test_status_browser.py and bench/status_screenshot.py.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from testkit.procs import Daemon

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-debugging-port=0",
)
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0


class BrowserError(RuntimeError):
    """The browser did not start, a CDP call failed, or a wait ran out."""


def find_chromium() -> str | None:
    """The path of a Chromium-family browser on PATH (None when there is none)."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Recorded:
    """What the page did, as CDP events report it."""

    requests: list[str] = field(default_factory=list)  # every URL requested, in order
    failures: list[dict[str, Any]] = field(default_factory=list)  # Network.loadingFailed params
    console_errors: list[str] = field(default_factory=list)  # console errors, exceptions, CSP


class Browser:
    """One headless Chromium with one page, attached over CDP (see the module docstring)."""

    def __init__(self, daemon: Daemon, profile: Path, socket: ClientConnection) -> None:
        self.daemon, self.profile, self.socket = daemon, profile, socket
        self.recorded = Recorded()
        self._ids = itertools.count(1)

    @classmethod
    @contextlib.contextmanager
    def launch(
        cls, workdir: Path, *, width: int = 1200, height: int = 900, binary: str | None = None
    ) -> Iterator[Browser]:
        """Start Chromium in a fresh profile under `workdir`, attach, yield; always kill it."""
        binary = binary or find_chromium()
        if binary is None:
            raise BrowserError(f"no Chromium found (looked for {', '.join(CANDIDATES)})")
        profile = workdir / "chromium-profile"
        shutil.rmtree(profile, ignore_errors=True)
        profile.mkdir(parents=True)
        args = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        daemon = Daemon("chromium", [*args, "about:blank"], env=os.environ, workdir=workdir)
        daemon.start()
        socket: ClientConnection | None = None
        try:
            port = _devtools_port(daemon, profile)
            socket = connect(_page_socket_url(port), max_size=64 * 2**20, open_timeout=10)
            browser = cls(daemon, profile, socket)
            for domain in ("Page", "Runtime", "Network", "Log"):
                browser.call(f"{domain}.enable")
            browser.set_viewport(width, height)
            yield browser
        finally:
            if socket is not None:
                socket.close()
            daemon.stop(timeout_s=5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(daemon.pid, signal.SIGKILL)  # helpers (zygote, GPU) left behind
            shutil.rmtree(profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol
    def call(self, method: str, timeout_s: float = CALL_TIMEOUT_S, **params: Any) -> dict:
        """Send one CDP command and return its result; events met meanwhile are recorded."""
        ident = next(self._ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"{method}: no answer in {timeout_s} s")
            message = json.loads(self.socket.recv(timeout=remaining))
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self._record(message["method"], message.get("params", {}))

    def _record(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            self.recorded.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            self.recorded.failures.append(params)
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.recorded.console_errors.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.recorded.console_errors.append("console: " + " ".join(args))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.recorded.console_errors.append(f"{entry.get('source')}: {entry.get('text')}")

    # ------------------------------------------------------------------ page
    def set_viewport(self, width: int, height: int, *, scale: float = 1.0) -> None:
        """The page's layout viewport (CSS pixels) and device pixel ratio."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=scale,
            mobile=width < 600,
        )

    def navigate(self, url: str, *, timeout_s: float = 30.0) -> None:
        """Load `url` and wait until the document has loaded."""
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout_s=timeout_s, what="page load")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (as JSON; promises awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"evaluating {expression!r}: {text}")
        return result["result"].get("value")

    def wait_for(
        self, expression: str, *, timeout_s: float = 30.0, what: str = "", poll_s: float = 0.1
    ) -> Any:
        """Evaluate `expression` until it is truthy and return that value; BrowserError after
        `timeout_s` (with the last value seen)."""
        deadline = time.monotonic() + timeout_s
        value: Any = None
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise BrowserError(f"timed out waiting for {what or expression} (last: {value!r})")
            time.sleep(poll_s)  # the poll period of a condition wait, not a synchronisation

    def screenshot(self, *, full_page: bool = True) -> bytes:
        """A PNG of the page (the whole document when `full_page`)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
            )
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])


def _devtools_port(daemon: Daemon, profile: Path) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if marker.is_file():
            lines = marker.read_text(encoding="ascii").split()
            if lines:
                return int(lines[0])
        if not daemon.alive:
            raise BrowserError(f"chromium exited at start:\n{daemon.tail()}")
        time.sleep(0.05)
    raise BrowserError(f"chromium wrote no DevToolsActivePort in {START_TIMEOUT_S} s")


def _page_socket_url(port: int) -> str:
    targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
    pages = [t for t in targets if t.get("type") == "page"]
    if not pages:
        raise BrowserError(f"no page target in {targets}")
    return pages[0]["webSocketDebuggerUrl"]
