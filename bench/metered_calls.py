"""CoinGecko calls with one collector and with two (a hot standby), against the simulator.

    python bench/metered_calls.py [--seconds 40] [--cadence 5]

Starts `ratesvc sim` in process and an embedded Redis, runs `run_collector` (Binance and
CoinGecko, CoinGecko every `--cadence` s with an unlimited quota, as against the simulator) once
alone and once with a second collector beside it, and counts the simple/price calls the simulator
answered in `--seconds`, by collector (each sends its own API key).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path

from loguru import logger

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# pylint: disable=wrong-import-position
from ratesvc.connections import connect_redis  # noqa: E402
from ratesvc.embedded import EmbeddedRedis  # noqa: E402
from ratesvc.settings import Settings  # noqa: E402
from ratesvc.sim import SimHandle, running_sim  # noqa: E402
from ratesvc.sources.binance import BinanceOptions, BinanceSource  # noqa: E402
from ratesvc.sources.coingecko import CoinGeckoOptions, CoinGeckoSource  # noqa: E402
from ratesvc.workers.collector import run_collector  # noqa: E402


def sources(sim: SimHandle, key: str, cadence_s: float) -> list:
    """One collector's sources against the simulator."""
    binance = BinanceSource(
        BinanceOptions(_env_file=None, ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url)
    )
    coingecko = CoinGeckoSource(
        CoinGeckoOptions(
            _env_file=None,
            api_url=sim.coingecko_url,
            api_key=key,
            poll_interval_s=cadence_s,
            active_poll_interval_s=cadence_s,
            calls_per_month=100_000_000,
        )
    )
    return [binance, coingecko]


async def measure(redis_url: str, collectors: int, seconds: float, cadence_s: float) -> Counter:
    """Simple/price calls by collector during `seconds` with `collectors` running."""
    redis = await connect_redis(redis_url)
    await redis.flushdb()
    async with running_sim() as sim:
        stop, tasks = asyncio.Event(), []
        for name in ("alpha", "bravo")[:collectors]:
            settings = Settings(_env_file=None, redis_url=redis_url, collector_id=name)
            tasks.append(
                asyncio.create_task(
                    run_collector(settings, stop=stop, sources=sources(sim, name, cadence_s))
                )
            )
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        calls = Counter(
            c.headers.get("x-cg-demo-api-key", "")
            for c in sim.state.call_log("coingecko")
            if c.path.endswith("/simple/price")
        )
    await redis.aclose()
    return calls


async def main() -> None:
    """Both runs, one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--cadence", type=float, default=5.0)
    args = parser.parse_args()
    logger.remove()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as redis:
        for collectors in (1, 2):
            calls = await measure(redis.url, collectors, args.seconds, args.cadence)
            print(
                f"{collectors} collector(s), CoinGecko every {args.cadence:g} s, "
                f"{args.seconds:g} s: {sum(calls.values())} simple/price calls ({dict(calls)})"
            )


if __name__ == "__main__":
    asyncio.run(main())
