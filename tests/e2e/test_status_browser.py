"""GET /status in a real headless Chromium (testkit.browser, CDP): what a person sees.

Two sides: the page's own logic against a scripted stand-in of /v2/stream and /v2/sources
(status_fake.py: stale marks, failover, narrow screens, deterministic), and the whole path:
`ratesvc run --sim`, the real /v2/stream of a real API worker, a price moved in the simulator and
a Binance outage showing on the page without a reload.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ratesvc.domain import DIRECTIONS, EXCHANGERS
from testkit.browser import Browser, find_chromium
from testkit.market import EXPECTED
from tests.e2e.harness import Service, Sim, wait_until
from tests.e2e.status_fake import FakeApi, body

pytestmark = pytest.mark.e2e

# Everything a person reads on the page, as plain data (visible texts, marks, highlights).
READ_PAGE = """(() => {
  const text = (el) => el ? el.textContent.trim() : null;
  const rates = {};
  for (const td of document.querySelectorAll('#rates td[data-exchanger]')) {
    (rates[td.dataset.exchanger] ??= {})[td.dataset.direction] = {
      value: text(td.querySelector('.value')), age: text(td.querySelector('.age')),
      stale: td.classList.contains('stale'), serving: td.classList.contains('serving')};
  }
  const sources = {};
  for (const tr of document.querySelectorAll('#sources tbody tr')) {
    sources[tr.dataset.exchanger] = {
      state: text(tr.querySelector('.state')), transport: text(tr.querySelector('.transport')),
      last_tick: text(tr.querySelector('.last-tick')), reason: text(tr.querySelector('.reason')),
      serving: !!tr.querySelector('th .badge.serves')};
  }
  return {rates, sources, serving: text(document.getElementById('serving')),
          served: text(document.getElementById('served-state')),
          failover: text(document.getElementById('failover')),
          connection: text(document.getElementById('connection')),
          marker: window.__statusTestMarker || null};
})()"""


def number(shown: str) -> str:
    """A value as the page shows it, without its digit-group spaces."""
    return shown.replace("\u2009", "").replace(" ", "")


def shown_values(page: dict[str, Any], exchanger: str) -> dict[str, str]:
    return {d: number(c["value"]) for d, c in page["rates"][exchanger].items()}


def iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


@pytest.fixture(name="chromium", scope="module")
def chromium_fixture() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(
            "!!! chromium IS NOT INSTALLED: the /status page IS NOT VALIDATED !!! "
            "Install it with: apt-get install -y chromium"
        )
    return path


@pytest.fixture(name="browser")
def browser_fixture(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    with Browser.launch(tmp_path, binary=chromium) as browser:
        yield browser


def only_own_origin(browser: Browser, page_url: str) -> list[str]:
    """The URLs the page requested from anywhere but its own origin (the answer must be [])."""
    origin = urlsplit(page_url)[:2]
    return [u for u in browser.recorded.requests if urlsplit(u)[:2] != origin]


# ---------------------------------------------------------------- the page's logic (stand-in)
LOADED = (
    "document.querySelectorAll('#rates td[data-value]:not([data-value=\"\"])').length === 16"
    " && document.querySelectorAll('#sources tr[data-state]').length === 2"
)


@pytest.fixture(name="scripted")
def scripted_fixture(browser: Browser) -> Iterator[FakeApi]:
    """The page open on the stand-in: Binance serving, CoinGecko's ETH-RUB stale."""
    fake = FakeApi()
    as_of = iso(datetime.now(UTC) - timedelta(seconds=3))
    binance = body("binance", EXPECTED["binance"], as_of)
    fake.set_body("binance", binance)
    fake.set_body("coingecko", body("coingecko", EXPECTED["coingecko"], as_of, stale=("ETH-RUB",)))
    fake.set_body("", binance)
    fake.sources = [
        {"exchanger": "binance", "state": "up", "transport": "ws", "last_tick": as_of,
         "serving": True, "reason": None},
        {"exchanger": "coingecko", "state": "stale", "transport": "poll", "last_tick": as_of,
         "serving": False, "reason": "every value is past its freshness limit"},
    ]  # fmt: skip
    with fake.running():
        browser.navigate(fake.url)
        browser.wait_for(LOADED, what="16 values and the sources")
        yield fake
    assert only_own_origin(browser, fake.url) == []
    assert browser.recorded.console_errors == []


def test_the_page_shows_both_exchangers_values_staleness_serving_and_sources(
    browser: Browser, scripted: FakeApi
) -> None:
    page = browser.evaluate(READ_PAGE)
    for exchanger in EXCHANGERS:
        assert shown_values(page, exchanger) == EXPECTED[exchanger]
        assert list(page["rates"][exchanger]) == list(DIRECTIONS)
    stale = {(e, d) for e in EXCHANGERS for d, c in page["rates"][e].items() if c["stale"]}
    assert stale == {("coingecko", "ETH-RUB")}
    assert page["rates"]["coingecko"]["ETH-RUB"]["age"].startswith("stale")
    assert "stale" not in page["rates"]["binance"]["ETH-RUB"]["age"]
    assert page["rates"]["binance"]["BTC-USD"]["age"].endswith("s ago")
    assert page["serving"] == "binance"
    assert all(c["serving"] for c in page["rates"]["binance"].values())
    assert not any(c["serving"] for c in page["rates"]["coingecko"].values())
    assert page["served"].startswith("all 8 fresh")
    assert page["failover"].startswith("none seen")
    assert page["sources"]["binance"] | {"last_tick": None} == {
        "state": "up", "transport": "ws", "last_tick": None, "reason": "", "serving": True
    }  # fmt: skip
    assert page["sources"]["binance"]["last_tick"].endswith("s ago")
    assert page["sources"]["coingecko"]["state"] == "stale"
    assert page["sources"]["coingecko"]["reason"] == "every value is past its freshness limit"
    assert page["connection"].startswith("Live")
    assert scripted.connections == {"": 1, "binance": 1, "coingecko": 1}


def test_a_new_value_and_a_failover_show_on_the_open_page_without_a_reload(
    browser: Browser, scripted: FakeApi
) -> None:
    browser.evaluate("window.__statusTestMarker = 'same page load'")
    moved = dict(EXPECTED["binance"], **{"BTC-USD": "70001.25"})
    scripted.set_body("binance", body("binance", moved, iso(datetime.now(UTC))))
    browser.wait_for(
        "document.querySelector('td[data-exchanger=binance][data-direction=\"BTC-USD\"]')"
        ".dataset.value === '70001.25'",
        what="the moved value",
    )
    page = browser.evaluate(READ_PAGE)
    assert page["rates"]["binance"]["BTC-USD"]["value"] == "70\u2009001.25"
    assert page["marker"] == "same page load"

    # Failover: the stream without exchanger now serves CoinGecko, /v2/sources says why.
    as_of = iso(datetime.now(UTC))
    scripted.sources = [
        {"exchanger": "binance", "state": "down", "transport": "rest", "last_tick": as_of,
         "serving": False, "reason": "websocket and REST both failing"},
        {"exchanger": "coingecko", "state": "up", "transport": "poll", "last_tick": as_of,
         "serving": True, "reason": None},
    ]  # fmt: skip
    scripted.set_body("", body("coingecko", EXPECTED["coingecko"], as_of))
    browser.wait_for(
        "document.getElementById('serving').dataset.exchanger === 'coingecko'"
        " && document.querySelector('#sources tr[data-exchanger=binance]').dataset.state"
        " === 'down'",
        what="coingecko serving, binance down",
    )
    page = browser.evaluate(READ_PAGE)
    assert page["failover"].startswith("binance \u2192 coingecko")
    assert "seen by this page" in page["failover"]
    assert all(c["serving"] for c in page["rates"]["coingecko"].values())
    assert not any(c["serving"] for c in page["rates"]["binance"].values())
    assert page["sources"]["binance"]["reason"] == "websocket and REST both failing"
    assert page["sources"]["coingecko"]["serving"]
    assert page["marker"] == "same page load"
    assert scripted.connections == {"": 1, "binance": 1, "coingecko": 1}  # no reconnects


def test_a_failover_from_before_the_page_opened_is_told_from_the_sources(
    browser: Browser,
) -> None:
    fake = FakeApi()
    as_of = iso(datetime.now(UTC))
    for exchanger in EXCHANGERS:
        fake.set_body(exchanger, body(exchanger, EXPECTED[exchanger], as_of))
    fake.set_body("", body("coingecko", EXPECTED["coingecko"], as_of))
    fake.sources = [
        {"exchanger": "binance", "state": "stale", "transport": "ws", "last_tick": as_of,
         "serving": False, "reason": "no data since its last reported outage"},
        {"exchanger": "coingecko", "state": "up", "transport": "poll", "last_tick": as_of,
         "serving": True, "reason": None},
    ]  # fmt: skip
    with fake.running():
        browser.navigate(fake.url)
        browser.wait_for(LOADED)
        failover = browser.wait_for(
            "document.getElementById('failover').dataset.from === 'binance'"
            " && document.getElementById('failover').textContent",
        )
    assert failover.startswith("binance \u2192 coingecko")
    assert "before this page opened: binance is stale" in failover


def test_the_page_fits_a_narrow_phone_screen_without_sideways_scrolling(browser: Browser) -> None:
    fake = FakeApi()
    as_of = iso(datetime.now(UTC))
    for exchanger in EXCHANGERS:
        fake.set_body(exchanger, body(exchanger, EXPECTED[exchanger], as_of))
    fake.set_body("", body("binance", EXPECTED["binance"], as_of))
    fake.sources = [
        {"exchanger": "binance", "state": "down", "transport": "rest", "last_tick": as_of,
         "serving": True, "reason": "no data since its last reported outage"},
        {"exchanger": "coingecko", "state": "stale", "transport": "poll", "last_tick": None,
         "serving": False, "reason": "every value is past its freshness limit"},
    ]  # fmt: skip
    with fake.running():
        browser.set_viewport(360, 740)
        browser.navigate(fake.url)
        browser.wait_for(
            "document.querySelectorAll('#rates td.serving').length === 8"
            " && document.querySelectorAll('#sources tr[data-state]').length === 2"
        )
        for element in ("document.documentElement", "document.querySelector('#rates')",
                        "document.querySelector('#sources')"):  # fmt: skip
            assert browser.evaluate(f"{element}.scrollWidth") <= 360, element


def test_the_page_says_when_its_streams_are_lost(browser: Browser) -> None:
    fake = FakeApi()
    as_of = iso(datetime.now(UTC))
    for exchanger in EXCHANGERS:
        fake.set_body(exchanger, body(exchanger, EXPECTED[exchanger], as_of))
    fake.set_body("", body("binance", EXPECTED["binance"], as_of))
    with fake.running():
        browser.navigate(fake.url)
        browser.wait_for("document.getElementById('connection').dataset.live === 'true'")
    browser.wait_for(
        "document.getElementById('connection').textContent.startsWith('Connection lost')",
        what="the lost-connection notice",
    )
    assert browser.evaluate("document.body.classList.contains('offline')")


# ---------------------------------------------------------------- the real stack
def api_values(service: Service, exchanger: str) -> dict[str, str]:
    response = service.http.get("/v2/courses", params={"exchanger": exchanger})
    return {c["direction"]: c["value"] for c in response.json()["courses"]}


def test_the_page_follows_the_real_stream_of_a_running_service(
    browser: Browser, service: Service, sim: Sim
) -> None:
    url = f"http://127.0.0.1:{service.port}/status"
    browser.navigate(url)

    def page_matches_api() -> dict[str, Any] | None:
        page = browser.evaluate(READ_PAGE)
        serving = service.http.get("/v2/courses").json()["exchanger"]
        sources = {s["exchanger"]: s for s in service.http.get("/v2/sources").json()["sources"]}
        same = (
            all(shown_values(page, e) == api_values(service, e) for e in EXCHANGERS)
            and page["serving"] == serving
            and all(page["sources"][e]["state"] == sources[e]["state"] for e in EXCHANGERS)
        )
        return page if same else None

    page = wait_until(page_matches_api, timeout_s=30, what="the page to show what the API serves")
    assert page["serving"] == "binance"
    assert all(c["serving"] for c in page["rates"]["binance"].values())
    assert page["sources"]["binance"]["state"] == "up"
    assert page["sources"]["binance"]["serving"]
    assert page["connection"].startswith("Live")

    # A price moved in the simulator reaches the open page through /v2/stream: no reload.
    browser.evaluate("window.__statusTestMarker = 'same page load'")
    sim.post("/prices", {"binance": {"BTCUSDT": "70123.45"}})
    wait_until(
        lambda: api_values(service, "binance")["BTC-USD"] == "70123.45", what="the API to move"
    )
    browser.wait_for(
        "document.querySelector('td[data-exchanger=binance][data-direction=\"BTC-USD\"]')"
        ".dataset.value === '70123.45'",
        what="the moved price on the page",
    )
    assert browser.evaluate(READ_PAGE)["marker"] == "same page load"

    # Binance goes silent: the page shows the failover to CoinGecko, still without a reload.
    try:
        sim.fault("binance_ws", "stall")
        sim.fault("binance_rest", "refuse")
        browser.wait_for(
            "document.getElementById('serving').dataset.exchanger === 'coingecko'",
            timeout_s=40,
            what="coingecko serving on the page",
        )
        wait_until(
            lambda: browser.evaluate(READ_PAGE)["sources"]["binance"]["state"] != "up",
            what="binance not up on the page",
        )
        page = browser.evaluate(READ_PAGE)
        assert page["failover"].startswith("binance \u2192 coingecko")
        assert all(c["serving"] for c in page["rates"]["coingecko"].values())
        assert page["marker"] == "same page load"
    finally:
        sim.clear()

    assert only_own_origin(browser, url) == []
    assert browser.recorded.console_errors == []
    csp = service.http.get("/status").headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
