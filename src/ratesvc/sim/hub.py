"""Binance websocket fan-out: which session listens to which stream, pushes on every price change
and on a cadence, and the websocket faults that act on open connections.

Never touches a socket itself: it queues frames on sessions, and each session writes its own.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import suppress
from typing import TYPE_CHECKING

from loguru import logger

from ratesvc.sim.faults import BINANCE, BINANCE_WS, Fault
from ratesvc.sim.payloads import BUILDERS, STREAM_KINDS
from ratesvc.sim.state import TRADING, MarketState

if TYPE_CHECKING:
    from ratesvc.sim.session import WsSession

BOOK_KINDS = ("bookTicker",)
POLICY_VIOLATION = 1008
SLOW_KINDS = ("miniTicker", "ticker", "trade", "aggTrade")
# How often a disabled cadence (interval 0) rechecks whether it was turned back on.
_IDLE_RECHECK_S = 0.2

log = logger.bind(source="sim.binance")


class BinanceHub:
    """Registry of open sessions and the stream index; listens to the shared MarketState."""

    def __init__(self, state: MarketState, *, seed: int = 0) -> None:
        self.state = state
        self.sessions: set[WsSession] = set()
        self.by_stream: dict[str, set[WsSession]] = {}
        self._rng = random.Random(seed)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Hook into the state and start the periodic pushers."""
        self.state.price_listeners.append(self.on_price)
        self.state.fault_listeners.append(self.on_fault)
        self._tasks = [
            asyncio.create_task(self._periodic("book_interval_s", BOOK_KINDS)),
            asyncio.create_task(self._periodic("ticker_interval_s", SLOW_KINDS)),
        ]

    async def stop(self) -> None:
        """Stop the pushers and unhook from the state."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        with suppress(ValueError):
            self.state.price_listeners.remove(self.on_price)
        with suppress(ValueError):
            self.state.fault_listeners.remove(self.on_fault)

    @property
    def stalled(self) -> bool:
        """True while a `stall` fault holds back every data frame and reply."""
        return self.state.faults.peek(BINANCE_WS, "stall") is not None

    def add(self, session: WsSession) -> None:
        """Register an accepted session; apply an active `cut` to it."""
        self.sessions.add(session)
        self.state.ws_open = len(self.sessions)
        cut = self.state.faults.peek(BINANCE_WS, "cut")
        if cut is not None:
            session.schedule_cut(float(cut.params["max_age_s"]))

    def discard(self, session: WsSession) -> None:
        """Forget a finished session and its streams."""
        self.sessions.discard(session)
        for name in session.stream_names:
            self.unindex(session, name)
        self.state.ws_open = len(self.sessions)

    def index(self, session: WsSession, name: str) -> None:
        """Note that `session` listens to stream `name`."""
        self.by_stream.setdefault(name, set()).add(session)

    def unindex(self, session: WsSession, name: str) -> None:
        """Note that `session` no longer listens to stream `name`."""
        listeners = self.by_stream.get(name)
        if listeners is not None:
            listeners.discard(session)
            if not listeners:
                del self.by_stream[name]

    def push(self, symbol: str, kinds: tuple[str, ...]) -> None:
        """Build one event per (symbol, kind) and queue it on every session listening to it."""
        entry = self.state.symbols.get(symbol)
        # Non-TRADING symbols are acknowledged but silent, like delisted pairs on the real server.
        if entry is None or entry.status != TRADING or self.stalled:
            return
        prefix = symbol.lower() + "@"
        for kind in kinds:
            listeners = self.by_stream.get(prefix + kind)
            if not listeners:
                continue
            payload = BUILDERS[kind](entry, self._rng)
            for session in list(listeners):
                session.send_event(prefix + kind, payload)

    def on_price(self, symbol: str) -> None:
        """Price listener: push every stream of that symbol at once."""
        self.push(symbol, STREAM_KINDS)

    def on_fault(self, fault: Fault) -> None:
        """Fault listener: act on open sessions for the immediate kinds, `cut`, `clear` and a ban
        that disconnects."""
        if fault.target == BINANCE and fault.kind == "ban" and fault.params["disconnect"]:
            log.info("ip ban: closing {n} sessions", n=len(self.sessions))
            for session in list(self.sessions):
                session.close(POLICY_VIOLATION, "sim: IP banned")
            return
        if fault.target not in (BINANCE_WS, "*"):
            return
        sessions = list(self.sessions)
        log.info("ws fault {kind} on {n} sessions", kind=fault.kind, n=len(sessions))
        for session in sessions:
            if fault.kind == "disconnect":
                session.close(int(fault.params["code"]), "sim disconnect")
            elif fault.kind == "garbage":
                session.send_garbage(int(fault.params["count"]))
            elif fault.kind == "shutdown":
                session.send_shutdown(float(fault.params["delay_s"]))
            elif fault.kind == "cut":
                session.schedule_cut(float(fault.params["max_age_s"]))
            elif fault.kind == "clear":
                session.cancel_cut()

    def close_all(self, code: int = 1001) -> None:
        """Ask every session to close, as a server going away does."""
        for session in list(self.sessions):
            session.close(code, "sim stopping")

    async def _periodic(self, option: str, kinds: tuple[str, ...]) -> None:
        # Real books change quantity all the time, so streams tick even when the price is flat.
        while True:
            interval_s = float(getattr(self.state.options, option))
            await asyncio.sleep(interval_s if interval_s > 0 else _IDLE_RECHECK_S)
            # Re-read: the cadence may have been turned off while sleeping.
            if float(getattr(self.state.options, option)) > 0 and self.by_stream:
                for symbol in list(self.state.symbols):
                    self.push(symbol, kinds)
