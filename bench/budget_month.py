"""A month of CoinGecko's call budget, simulated: the real collector code on virtual time.

Runs one or two collectors through a calendar month (December 2026, 31 days) on a virtual-time
event loop (bench/virtual_time.py): the real CoinGeckoSource and CallBudget, supervise() lanes,
Collector, Outbox, SourceRoles and Leadership (workers/collector.py `collect`), exactly as
`ratesvc collector` wires them. Only the outside world is modelled, in process: CoinGecko (an
httpx mock answering simple/price with data refreshed every 60 s, counting calls), Binance (a feed
quoting every `binance_tick_s`, refusing connections during the outage) and Redis (an in-memory
lease with the Lua scripts' semantics, the latest-value hash, and the shared MemoryLedger; each
collector reaches it through a link a crash cuts). A reader samples what is published, as the API
would serve it, every `sample_s`.

    python bench/budget_month.py            # one collector and two, the shipped defaults
    python bench/budget_month.py --json     # the same, machine-readable

The report gives calls per day, the reserve left, the oldest FX leg and CoinGecko value seen, and
checks: the quota is never exceeded, two collectors spend no more than one, CoinGecko serves
fresh through the outage, and the FX leg is never older than FX_STALE_AFTER_S.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# pylint: disable=wrong-import-position
from bench.virtual_time import VirtualTimeLoop, run_virtual, virtual_timing  # noqa: E402

from ratesvc.bus import FencedOut, LeaseClaim, LeaseToken  # noqa: E402
from ratesvc.domain import Quote, RateTick, SourceStatus, Transport  # noqa: E402
from ratesvc.settings import Settings  # noqa: E402
from ratesvc.sources.base import Frame, Source  # noqa: E402
from ratesvc.sources.budget import MemoryLedger, month_bounds  # noqa: E402
from ratesvc.sources.coingecko import (  # noqa: E402
    CoinGeckoOptions,
    CoinGeckoSource,
    budget_refusal,
)
from ratesvc.timing import Timing  # noqa: E402
from ratesvc.workers.collector import collect  # noqa: E402

DAY_S = 86_400.0
DEC_1_2026 = 1_796_083_200.0  # 2026-12-01T00:00:00Z: a 31-day month, the longest
CG_REFRESH_S = 60  # CoinGecko's Demo data refresh: last_updated_at moves once a minute
PRICES = {
    "bitcoin": {"usd": 65000, "rub": 6207500},
    "ethereum": {"usd": 3200, "rub": 305600},
    "tether": {"usd": 1, "rub": 95.5},
}


@dataclass(frozen=True)
class Takeover:
    """The leader goes away `at_day` days in: "restart" (clean stop, lease released) or "crash"
    (its Redis link is cut, nothing released: the lease expires); it is back `back_after_s` later
    (as a standby when another collector took over)."""

    at_day: float
    kind: str = "restart"
    back_after_s: float = 600.0


@dataclass(frozen=True)
class Scenario:
    """What to simulate; every CoinGecko option not in `coingecko` is the shipped default."""

    collectors: int = 1
    days: float = 31.0
    outage: tuple[float, float] | None = (15.0, 16.0)  # Binance refuses connections (days)
    takeovers: tuple[Takeover, ...] = ()
    coingecko: dict[str, Any] = field(default_factory=dict)
    fx_stale_after_s: float = 900.0
    lease_ms: int = 60_000  # renewals every 20 s: a month of them in seconds of CPU
    binance_tick_s: float = 120.0
    ticker_period_s: float = 600.0  # quotes are minutes apart: no change waits on the throttle
    sample_s: float = 60.0


@dataclass
class Report:  # pylint: disable=too-many-instance-attributes
    """What a month looked like from outside: calls, reserve, ages seen by a reader."""

    collectors: int
    days: float
    quota: int
    calls: int = 0
    calls_per_day: list[int] = field(default_factory=list)
    reserve_left: int = 0
    reserve_at_outage: int = 0  # calls the budget could spend beyond standby when Binance failed
    outage_calls: int = 0
    outage_active_h: float = 0.0  # hours of the outage polled at the active cadence
    oldest_fx_leg_s: float = 0.0  # in a served RUB value (Binance cross, or CoinGecko's own)
    oldest_coingecko_s: float = 0.0
    stale_fx_samples: int = 0
    stale_coingecko_samples: int = 0  # while CoinGecko serves (Binance down)
    takeovers: list[str] = field(default_factory=list)
    calls_by: dict[str, int] = field(default_factory=dict)
    calls_not_leading: int = 0  # made by a collector that did not hold the lease
    cpu_s: float = 0.0

    def failures(self, one: Report | None = None) -> list[str]:
        """The checks that failed (empty: the month passes)."""
        failed = []
        if self.calls > self.quota:
            failed.append(f"{self.calls} calls exceed the quota of {self.quota}")
        if self.stale_fx_samples:
            failed.append(f"the FX leg was stale in {self.stale_fx_samples} samples")
        if self.stale_coingecko_samples:
            failed.append(f"CoinGecko was stale in {self.stale_coingecko_samples} outage samples")
        if self.calls_not_leading:
            failed.append(f"{self.calls_not_leading} calls by a collector not holding the lease")
        if self.reserve_at_outage <= 0:
            failed.append("no reserve was left when Binance failed")
        if one is not None and self.calls > one.calls:
            failed.append(f"{self.collectors} collectors spent {self.calls} calls, one {one.calls}")
        return failed


class CoinGecko:
    """simple/price in process: counts calls by virtual day, data refreshed every minute."""

    def __init__(self, timing: Timing, leader: Callable[[], str | None]) -> None:
        self.timing, self.leader = timing, leader
        self.calls: list[tuple[float, str]] = []  # (epoch s, collector)
        self.not_leading = 0  # calls by a collector that did not hold the lease then

    def handler(self, collector: str) -> httpx.MockTransport:
        """A transport for one collector's client (its calls are attributed to it)."""

        def answer(request: httpx.Request) -> httpx.Response:
            now = self.timing.wall()
            self.calls.append((now, collector))
            self.not_leading += self.leader() != collector
            del request
            updated = int(now // CG_REFRESH_S * CG_REFRESH_S)
            body = {coin: {**p, "last_updated_at": updated} for coin, p in PRICES.items()}
            return httpx.Response(200, json=body)

        return httpx.MockTransport(answer)


class Binance(Source):
    """A Binance feed quoting BTC and ETH every `tick_s`; connections refused during `outage`."""

    name = "binance"
    transport = Transport.WS

    def __init__(self, timing: Timing, *, tick_s: float, outage: tuple[float, float] | None):
        super().__init__(stale_after_s=3 * tick_s)
        self.timing, self.tick_s, self.outage = timing, tick_s, outage

    def down(self) -> bool:
        """Inside the outage window."""
        if self.outage is None:
            return False
        day = (self.timing.wall() - DEC_1_2026) / DAY_S
        return self.outage[0] <= day < self.outage[1]

    async def frames(self) -> AsyncIterator[Frame]:
        """One frame per tick until the outage begins."""
        while not self.down():
            yield Frame(b"", self.timing.wall_ms())
            await self.timing.sleep(self.tick_s)
        raise ConnectionRefusedError("simulated Binance outage")

    def parse(self, raw: str | bytes, *, received_ms: int) -> list[Quote]:
        """The two coins' mid prices."""
        del raw
        return [
            Quote("binance", "BTC/USDT", Decimal(65000), received_ms),
            Quote("binance", "ETH/USDT", Decimal(3200), received_ms),
        ]


class Redis:
    """The bus on Redis, in memory: the lease (the Lua scripts' semantics, PX on virtual time),
    the fenced publish and the latest-value hash."""

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.lease: tuple[str, float] | None = None  # (value, expiry)
        self.term = 0
        self.latest: dict[str, RateTick] = {}

    def holder(self) -> str | None:
        """The lease's value while it lives."""
        if self.lease is not None and self.lease[1] <= self.timing.monotonic():
            self.lease = None
        return self.lease[0] if self.lease else None

    def acquire(self, holder: str, lease_ms: int, previous: LeaseToken | None) -> LeaseClaim:
        """ACQUIRE_LUA."""
        current = self.holder()
        expiry = self.timing.monotonic() + lease_ms / 1000
        if current is not None:
            if previous is not None and current == previous.value:
                self.lease = (current, expiry)
                return LeaseClaim(previous)
            ttl_ms = int((self.lease[1] - self.timing.monotonic()) * 1000) if self.lease else 0
            return LeaseClaim(None, holder=current, ttl_ms=ttl_ms)
        self.term += 1
        token = LeaseToken(holder, self.term)
        self.lease = (token.value, expiry)
        return LeaseClaim(token)


class Link:
    """One collector's connection to `Redis`: what RateBus offers the collector; `cut` breaks it."""

    def __init__(self, redis: Redis) -> None:
        self.redis, self.cut = redis, False

    def _up(self) -> None:
        if self.cut:
            raise RedisConnectionError("link cut (simulated crash)")

    async def acquire_lease(
        self, holder: str, *, lease_ms: int, previous: LeaseToken | None = None
    ) -> LeaseClaim:
        """Take the lease when free or still ours."""
        self._up()
        return self.redis.acquire(holder, lease_ms, previous)

    async def renew_lease(self, token: LeaseToken, *, lease_ms: int) -> bool:
        """RENEW_LUA."""
        self._up()
        if self.redis.holder() != token.value:
            return False
        self.redis.lease = (token.value, self.redis.timing.monotonic() + lease_ms / 1000)
        return True

    async def release_lease(self, token: LeaseToken) -> bool:
        """RELEASE_LUA."""
        self._up()
        if self.redis.holder() != token.value:
            return False
        self.redis.lease = None
        return True

    async def publish(
        self, events: Sequence[RateTick | SourceStatus], *, fence: LeaseToken | None = None
    ) -> list[str]:
        """PUBLISH_LUA: refused unless the lease holds `fence`."""
        self._up()
        holder = self.redis.holder()
        if fence is not None and holder != fence.value:
            raise FencedOut(fence, holder or "")
        for event in events:
            if isinstance(event, RateTick):
                self.redis.latest[event.key] = event
        return [""] * len(events)


class Reader:
    """Samples what a reader of the API would be served, every `sample_s`."""

    def __init__(self, redis: Redis, binance: Binance, scenario: Scenario, cg_stale_s: float):
        self.redis, self.binance, self.scenario = redis, binance, scenario
        self.cg_stale_s = cg_stale_s
        self.oldest_fx_s = self.oldest_cg_s = 0.0
        self.stale_fx = self.stale_cg = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until `stop`."""
        timing = self.redis.timing
        while not stop.is_set():
            await timing.sleep(self.scenario.sample_s)
            self.sample(timing.wall())

    def sample(self, now_s: float) -> None:
        """The FX leg of the RUB value served now and the age of CoinGecko's values."""
        cross = self.redis.latest.get("binance:BTC-RUB")
        own = self.redis.latest.get("coingecko:USDTTRC-RUB")
        served = own if self.binance.down() else cross  # what serves RUB right now
        if served is not None:
            fx_ts = max(leg.ts_ms for leg in served.legs if leg.source == "coingecko")
            age_s = now_s - fx_ts / 1000
            self.oldest_fx_s = max(self.oldest_fx_s, age_s)
            self.stale_fx += age_s > self.scenario.fx_stale_after_s
        value = self.redis.latest.get("coingecko:BTC-USD")
        if value is not None:
            age_s = now_s - min(leg.ts_ms for leg in value.legs) / 1000
            self.oldest_cg_s = max(self.oldest_cg_s, age_s)
            self.stale_cg += self.binance.down() and age_s > self.cg_stale_s


class Deployment:  # pylint: disable=too-many-instance-attributes
    """The collectors of one simulated deployment, started and stopped by the scenario."""

    def __init__(self, scenario: Scenario, timing: Timing) -> None:
        self.scenario, self.timing = scenario, timing
        self.options = CoinGeckoOptions(_env_file=None, **scenario.coingecko)
        self.redis = Redis(timing)
        self.coingecko = CoinGecko(timing, self.leader)
        self.ledger = MemoryLedger()  # the Redis-backed ledger's semantics, shared by all
        self.binance = Binance(timing, tick_s=scenario.binance_tick_s, outage=scenario.outage)
        self.running: dict[str, tuple[asyncio.Event, asyncio.Task[None], Link]] = {}
        self.takeovers: list[str] = []

    def start(self, name: str) -> None:
        """Start collector `name` (its own sources, the shared ledger, a new link)."""
        cadence = self.scenario
        sources = [
            Binance(self.timing, tick_s=cadence.binance_tick_s, outage=cadence.outage),
            CoinGeckoSource(
                self.options,
                http_transport=self.coingecko.handler(name),
                ledger=self.ledger,
                clock=self.timing.monotonic,
                sleep=self.timing.sleep,
                wall_clock=self.timing.wall,
            ),
        ]
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            collector_id=name,
            collector_lease_ms=cadence.lease_ms,
            sources=["binance", "coingecko"],
            fx_stale_after_s=cadence.fx_stale_after_s,
        )
        link, stop = Link(self.redis), asyncio.Event()
        task = asyncio.create_task(
            collect(
                settings,
                link,
                sources,
                stop=stop,
                timing=self.timing,
                ticker_period_s=cadence.ticker_period_s,
            )
        )
        self.running[name] = (stop, task, link)

    async def stop(self, name: str, *, crash: bool = False) -> None:
        """Stop collector `name`: cleanly (releases the lease) or by cutting its link first."""
        stop, task, link = self.running.pop(name)
        link.cut = crash
        stop.set()
        await task

    def leader(self) -> str | None:
        """Who holds the lease."""
        holder = self.redis.holder()
        return LeaseToken.parse(holder).holder if holder else None

    async def take_over(self, takeover: Takeover) -> None:
        """Make the leader go away and come back."""
        leader = self.leader()
        if leader is None:
            return
        await self.stop(leader, crash=takeover.kind == "crash")
        await self.timing.sleep(takeover.back_after_s)
        self.takeovers.append(f"day {takeover.at_day:g}: {leader} {takeover.kind}, now {{}}")
        self.start(leader)
        await self.timing.sleep(60)
        self.takeovers[-1] = self.takeovers[-1].format(f"{self.leader()} leads")


async def simulate(scenario: Scenario) -> Report:
    """Run `scenario` on the running loop's virtual clock (see `run_month`)."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop), "simulate() runs on a VirtualTimeLoop"
    timing = virtual_timing(loop, epoch_s=DEC_1_2026 - loop.time())
    deployment = Deployment(scenario, timing)
    refusal = budget_refusal(deployment.options, fx_stale_after_s=scenario.fx_stale_after_s)
    if refusal:
        raise ValueError(refusal)
    reader = Reader(
        deployment.redis, deployment.binance, scenario, deployment.options.stale_after_s
    )
    done = asyncio.Event()
    sampling = asyncio.create_task(reader.run(done))
    reserve = asyncio.create_task(_reserve_at_outage(deployment))
    for name in ("alpha", "bravo", "charlie")[: scenario.collectors]:
        deployment.start(name)
        await timing.sleep(1)
    for takeover in sorted(scenario.takeovers, key=lambda t: t.at_day):
        if takeover.at_day >= scenario.days:
            break
        await timing.sleep(max(DEC_1_2026 + takeover.at_day * DAY_S - timing.wall(), 0))
        await deployment.take_over(takeover)
    await timing.sleep(max(DEC_1_2026 + scenario.days * DAY_S - 1 - timing.wall(), 0))
    done.set()
    for name in list(deployment.running):
        await deployment.stop(name)
    await sampling
    return _report(scenario, deployment, reader, await reserve)


async def _reserve_at_outage(deployment: Deployment) -> int:
    """The calls beyond standby's needs that the budget had when Binance failed."""
    scenario = deployment.scenario
    if scenario.outage is None:
        return 0
    timing = deployment.timing
    await timing.sleep(max(DEC_1_2026 + scenario.outage[0] * DAY_S - timing.wall(), 0))
    month, _, end = month_bounds(timing.wall())
    used = await deployment.ledger.get("coingecko", month)
    standby_left = (end - timing.wall()) / deployment.options.poll_interval_s
    return math.floor(deployment.options.calls_per_month - used - standby_left)


def _report(scenario: Scenario, deployment: Deployment, reader: Reader, reserve: int) -> Report:
    options = deployment.options
    calls = deployment.coingecko.calls
    per_day = Counter(int((at - DEC_1_2026) // DAY_S) for at, _ in calls)
    report = Report(
        collectors=scenario.collectors,
        days=scenario.days,
        quota=options.calls_per_month,
        calls=len(calls),
        calls_per_day=[per_day.get(day, 0) for day in range(math.ceil(scenario.days))],
        reserve_left=options.calls_per_month - len(calls),
        reserve_at_outage=reserve,
        oldest_fx_leg_s=round(reader.oldest_fx_s, 1),
        oldest_coingecko_s=round(reader.oldest_cg_s, 1),
        stale_fx_samples=reader.stale_fx,
        stale_coingecko_samples=reader.stale_cg,
        takeovers=deployment.takeovers,
        calls_by=dict(Counter(name for _, name in calls)),
        calls_not_leading=deployment.coingecko.not_leading,
    )
    if scenario.outage is not None:
        start, end = (DEC_1_2026 + day * DAY_S for day in scenario.outage)
        during = [at for at, _ in calls if start <= at < end]
        report.outage_calls = len(during)
        fast = [b - a for a, b in zip(during, during[1:]) if b - a < options.poll_interval_s]
        report.outage_active_h = round(sum(fast) / 3600, 1)
    return report


def run_month(scenario: Scenario) -> Report:
    """Simulate `scenario` on a fresh virtual-time loop; the report includes the CPU time."""
    started = time.process_time()
    report = run_virtual(simulate(scenario), VirtualTimeLoop())
    report.cpu_s = round(time.process_time() - started, 1)
    return report


TAKEOVERS = (Takeover(8.5, "restart"), Takeover(22.3, "crash", back_after_s=3_600.0))


def _markdown(reports: list[Report], scenario: Scenario) -> str:
    options = CoinGeckoOptions(_env_file=None, **scenario.coingecko)
    lines = [
        f"CoinGecko: standby every {options.poll_interval_s:g} s, active every "
        f"{options.active_poll_interval_s:g} s, {options.calls_per_month:,} calls a month "
        f"(reserve {options.budget_reserve:g}); FX_STALE_AFTER_S {scenario.fx_stale_after_s:g}; "
        f"Binance down days {scenario.outage}; lease {scenario.lease_ms} ms",
        "",
        "| collectors | calls | reserve left | reserve when Binance failed | outage: calls / "
        "hours at the active cadence | oldest FX leg seen | oldest CoinGecko value | stale "
        "samples | takeovers | CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(
            f"| {r.collectors} ({', '.join(f'{k} {v}' for k, v in sorted(r.calls_by.items()))}) "
            f"| {r.calls:,} of {r.quota:,} | {r.reserve_left:,} | {r.reserve_at_outage:,} | "
            f"{r.outage_calls:,} / {r.outage_active_h:g} h | {r.oldest_fx_leg_s:g} s | "
            f"{r.oldest_coingecko_s:g} s | {r.stale_fx_samples + r.stale_coingecko_samples} | "
            f"{'; '.join(r.takeovers) or '-'} | {r.cpu_s:g} s |"
        )
    lines += ["", "calls per day (day 1..31):", ""]
    for r in reports:
        lines.append(f"- {r.collectors} collector(s): {' '.join(map(str, r.calls_per_day))}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """One collector and two through the month; exit 1 when a check fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=31.0)
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument(
        "--coingecko",
        default="{}",
        help='CoinGecko options as JSON, e.g. \'{"poll_interval_s": 400, "budget_reserve": 0.3}\'',
    )
    args = parser.parse_args(argv)
    logger.remove()  # a month of the collectors' logs (a day of Binance retries) is noise here
    base = Scenario(days=args.days, coingecko=json.loads(args.coingecko))
    one = run_month(base)
    two = run_month(Scenario(**{**asdict(base), "collectors": 2, "takeovers": TAKEOVERS}))
    if args.json:
        print(json.dumps([asdict(one), asdict(two)], indent=2))
    else:
        print(_markdown([one, two], base))
    failed = one.failures() + two.failures(one)
    for failure in failed:
        print(f"FAILED: {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
