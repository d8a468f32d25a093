"""Fixtures of the compose test (the stack, up once for the module, and its rig), and the report
printed at the end of the run (tests/compose/report.py)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import httpx
import pytest

from testkit.compose import ComposeStack, open_stack
from testkit.engine import EngineUnavailable
from testkit.poller import Poller, summary
from testkit.standins import STANDINS
from tests.compose.report import REPORT
from tests.compose.rig import ROOT, SERVED_TIMEOUT_S, Rig, report_errors, seconds


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT.notices and not REPORT.figures:
        return
    terminalreporter.section("compose stack (tests/compose)")
    for line in REPORT.notices:
        terminalreporter.write_line(f"!!! {line} !!!", red=True, bold=True)
    for line in REPORT.figures:
        terminalreporter.write_line(line)


@pytest.fixture(name="stack", scope="module")
def stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    """The whole stack, up and healthy; `down -v` (and the engine stopped if ours) afterwards."""
    began = time.monotonic()
    try:
        with open_stack(ROOT, tmp_path_factory.mktemp("compose"), log=REPORT.log) as stack:
            report_start(stack, time.monotonic() - began)
            yield stack
            teardown_began = time.monotonic()
    except EngineUnavailable as err:
        REPORT.loud(f"NOT RUN: the compose stack (tests/compose): {err}")
        pytest.skip(f"!!! NOT RUN: the compose stack: {err} !!!")
    REPORT.figure("teardown (down -v, engine stop)", seconds(time.monotonic() - teardown_began))


def report_start(stack: ComposeStack, cycle_s: float) -> None:
    timings = stack.timings
    REPORT.figure("engine", stack.engine.describe())
    if stack.standins:
        built = sorted(i for i, how in stack.standins.items() if how == "built")
        REPORT.loud(
            "STAND-IN BASE IMAGES (no registry reachable): "
            + "; ".join(f"{image} = {STANDINS[image]}" for image in sorted(stack.standins))
            + " (testkit/standins/README.md)"
        )
        REPORT.figure("stand-ins", f"built {built or 'none'}, the rest reused")
    if "LB_MAXCONN" in stack.env():
        REPORT.loud(
            f"LB_MAXCONN lowered to {stack.env()['LB_MAXCONN']} (default 20000): this host's hard "
            "open-file limit, which the engine's containers inherit, holds no more proxied "
            "connections"
        )
    for service, why in stack.not_started.items():
        REPORT.loud(f"NOT STARTED: {service}: {why}")
    REPORT.figure(
        "start",
        f"lock wait {seconds(timings['lock_wait_s'])}, engine start "
        f"{seconds(timings['engine_start_s'])}, images {seconds(timings['images_s'])}, "
        f"compose build {seconds(timings['build_s'])}, up --wait {seconds(timings['up_s'])}; "
        f"whole cycle to healthy {seconds(cycle_s)}",
    )


@pytest.fixture(name="rig", scope="module")
def rig_fixture(stack: ComposeStack) -> Iterator[Rig]:
    api_url = stack.url("API_PUBLIC_PORT")
    poller = Poller(f"{api_url}/v1/courses").start()
    began = time.monotonic()
    rig = Rig(
        stack,
        poller,
        httpx.Client(base_url=api_url, timeout=5),
        httpx.Client(base_url=f"{stack.url('SIM_PORT')}/_sim", timeout=5),
        httpx.Client(base_url=stack.url("HAPROXY_STATS_PORT"), timeout=5),
        itertools.count(71_000, 7),
    )
    try:
        first = poller.wait_for(
            lambda a: a.fresh, after=0, timeout_s=SERVED_TIMEOUT_S, what="all eight served fresh"
        )
        REPORT.figure(
            "first fresh answer through HAProxy",
            f"{seconds(max(0.0, first.at - began))} after up --wait",
        )
        yield rig
        report_errors(rig, "the down/up")
    finally:
        poller.stop()
        REPORT.figure(
            "request loop, whole run (the deliberate down/up outage included)",
            summary(poller.answers),
        )
        for client in (rig.api, rig.sim, rig.stats):
            client.close()
