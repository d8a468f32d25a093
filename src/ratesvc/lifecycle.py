"""Process lifecycle: run coroutines until SIGINT/SIGTERM, then cancel them gracefully."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from loguru import logger

Job = Callable[[asyncio.Event], Awaitable[None]]


def install_signal_handlers(stop: asyncio.Event) -> None:
    """Set `stop` on SIGINT/SIGTERM (a second signal is left to the default handler)."""
    loop = asyncio.get_running_loop()

    def _on_signal(signame: str) -> None:
        logger.info("received {sig}, stopping", sig=signame)
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal, signal.Signals(sig).name)


async def run_until_stopped(
    *jobs: Job, stop: asyncio.Event | None = None, grace_s: float = 10.0
) -> None:
    """Run every job with a shared stop event; the first job to fail stops the others.

    Jobs are expected to return soon after `stop` is set; those still running after `grace_s`
    are cancelled.
    """
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    tasks = [asyncio.create_task(job(stop)) for job in jobs]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    failed = [t for t in done if t is not stopper and not t.cancelled() and t.exception()]
    _, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stopper.cancel()
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
