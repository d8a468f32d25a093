"""Exchange-side scenarios of bench/faults.py (1-7): faults injected through `ratesvc sim`."""

from __future__ import annotations

import time

from faults_common import Ctx, Row, binance_transport
from faults_stack import SERVICE_ENV, metric, secs, until
from faults_watch import describe, longest_bad_run

RECOVER_TIMEOUT_S = 90.0


def _serving(ctx: Ctx, exchanger: str) -> bool:
    return ctx.stack.courses() == (200, exchanger, "false")


def _binance_fresh(ctx: Ctx) -> bool:
    """Binance's values are fresh (asked for explicitly, so the hold-down does not matter)."""
    return ctx.stack.courses(exchanger="binance")[2] == "false"


def _failover(ctx: Ctx, row: Row, inject: list[tuple[str, str]], limit_s: float) -> None:
    """Inject, time the switch to coingecko, hold, clear, time binance's return (1 and 2)."""
    st = ctx.stack
    for target, kind in inject[:-1]:
        st.fault(target, kind)
    t0 = time.monotonic()
    st.fault(*inject[-1])
    detect = until(lambda: _serving(ctx, "coingecko"), t0, limit_s + 20)
    row.detect = secs(detect, limit_s + 20)
    time.sleep(2.0 if ctx.quick else 4.0)
    during = ctx.watcher.window(t0)
    st.clear()
    t1 = time.monotonic()
    fresh = until(lambda: _binance_fresh(ctx), t1, RECOVER_TIMEOUT_S)
    back = until(lambda: _serving(ctx, "binance"), t1, RECOVER_TIMEOUT_S)
    row.recover = f"{secs(back, RECOVER_TIMEOUT_S)} (binance fresh after {secs(fresh)})"
    row.notes.append(f"during the fault: {describe(during)}")
    errors = sum(1 for s in ctx.watcher.window(t0) if s.status != 200)
    row.ok = detect is not None and detect <= limit_s and back is not None and errors == 0


def s1_disconnect(ctx: Ctx, row: Row) -> None:
    """Binance websocket disconnect (ws refuse + REST refuse + disconnect) -> coingecko."""
    inject = [("binance_ws", "refuse"), ("binance_rest", "refuse"), ("binance_ws", "disconnect")]
    _failover(ctx, row, inject, 2.0)


def s2_stall(ctx: Ctx, row: Row) -> None:
    """Binance silent stall (socket open, no data; REST refused) -> coingecko."""
    _failover(ctx, row, [("binance_rest", "refuse"), ("binance_ws", "stall")], 10.0)


def _skipped(ctx: Ctx) -> float:
    scraped = ctx.stack.collector()
    return metric(scraped, "ratesvc_source_skipped_frames_total", source="binance")


def s3_garbage(ctx: Ctx, row: Row) -> None:
    """N junk frames: counted and skipped, the connection kept, no stale answer."""
    st, frames = ctx.stack, 5
    attempts0, skipped0 = st.counter("binance_ws_attempts"), _skipped(ctx)
    t0 = time.monotonic()
    st.fault("binance_ws", "garbage", count=frames)
    counted = until(lambda: _skipped(ctx) - skipped0 >= 1, t0, 10)
    time.sleep(0.5)
    skipped = round(_skipped(ctx) - skipped0)
    st.prices({"BTCUSDT": "70123.5"})
    t1 = time.monotonic()
    visible = until(lambda: st.value("binance", "BTC-USD") == "70123.5", t1, 10)
    time.sleep(1.0)
    attempts = st.counter("binance_ws_attempts") - attempts0
    samples = ctx.watcher.window(t0)
    st.prices({"BTCUSDT": "70000"})
    row.detect = f"{skipped} of {frames} junk frames counted, first after {secs(counted, 10)}"
    row.recover = (
        f"connection kept (sim binance_ws_attempts +{attempts}); "
        f"next price visible after {secs(visible, 10)}"
    )
    row.notes.append(describe(samples))
    if skipped < frames:
        row.notes.append(
            f"{frames - skipped} junk frame(s) not counted in ratesvc_source_skipped_frames_total:"
            ' the simulator\'s `{"e":"unknownEvent","E":0}` is dropped silently'
        )
    bad = longest_bad_run(samples)[1]
    row.ok = attempts == 0 and skipped >= 1 and visible is not None and bad == 0


def s4_accept_and_drop(ctx: Ctx, row: Row) -> None:
    """accept_and_drop for a while: attempts stay far below Binance's 300 per 5 minutes."""
    st, window_s = ctx.stack, 20.0 if ctx.quick else 60.0
    attempts0 = st.counter("binance_ws_attempts")
    reconnects0 = metric(st.collector(), "ratesvc_source_reconnects_total", source="binance")
    st.fault("binance_ws", "accept_and_drop")
    t0 = time.monotonic()
    st.fault("binance_ws", "disconnect")
    rest_at = until(lambda: binance_transport(ctx) == "rest", t0, window_s, 0.1)
    time.sleep(max(0.0, t0 + window_s - time.monotonic()))
    attempts = st.counter("binance_ws_attempts") - attempts0
    reconnects = metric(st.collector(), "ratesvc_source_reconnects_total", source="binance")
    samples = ctx.watcher.window(t0)
    failover = ctx.watcher.first(t0, lambda s: s.exchanger != "binance")
    st.clear()
    t1 = time.monotonic()
    back = until(
        lambda: binance_transport(ctx) == "ws" and _serving(ctx, "binance"), t1, RECOVER_TIMEOUT_S
    )
    per_5min = attempts * 300 / window_s
    row.detect = (
        f"{attempts} handshakes in {window_s:g} s (= {per_5min:.0f} per 5 min; limit 300); "
        f"REST fallback after {secs(rest_at, window_s)}"
    )
    row.recover = f"websocket back and binance serving {secs(back, RECOVER_TIMEOUT_S)} after clear"
    row.notes.append(
        f"collector ratesvc_source_reconnects_total +{reconnects - reconnects0:g}; "
        f"non-binance answers: {'from ' + secs(failover) if failover is not None else 'none'}; "
        f"{describe(samples)}"
    )
    row.ok = attempts >= 1 and per_5min <= 100 and back is not None


def s5_shutdown(ctx: Ctx, row: Row) -> None:
    """serverShutdown: a new connection before the old one closes; no gap for a 20 ms poller."""
    st = ctx.stack
    attempts0 = st.counter("binance_ws_attempts")
    t0 = time.monotonic()
    st.fault("binance_ws", "shutdown", delay_s=1.0)
    rotated = until(lambda: st.counter("binance_ws_attempts") > attempts0, t0, 10)
    time.sleep(2.5)  # past the old connection's close
    samples = ctx.watcher.window(t0)
    gap_s, gap_n = longest_bad_run(samples)
    opened = st.counter("binance_ws_open")
    row.detect = f"new connection opened after {secs(rotated, 10)}"
    row.recover = f"longest stale/non-binance run: {gap_n} answers ({gap_s * 1000:.0f} ms)"
    row.notes.append(f"{describe(samples)}; sim binance_ws_open now {opened}")
    row.ok = rotated is not None and gap_n == 0


def s6_rest_fallback(ctx: Ctx, row: Row) -> None:
    """Websocket blocked, REST fine: binance keeps serving from REST, back to ws after clear."""
    st, price = ctx.stack, "70555.5"
    st.fault("binance_ws", "refuse")
    t0 = time.monotonic()
    st.fault("binance_ws", "disconnect")
    st.prices({"BTCUSDT": price})
    via_rest = until(lambda: st.value("binance", "BTC-USD") == price, t0, 30)
    transport = binance_transport(ctx)
    time.sleep(3.0 if ctx.quick else 14.0)  # full run: longer than the failback hold-down
    samples = ctx.watcher.window(t0)
    st.clear()
    t1 = time.monotonic()
    back = until(lambda: binance_transport(ctx) == "ws", t1, RECOVER_TIMEOUT_S)
    serving = until(lambda: _serving(ctx, "binance"), t1, RECOVER_TIMEOUT_S)
    st.prices({"BTCUSDT": "70000"})
    gap_s, gap_n = longest_bad_run(samples)
    row.detect = (
        f"REST-sourced value served after {secs(via_rest, 30)} "
        f"(ratesvc_source_transport then: {transport or 'none'})"
    )
    row.recover = f"back to ws after {secs(back, RECOVER_TIMEOUT_S)}"
    row.notes.append(
        f"while blocked: {describe(samples)}; longest stale/non-binance run {gap_n} answers "
        f"({gap_s:.2f} s); binance serving {secs(serving)} after clear"
    )
    if gap_n and via_rest is not None:
        left = ctx.watcher.first(t0, lambda s: not s.good) or 0.0
        returned = ctx.watcher.first(t0 + left, lambda s: s.good)
        came_back = (
            f"came back (over REST) after {left + returned:.2f} s"
            if returned is not None and t0 + left + returned <= t1
            else f"did not come back in the {t1 - t0:.1f} s the websocket was blocked"
        )
        row.notes.append(
            f"binance's values came over REST after {via_rest:.2f} s, yet the default answer left "
            f"binance after {left:.2f} s and {came_back}: the collector's DOWN for binance "
            f"reached the API before the REST fallback's first quote{_grace()}, so the API "
            "failed over and then waited FAILBACK_HOLD_DOWN_S"
        )
    row.ok = via_rest is not None and back is not None and gap_n == 0


def _grace() -> str:
    """How long the collector holds a DOWN back while a fallback may bridge it (if it does)."""
    try:
        from ratesvc.sources import supervise  # pylint: disable=import-outside-toplevel
    except ImportError:
        return ""
    grace = getattr(supervise, "DOWN_GRACE_S", None)
    return f" (a DOWN is held back DOWN_GRACE_S={grace:g} s)" if grace is not None else ""


def _minute_peak(times_ms: list[int]) -> int:
    """Most calls in any 60 s window."""
    return max((sum(1 for u in times_ms if t <= u < t + 60_000) for t in times_ms), default=0)


def _gaps(calls: list[dict], bursts: list[tuple[int, float]], cadence_s: float) -> list[tuple]:
    """(status, seconds to the next call, the least wait allowed) after every failed call.

    The least wait after the k-th failure in a row is the cadence x 2**(k-1), and at least the
    Retry-After of the burst the call belongs to (`bursts`: (injected at ms, Retry-After s)).
    """
    out, streak = [], 0
    for call, nxt in zip(calls, calls[1:]):
        if call["status"] == 200:
            streak = 0
            continue
        streak += 1
        retry_after = 0.0
        for at_ms, seconds in bursts:
            if at_ms <= call["ts_ms"]:
                retry_after = seconds
        least = max(cadence_s * 2 ** (streak - 1), retry_after)
        out.append((call["status"], (nxt["ts_ms"] - call["ts_ms"]) / 1000, least))
    return out


def _budget(ctx: Ctx, calls0: float) -> str:
    """What the collector counted and what its budget gauges say is left."""
    scraped = ctx.stack.collector()
    left = {
        w: metric(scraped, "ratesvc_coingecko_budget_remaining_calls", window=w)
        for w in ("minute", "month")
    }
    counted = metric(scraped, "ratesvc_coingecko_calls_total") - calls0
    return (
        f"collector counted {counted:g}; budget left {left['minute']:g}/min, "
        f"{left['month']:g}/month"
    )


def _bursts(ctx: Ctx, t0: float) -> tuple[list[tuple[int, float]], list[str]]:
    """Inject the 429 bursts one after the other; (injected at ms, Retry-After) and recoveries."""
    st = ctx.stack
    plan: list[dict] = [{"count": 3, "retry_after_s": 6}]
    if not ctx.quick:
        plan.append({"count": 2})  # CoinGecko itself sends no Retry-After
    bursts: list[tuple[int, float]] = []
    recovered: list[str] = []
    for burst in plan:
        before = st.counter("coingecko_status_429")
        bursts.append((int(time.time() * 1000), float(burst.get("retry_after_s", 0))))
        st.fault("coingecko", "429", **burst)
        hit = until(
            lambda b=before, n=burst["count"]: st.counter("coingecko_status_429") >= b + n, t0, 120
        )
        last_429 = time.monotonic()
        ok_after = until(lambda: st.sim_calls("coingecko")[-1]["status"] == 200, last_429, 120)
        recovered.append(secs(ok_after, 120) if hit is not None else "burst not seen in 120 s")
    return bursts, recovered


def s7_coingecko_429(ctx: Ctx, row: Row) -> None:
    """CoinGecko 429 bursts while it serves: back-off honoured, calls within the budget."""
    st, cadence_s = ctx.stack, float(SERVICE_ENV["COINGECKO_ACTIVE_POLL_INTERVAL_S"])
    st.fault("binance_ws", "refuse")
    st.fault("binance_rest", "refuse")
    st.fault("binance_ws", "disconnect")
    if until(lambda: _serving(ctx, "coingecko"), time.monotonic(), 20) is None:
        raise RuntimeError("coingecko did not take over")
    time.sleep(cadence_s + 1)  # one poll at the active cadence first
    mark_ms, t0 = int(time.time() * 1000), time.monotonic()
    calls0 = metric(st.collector(), "ratesvc_coingecko_calls_total")
    bursts, recovered = _bursts(ctx, t0)
    calls = [c for c in st.sim_calls("coingecko") if c["ts_ms"] >= mark_ms]
    budget = _budget(ctx, calls0)
    samples = ctx.watcher.window(t0)
    st.clear()
    back = until(lambda: _serving(ctx, "binance"), time.monotonic(), RECOVER_TIMEOUT_S)
    peak = _minute_peak([c["ts_ms"] for c in calls])
    gaps = _gaps(calls, bursts, cadence_s)
    row.detect = "waits after failed calls (allowed minimum): " + (
        ", ".join(f"{s}->{g:.1f}s (>={m:g})" for s, g, m in gaps) or "none"
    )
    row.recover = "first 200 after the last 429 of each burst: " + ", ".join(recovered)
    stale = sum(1 for s in samples if s.stale == "true")
    row.notes.append(
        f"{len(calls)} CoinGecko calls in {(time.monotonic() - t0):.0f} s (sim log), peak "
        f"{peak} in any 60 s (cap COINGECKO_CALLS_PER_MINUTE=30); {budget}; binance back "
        f"{secs(back)} after clear"
    )
    row.notes.append(
        f"API while CoinGecko backed off: {describe(samples)}"
        + (f" - {stale} answers marked stale: each 429 reports CoinGecko DOWN" if stale else "")
    )
    honoured = all(g >= m - 0.3 for _s, g, m in gaps)
    row.ok = bool(gaps) and honoured and peak <= 30
