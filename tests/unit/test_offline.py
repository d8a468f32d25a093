"""`ratesvc run --sim`: where the simulator listens and what points the collector at it."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest

from ratesvc.offline import DEFAULT_BINANCE_PORT, SimPorts, sim_data_dir
from ratesvc.settings import load
from ratesvc.sources.binance import BinanceOptions
from ratesvc.sources.coingecko import CoinGeckoOptions


def test_the_collector_is_pointed_at_the_simulator_with_fast_coingecko_polling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = SimPorts(28443, 28444).env({})
    for name in list(os.environ):
        if name.startswith(("BINANCE_", "COINGECKO_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    binance, coingecko = load(BinanceOptions, None), load(CoinGeckoOptions, None)
    assert (binance.ws_url, binance.rest_url) == ("ws://127.0.0.1:28443", "http://127.0.0.1:28443")
    assert coingecko.api_url == "http://127.0.0.1:28444/api/v3"
    assert coingecko.poll_interval_s == coingecko.active_poll_interval_s == 5
    assert coingecko.stale_after_s > coingecko.poll_interval_s


def test_cadences_set_in_the_environment_win_but_urls_never_do() -> None:
    environ = {"COINGECKO_POLL_INTERVAL_S": "1", "BINANCE_WS_URL": "wss://stream.binance.com:9443"}
    env = SimPorts(28443, 28444).env(environ)
    assert "COINGECKO_POLL_INTERVAL_S" not in env  # the caller's value stays
    assert env["BINANCE_WS_URL"] == "ws://127.0.0.1:28443"


def test_taken_default_ports_give_two_other_free_ones() -> None:
    with contextlib.ExitStack() as stack:
        holder = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):  # already taken by someone else: just as good
            holder.bind(("127.0.0.1", DEFAULT_BINANCE_PORT))
        ports = SimPorts.pick()
    assert DEFAULT_BINANCE_PORT not in (ports.binance, ports.coingecko)
    assert ports.binance != ports.coingecko


def test_simulated_data_is_kept_apart_from_real_data() -> None:
    assert sim_data_dir(Path(".ratesvc")) == Path(".ratesvc/sim")
