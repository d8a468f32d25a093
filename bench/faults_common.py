"""What every scenario of bench/faults.py shares: its context, its result row, feature checks."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faults_ledger import Ledger
from faults_stack import Stack, metric
from faults_watch import Watcher

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Ctx:
    """The running system, its accounting and its poller; `quick` shortens the fault windows."""

    stack: Stack
    ledger: Ledger
    watcher: Watcher
    quick: bool = False


@dataclass
class Row:  # pylint: disable=too-many-instance-attributes
    """One line of the report."""

    num: int
    fault: str
    target: str = ""
    detect: str = "-"
    recover: str = "-"
    lost: str = "-"
    duplicates: str = "-"
    ok: bool | None = None
    status: str = "measured"
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        if self.status != "measured":
            return self.status
        return {True: "yes", False: "**NO**", None: "-"}[self.ok]


def binance_transport(ctx: Ctx, label: str = "run") -> str:
    """'ws', 'rest' or '' from the collector's ratesvc_source_transport gauge."""
    scraped = ctx.stack.collector(label)
    for transport in ("ws", "rest"):
        if metric(scraped, "ratesvc_source_transport", source="binance", transport=transport):
            return transport
    return ""


# ------------------------------------------------------------------ features (built or not yet)
def fields_of(model: Any) -> dict[str, Any]:
    """A pydantic model's fields by name."""
    return dict(getattr(model, "model_fields"))


def _module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def missing_rest_fallback() -> str | None:
    """None when Binance's REST fallback transport exists, else why the row is not measured."""
    if not _module("ratesvc.sources.binance_rest"):
        return "Binance REST fallback not built yet (src/ratesvc/sources/binance_rest.py)"
    from ratesvc.sources.binance import (  # pylint: disable=import-outside-toplevel
        BinanceOptions,
    )

    if "rest_fallback" not in fields_of(BinanceOptions):
        return "Binance REST fallback not built yet (no BINANCE_REST_FALLBACK)"
    return None


def missing_budget() -> str | None:
    """None when the CoinGecko call budget exists."""
    from ratesvc import metrics  # pylint: disable=import-outside-toplevel

    if not _module("ratesvc.sources.budget") or not hasattr(metrics, "COINGECKO_BUDGET_REMAINING"):
        return "CoinGecko call budget not built yet (ratesvc_coingecko_budget_remaining_calls)"
    return None


def missing_lease() -> str | None:
    """None when the hot-standby collector lease exists."""
    from ratesvc.settings import Settings  # pylint: disable=import-outside-toplevel

    if not _module("ratesvc.workers.lease") or "collector_lease_ms" not in fields_of(Settings):
        return "collector lease not built yet (src/ratesvc/workers/lease.py, COLLECTOR_LEASE_MS)"
    return None


def missing_haproxy() -> str | None:
    """None when the native HAProxy topology can run (haproxy + tests/deploy/native.py)."""
    if not (ROOT / "tests" / "deploy" / "native.py").exists():
        return "covered by the deployment issue (HAProxy); tests/deploy/native.py not present"
    if shutil.which("haproxy") is None:
        return "covered by the deployment issue (HAProxy); haproxy not installed"
    return None
