"""Infrastructure scenarios of bench/faults.py (8-11): Redis, Postgres, persister, collector."""

from __future__ import annotations

import os
import signal
import time

from faults_common import Ctx, Row
from faults_stack import free_port, metric, secs, until, wait_for
from faults_watch import describe, longest_bad_run

CATCH_UP_S = 120.0


def _outage_s(ctx: Ctx) -> float:
    return 5.0 if ctx.quick else 10.0


def _caught_up(ctx: Ctx) -> bool:
    return ctx.stack.backlog() == 0


def s8_redis(ctx: Ctx, row: Row) -> None:
    """Redis stopped for 10 s and started again on the same port and data directory."""
    st, outage_s = ctx.stack, _outage_s(ctx)
    t0 = time.monotonic()
    st.redis.stop()
    down_at, buffer_peak = None, 0.0
    while time.monotonic() < t0 + outage_s:
        if down_at is None and st.ready_status() == 503:
            down_at = time.monotonic() - t0
        buffer_peak = max(buffer_peak, metric(st.collector(), "ratesvc_collector_buffer_events"))
        time.sleep(0.1)
    during = ctx.watcher.window(t0)
    stale_at = ctx.watcher.first(t0, lambda s: s.stale == "true")
    st.redis.start()
    t1 = time.monotonic()
    ready = until(lambda: st.ready_status() == 200, t1, 60)
    flushed = until(lambda: metric(st.collector(), "ratesvc_collector_buffer_events") == 0, t1, 60)
    fresh = until(st.binance_serving, t1, 60)
    caught = until(lambda: _caught_up(ctx), t1, CATCH_UP_S, 0.1)
    non_200 = sum(1 for s in during if s.status != 200)
    stale = secs(stale_at) if stale_at is not None else f"none in the {outage_s:g} s outage"
    row.detect = f"/ready 503 after {secs(down_at, outage_s)}; first stale answer: {stale}"
    row.recover = (
        f"/ready 200 after {secs(ready, 60)}, binance fresh {secs(fresh, 60)}, "
        f"buffer flushed {secs(flushed, 60)}, persister caught up {secs(caught, CATCH_UP_S)}"
    )
    row.notes.append(
        f"outage {outage_s:g} s; collector buffer peaked at {buffer_peak:g} events; "
        f"answers during the outage: {describe(during)}"
    )
    row.ok = non_200 == 0 and down_at is not None and ready is not None and caught is not None


def s9_postgres(ctx: Ctx, row: Row) -> None:
    """Postgres stopped for 10 s: entries stay in the stream, then drain; nothing lost."""
    st, outage_s = ctx.stack, _outage_s(ctx)
    errors0 = metric(st.scrape(st.ports["persister"]), "ratesvc_persister_errors_total")
    t0 = time.monotonic()
    st.postgres.stop()
    stopped = time.monotonic() - t0
    noticed, peak = None, 0
    while time.monotonic() < t0 + outage_s:
        if noticed is None:
            if metric(st.scrape(st.ports["persister"]), "ratesvc_persister_errors_total") > errors0:
                noticed = time.monotonic() - t0
        peak = max(peak, st.backlog())
        time.sleep(0.2)
    during = ctx.watcher.window(t0)
    st.postgres.start()
    t1 = time.monotonic()
    caught = until(lambda: _caught_up(ctx), t1, CATCH_UP_S, 0.1)
    row.detect = (
        f"persister error counted after {secs(noticed, outage_s)} "
        f"(pg_ctl stop took {stopped:.1f} s)"
    )
    row.recover = f"nothing pending again {secs(caught, CATCH_UP_S)} after Postgres was back"
    row.notes.append(
        f"outage {outage_s:g} s; unpersisted entries peaked at {peak}; "
        f"API meanwhile: {describe(during)}"
    )
    row.ok = caught is not None and longest_bad_run(during)[1] == 0


def _kill_mid_batch(ctx: Ctx, pid: int) -> tuple[int, int]:
    """SIGSTOP the persister while ticks pile up, resume it, SIGKILL it while entries are
    delivered but not acked; returns (backlog before resuming, entries pending at the kill)."""
    st = ctx.stack
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(30):  # 3 s of price moves: every BTC and ETH direction changes
            st.control.post("/prices", json={"assets": {"BTC": str(70000 + i), "ETH": "3201"}})
            time.sleep(0.1)
        backlog = st.backlog()
    finally:
        os.kill(pid, signal.SIGCONT)
    # the read that was blocked when it stopped returns a few entries first; wait for the batch
    # holding the backlog (or, failing that, for anything delivered and not acked)
    if wait_for(lambda: st.pending() >= max(1, backlog // 2), 3.0, 0.0) is None:
        wait_for(lambda: st.pending() > 0, 2.0, 0.0)
    os.kill(pid, signal.SIGKILL)
    return backlog, st.pending()


def s10_persister_kill(ctx: Ctx, row: Row) -> None:
    """SIGKILL the persister mid-batch; `ratesvc run` restarts it; pending drains, no duplicate."""
    st = ctx.stack
    attempts: list[str] = []
    recovered = restarted = None
    for _ in range(3):  # a kill that lands between two batches leaves nothing pending: retry
        pid = st.role_pid("persister")
        if pid is None:
            raise RuntimeError("no persister child of ratesvc run")
        backlog, pending = _kill_mid_batch(ctx, pid)
        t0 = time.monotonic()
        attempts.append(f"backlog {backlog}, {pending} delivered but not acked at the kill")
        restarted = until(lambda p=pid: st.role_pid("persister") not in (None, p), t0, 60)
        recovered = until(lambda: _caught_up(ctx), t0, CATCH_UP_S, 0.05)
        if pending:
            break
    st.control.post("/prices", json={"assets": {"BTC": "70000", "ETH": "3200"}})
    skipped = metric(st.scrape(st.ports["persister"]), "ratesvc_persister_duplicates_total")
    row.detect = f"killed with {attempts[-1]}"
    row.recover = (
        f"nothing pending {secs(recovered, CATCH_UP_S)} after the kill "
        f"(restarted after {secs(restarted, 60)})"
    )
    row.notes.append(
        f"kills: {len(attempts)} ({'; '.join(attempts)}); the new persister skipped "
        f"{skipped:g} redelivered entries already committed (unique tick id)"
    )
    row.ok = recovered is not None


def _leader(ctx: Ctx) -> str | None:
    leaders = [
        label
        for label in ctx.stack.collector_ports
        if metric(ctx.stack.collector(label), "ratesvc_collector_leader") == 1
    ]
    return leaders[0] if len(leaders) == 1 else None


def _leading_term(ctx: Ctx) -> tuple[str, int]:
    """(label, lease term) of a collector that says it leads, ('', 0) when none does."""
    for label in list(ctx.stack.collector_ports):
        scraped = ctx.stack.collector(label)
        if metric(scraped, "ratesvc_collector_leader") == 1:
            return label, int(metric(scraped, "ratesvc_collector_lease_term"))
    return "", 0


def _warm(ctx: Ctx, label: str) -> bool:
    """The collector receives Binance quotes (a hot standby, not one still starting)."""
    return metric(ctx.stack.collector(label), "ratesvc_source_up", source="binance") == 1


def _winner(ctx: Ctx) -> str:
    """Who holds the lease now, for the report."""
    label, term = _leading_term(ctx)
    who = {"standby": "the standby", "run": "the collector `ratesvc run` restarted"}
    return f"{who.get(label, 'no collector')} (term {term})"


def _newest_term(ctx: Ctx) -> int:
    newest = ctx.stack.rdb.xrevrange("ratesvc:ticks", count=1)
    return int(newest[0][1].get("term", 0)) if newest else 0


def s11_standby(ctx: Ctx, row: Row) -> None:
    """Hot standby: SIGKILL the collector holding the lease; the other one takes over."""
    st, ledger = ctx.stack, ctx.ledger
    port = free_port()
    standby = st.spawn(
        "standby", ["collector"], COLLECTOR_ID="bench-standby", COLLECTOR_METRICS_PORT=str(port)
    )
    st.collector_ports["standby"] = port
    try:
        if wait_for(lambda: _warm(ctx, "standby") and _leader(ctx), 60, 0.2) is None:
            raise RuntimeError(f"standby collector not up:\n{standby.tail(2000)}")
        time.sleep(1.0)
        leader = _leader(ctx)
        term = int(metric(st.collector(leader), "ratesvc_collector_lease_term"))
        pid = st.role_pid("collector") if leader == "run" else standby.pid
        killed_at: list[float] = []

        def kill() -> None:
            killed_at.append(time.monotonic())
            os.kill(pid, signal.SIGKILL)

        ledger.end_collector(leader, kill, term)
        t0 = killed_at[0]
        st.prices({"BTCUSDT": "70321"})
        flowing = until(lambda: _newest_term(ctx) > term, t0, 30)
        visible = until(lambda: st.value("binance", "BTC-USD") == "70321", t0, 30)
        other = until(lambda: _leading_term(ctx)[1] > term, t0, 30)
        samples = ctx.watcher.window(t0)
        st.prices({"BTCUSDT": "70000"})
        row.detect = f"killed the {leader} collector (term {term}); {_winner(ctx)} leads after"
        row.detect += f" {secs(other, 30)}"
        row.recover = (
            f"ticks flow again (new term in the stream) after {secs(flowing, 30)}; "
            f"a price change visible after {secs(visible, 30)}"
        )
        row.notes.append(
            "the standby and the restarted collector race for the lease when it expires; "
            f"{describe(samples)}"
        )
        row.ok = flowing is not None and visible is not None
    finally:
        term = int(metric(st.collector("standby"), "ratesvc_collector_lease_term"))
        ledger.end_collector("standby", standby.stop, term)
        ledger.retire("standby")
        wait_for(lambda: _leader(ctx) == "run", 30, 0.2)
