"""Screenshot of the /status page of a running stack, for the README (docs/status.png).

    python bench/status_screenshot.py          # starts `ratesvc run --sim` on a free port itself
    python bench/status_screenshot.py --url http://127.0.0.1:8000/status   # a stack you run

`make status-screenshot` runs the first form with the venv's Python. Waits, in headless Chromium
(testkit.browser), until the page shows both exchangers' eight values, the serving exchanger, both
sources and live streams, then writes a full-page PNG. Nothing from tests/ is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# pylint: disable=wrong-import-position
from ratesvc.embedded import free_port  # noqa: E402
from testkit.browser import Browser  # noqa: E402
from testkit.procs import Daemon  # noqa: E402

START_TIMEOUT_S = 120.0
READY = (
    "document.querySelectorAll('#rates td[data-value]:not([data-value=\"\"])').length === 16"
    " && document.querySelectorAll('#sources tr[data-state]').length === 2"
    " && document.getElementById('serving').dataset.exchanger !== ''"
    " && document.getElementById('connection').dataset.live === 'true'"
)


def shoot(url: str, out: Path, workdir: Path, *, width: int, height: int) -> None:
    """Open `url`, wait until the page is filled in, write the PNG to `out`."""
    with Browser.launch(workdir, width=width, height=height) as browser:
        browser.navigate(url)
        browser.wait_for(READY, timeout_s=60, what="the page filled in")
        out.write_bytes(browser.screenshot())
        foreign = [u for u in browser.recorded.requests if not u.startswith(url.rsplit("/", 1)[0])]
        if foreign or browser.recorded.console_errors:
            raise RuntimeError(
                f"foreign requests {foreign}, errors {browser.recorded.console_errors}"
            )


def serving_binance(port: int) -> bool:
    """`ratesvc run --sim` answers /v2/courses with Binance's eight values."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/v2/courses", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json()["exchanger"] == "binance"


def with_own_stack(out: Path, workdir: Path, *, width: int, height: int) -> None:
    """Start `ratesvc run --sim` on a free port, take the screenshot, stop it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DATA_DIR=str(workdir / "data"), COLLECTOR_METRICS_PORT="0")
    env.update(PERSISTER_METRICS_PORT="0", COINGECKO_POLL_INTERVAL_S="5")
    env.update(COINGECKO_ACTIVE_POLL_INTERVAL_S="5")
    env.update(COINGECKO_CALLS_PER_MONTH="100000000")  # the simulator has no quota
    run = Daemon.ratesvc("run", ["run", "--sim", "--port", str(port)], env=env, workdir=workdir)
    run.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not serving_binance(port):
            if time.monotonic() > deadline or not run.alive:
                raise RuntimeError(f"ratesvc run --sim did not serve:\n{run.tail(3000)}")
            time.sleep(0.5)
        shoot(f"http://127.0.0.1:{port}/status", out, workdir, width=width, height=height)
    finally:
        run.stop(timeout_s=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="the page of a running stack (default: start one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "status.png")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="status-shot-") as scratch:
        workdir = Path(scratch)
        if args.url:
            shoot(args.url, args.out, workdir, width=args.width, height=args.height)
        else:
            with_own_stack(args.out, workdir, width=args.width, height=args.height)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
