"""`ratesvc run --sim`: the bundled market simulator as one more child of `ratesvc run`.

Owns what the offline run adds: the simulator's ports (its defaults when free), the settings that
point the collector at it (the values docker-compose.sim.yml uses), the bounded wait until it
answers, where simulated data is kept (apart from real data) and what the banner says about it.
The simulator itself is `ratesvc sim` (ratesvc.sim); this module never imports it.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ratesvc.embedded import LOCALHOST, free_port

# `ratesvc sim`'s defaults (ratesvc.sim.server), used when both are free.
DEFAULT_BINANCE_PORT = 18443
DEFAULT_COINGECKO_PORT = 18444
START_TIMEOUT_S = 30.0
# Simulated prices never mix with real history: the embedded servers live under DATA_DIR/sim.
DATA_SUBDIR = "sim"
# The simulator has no call quota: CoinGecko polls often so both exchangers stay fresh, and the
# quota says so (a 5 s cadence would not fit the Demo plan's 10,000 calls a month and is refused
# at start). The values of docker-compose.sim.yml; a value set in the environment wins.
CADENCES = {
    "COINGECKO_POLL_INTERVAL_S": "5",
    "COINGECKO_ACTIVE_POLL_INTERVAL_S": "5",
    "COINGECKO_STALE_AFTER_S": "60",
    "COINGECKO_CALLS_PER_MONTH": "100000000",
}


def sim_data_dir(data_dir: Path) -> Path:
    """Where an offline run keeps its embedded Redis and Postgres."""
    return data_dir / DATA_SUBDIR


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class SimPorts:
    """The simulator's two listeners: Binance (and the control API) and CoinGecko."""

    binance: int
    coingecko: int

    @classmethod
    def pick(cls, *, prefer_defaults: bool = True) -> SimPorts:
        """The default ports when both are free (and preferred), else two free ones."""
        defaults = cls(DEFAULT_BINANCE_PORT, DEFAULT_COINGECKO_PORT)
        if prefer_defaults and _port_free(defaults.binance) and _port_free(defaults.coingecko):
            return defaults
        binance = free_port()
        coingecko = free_port()
        while coingecko == binance:
            coingecko = free_port()
        return cls(binance, coingecko)

    @property
    def control_url(self) -> str:
        """Root of the simulator's control API (served on the Binance port)."""
        return f"http://{LOCALHOST}:{self.binance}/_sim"

    def args(self) -> list[str]:
        """`ratesvc` arguments that start this simulator."""
        return ["sim", "--binance-port", str(self.binance), "--coingecko-port", str(self.coingecko)]

    def env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Settings pointing the collector here: URLs always, cadences unless `environ` has them."""
        env = {name: value for name, value in CADENCES.items() if name not in environ}
        env.update(
            BINANCE_WS_URL=f"ws://{LOCALHOST}:{self.binance}",
            BINANCE_REST_URL=f"http://{LOCALHOST}:{self.binance}",
            COINGECKO_API_URL=f"http://{LOCALHOST}:{self.coingecko}/api/v3",
        )
        return env

    def answers(self) -> bool:
        """True when the control API answers."""
        try:
            with urllib.request.urlopen(f"{self.control_url}/state", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait(
        self,
        *,
        alive: Callable[[], bool],
        stopping: Callable[[], bool],
        timeout_s: float = START_TIMEOUT_S,
    ) -> bool:
        """Poll until the simulator answers (True), or its process exits or we stop (False).

        Raises TimeoutError when it neither answers nor exits within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.answers():
                return True
            if not alive() or stopping():
                return False
            time.sleep(0.1)
        raise TimeoutError(f"the simulator did not answer on {self.control_url} in {timeout_s}s")

    def banner(self) -> list[str]:
        """What `ratesvc run --sim` prints about the simulator: where it is, how to play with it."""
        url = self.control_url
        price = """'{"assets": {"BTC": "71000"}}'"""
        fault = """'{"target": "binance_ws", "kind": "disconnect"}'"""
        return [
            f"  simulator {url}/state  (offline market: Binance :{self.binance},"
            f" CoinGecko :{self.coingecko})",
            f"    move BTC on both exchanges   curl -X POST {url}/prices -d {price}",
            f"    drop Binance's websockets    curl -X POST {url}/fault -d {fault}",
            f"    clear every fault            curl -X POST {url}/clear -d '{{}}'",
            "    (stalls, 429s, garbage, slowness: see the control API in ratesvc/sim/control.py)",
        ]
