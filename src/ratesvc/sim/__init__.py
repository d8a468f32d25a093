"""Local market simulator speaking the Binance (websocket + REST) and CoinGecko protocols.

`run_sim` serves it for `ratesvc sim`; `running_sim` starts it in-process for tests. The control
API is documented in `ratesvc.sim.control`.
"""

from ratesvc.sim.options import SimOptions
from ratesvc.sim.server import (
    DEFAULT_BINANCE_PORT,
    DEFAULT_COINGECKO_PORT,
    SimHandle,
    run_sim,
    running_sim,
)
from ratesvc.sim.state import MarketState

__all__ = [
    "DEFAULT_BINANCE_PORT",
    "DEFAULT_COINGECKO_PORT",
    "MarketState",
    "SimHandle",
    "SimOptions",
    "run_sim",
    "running_sim",
]
