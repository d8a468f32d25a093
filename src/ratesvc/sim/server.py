"""Starts and stops the simulator: one uvicorn server per port, sharing one MarketState.

`run_sim` is what `ratesvc sim` calls; `running_sim` is the in-process starter for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn
from loguru import logger
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from ratesvc.sim.binance import create_binance_app
from ratesvc.sim.coingecko import create_coingecko_app
from ratesvc.sim.faults import BINANCE_REST, COINGECKO
from ratesvc.sim.hub import BinanceHub
from ratesvc.sim.options import SimOptions
from ratesvc.sim.state import MarketState
from ratesvc.sim.wsproto import CountingWSProtocol

DEFAULT_BINANCE_PORT = 18443
DEFAULT_COINGECKO_PORT = 18444
_API_REQUEST = re.compile(rb"^[A-Z]+ /api/")

log = logger.bind(source="sim")


@dataclass
class SimHandle:
    """A running simulator: where it listens and the state the control API drives."""

    host: str
    binance_port: int
    coingecko_port: int
    state: MarketState
    hub: BinanceHub

    @property
    def _url_host(self) -> str:
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    @property
    def binance_ws_url(self) -> str:
        """Websocket base, e.g. ws://127.0.0.1:18443 (append /ws/<stream> or /stream?streams=)."""
        return f"ws://{self._url_host}:{self.binance_port}"

    @property
    def binance_rest_url(self) -> str:
        """REST base, e.g. http://127.0.0.1:18443 (append /api/v3/...)."""
        return f"http://{self._url_host}:{self.binance_port}"

    @property
    def coingecko_url(self) -> str:
        """CoinGecko API root, e.g. http://127.0.0.1:18444/api/v3."""
        return f"http://{self._url_host}:{self.coingecko_port}/api/v3"

    @property
    def control_url(self) -> str:
        """Control API on the Binance port, e.g. http://127.0.0.1:18443/_sim."""
        return f"http://{self._url_host}:{self.binance_port}/_sim"

    @property
    def coingecko_control_url(self) -> str:
        """The same control API on the CoinGecko port."""
        return f"http://{self._url_host}:{self.coingecko_port}/_sim"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the caller's stop event owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _gated_protocol(state: MarketState, target: str) -> type[H11Protocol]:
    """An HTTP protocol that aborts the TCP connection of /api/ requests while `refuse` is on."""

    def refuse(data: bytes) -> bool:
        if not _API_REQUEST.match(data) or state.faults.take(target, "refuse") is None:
            return False
        state.counters[f"{target}_refused"] += 1
        return True

    class GatedProtocol(H11Protocol):
        """H11Protocol with a connection-level `refuse` fault."""

        def data_received(self, data: bytes) -> None:
            if refuse(data):
                self.transport.abort()
                return
            super().data_received(data)

    return GatedProtocol


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None,
        port,
        type=socket.SOCK_STREAM,
        proto=socket.IPPROTO_TCP,
        flags=socket.AI_PASSIVE,
    )[0]
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without
    # it a response written in two parts waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


async def _start(
    app: Starlette, sock: socket.socket, protocol: type[H11Protocol], options: SimOptions
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        app,
        http=protocol,
        ws=CountingWSProtocol,  # websockets-sansio, reporting client pings and pongs
        ws_ping_interval=options.ping_interval_s,
        ws_ping_timeout=options.ping_timeout_s,
        # Binance streams arrive uncompressed; keep frames byte-for-byte as a client sees them.
        ws_per_message_deflate=False,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # surfaces the startup error
            raise RuntimeError("sim server stopped during startup")
        await asyncio.sleep(0.005)
    return server, task


async def _stop(started: list[tuple[uvicorn.Server, asyncio.Task[None]]]) -> None:
    for server, _ in started:
        server.should_exit = True
    await asyncio.gather(*(task for _, task in started))


@contextlib.asynccontextmanager
async def running_sim(
    host: str = "127.0.0.1",
    binance_port: int = 0,
    coingecko_port: int = 0,
    *,
    options: SimOptions | None = None,
) -> AsyncIterator[SimHandle]:
    """Run both ports in this event loop; port 0 picks a free port (see the handle for it)."""
    state = MarketState(options=options or SimOptions())
    hub = BinanceHub(state)
    b_sock = _bind(host, binance_port)
    try:
        c_sock = _bind(host, coingecko_port)
    except OSError:
        b_sock.close()
        raise
    handle = SimHandle(host, b_sock.getsockname()[1], c_sock.getsockname()[1], state, hub)
    hub.start()
    started: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    try:
        started.append(
            await _start(
                create_binance_app(state, hub),
                b_sock,
                _gated_protocol(state, BINANCE_REST),
                state.options,
            )
        )
        started.append(
            await _start(
                create_coingecko_app(state),
                c_sock,
                _gated_protocol(state, COINGECKO),
                state.options,
            )
        )
        log.info(
            "sim listening: binance {ws} (REST {rest}), coingecko {cg}, control {ctl}",
            ws=handle.binance_ws_url,
            rest=handle.binance_rest_url,
            cg=handle.coingecko_url,
            ctl=handle.control_url,
        )
        yield handle
    finally:
        hub.close_all()
        await _stop(started)
        await hub.stop()
        for sock in (b_sock, c_sock):
            sock.close()
        log.info("sim stopped")


async def run_sim(
    *,
    host: str,
    binance_port: int = DEFAULT_BINANCE_PORT,
    coingecko_port: int = DEFAULT_COINGECKO_PORT,
    stop: asyncio.Event | None = None,
    options: SimOptions | None = None,
) -> None:
    """Serve the simulator until `stop` is set (forever when None); what `ratesvc sim` runs."""
    async with running_sim(host, binance_port, coingecko_port, options=options):
        await (stop or asyncio.Event()).wait()
