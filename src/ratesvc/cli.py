"""Command line: `ratesvc run | api | collector | persister | migrate | sim`.

Loads settings once, configures logging, and calls exactly one run_* per subcommand. A bad setting
stops the process with one line naming the variable (exit code 2); any other failure is logged
(passwords masked) and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from loguru import logger

from ratesvc import __version__
from ratesvc.embedded.process import EmbeddedServerError
from ratesvc.logs import configure_logging, connection_failure
from ratesvc.settings import DEFAULT_ENV_FILE, Settings, SettingsError, load_settings, reveal

SIM_BINANCE_PORT = 18443
SIM_COINGECKO_PORT = 18444


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and `--help`)."""
    parser = argparse.ArgumentParser(prog="ratesvc", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ratesvc {__version__}")
    parser.add_argument(
        "--env-file", type=Path, default=DEFAULT_ENV_FILE, help="dotenv file to read (default .env)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run", help="the whole service: embedded Redis/Postgres if unset, all roles"
    )
    run.add_argument("--host", default=None, help="API bind address (default API_HOST)")
    run.add_argument("--port", type=int, default=None, help="API port (default API_PORT)")
    run.add_argument(
        "--sim",
        action="store_true",
        help="offline: run the bundled market simulator too and point the collector at it "
        "(embedded servers under DATA_DIR/sim)",
    )
    api = sub.add_parser("api", help="HTTP API workers")
    api.add_argument("--host", default=None, help="bind address (default API_HOST)")
    api.add_argument("--port", type=int, default=None, help="port (default API_PORT)")
    api.add_argument(
        "--workers", type=int, default=None, help="worker processes (default API_WORKERS)"
    )
    sub.add_parser("collector", help="exchange adapters -> Redis stream")
    sub.add_parser("persister", help="Redis stream -> Postgres (consumer group)")
    sub.add_parser("migrate", help="apply the aerich migrations to DATABASE_URL")
    sim = sub.add_parser("sim", help="local Binance + CoinGecko simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--binance-port", type=int, default=SIM_BINANCE_PORT)
    sim.add_argument("--coingecko-port", type=int, default=SIM_COINGECKO_PORT)
    return parser


def _require(settings: Settings, *names: str) -> None:
    for name in names:
        if getattr(settings, name) is None:
            raise SettingsError(f"invalid setting {name.upper()}: required by this command")


def _cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from ratesvc.runner import run_all  # pylint: disable=import-outside-toplevel

    return run_all(settings, host=args.host, port=args.port, env_file=args.env_file, sim=args.sim)


def _cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from ratesvc.apiserver import serve_api  # pylint: disable=import-outside-toplevel

    _require(settings, "redis_url")
    serve_api(
        settings, host=args.host, port=args.port, workers=args.workers, env_file=args.env_file
    )
    return 0


def _cmd_collector(settings: Settings, args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel
    from ratesvc import metrics
    from ratesvc.lifecycle import run_until_stopped
    from ratesvc.sources import load_sources
    from ratesvc.workers.collector import run_collector

    _require(settings, "redis_url")
    sources = load_sources(settings.sources, env_file=args.env_file)
    metrics.serve(settings.collector_metrics_port, host=settings.metrics_host)
    asyncio.run(run_until_stopped(lambda stop: run_collector(settings, stop=stop, sources=sources)))
    return 0


def _cmd_persister(settings: Settings, _args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel
    from ratesvc import metrics
    from ratesvc.lifecycle import run_until_stopped
    from ratesvc.workers.persister import run_persister

    _require(settings, "redis_url", "database_url")
    metrics.serve(settings.persister_metrics_port, host=settings.metrics_host)
    asyncio.run(run_until_stopped(lambda stop: run_persister(settings, stop=stop)))
    return 0


def _cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from ratesvc.store.db import migrate  # pylint: disable=import-outside-toplevel

    _require(settings, "database_url")
    applied = asyncio.run(migrate(str(reveal(settings.database_url))))
    logger.info("migrations applied: {names}", names=applied or "none (up to date)")
    return 0


def _cmd_sim(_settings: Settings, args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel
    from ratesvc.lifecycle import run_until_stopped
    from ratesvc.sim.server import run_sim

    async def job(stop: asyncio.Event) -> None:
        await run_sim(
            host=args.host,
            binance_port=args.binance_port,
            coingecko_port=args.coingecko_port,
            stop=stop,
        )

    asyncio.run(run_until_stopped(job))
    return 0


COMMANDS = {
    "run": _cmd_run,
    "api": _cmd_api,
    "collector": _cmd_collector,
    "persister": _cmd_persister,
    "migrate": _cmd_migrate,
    "sim": _cmd_sim,
}


def validate_sources(settings: Settings, env_file: Path | None) -> None:
    """Validate every enabled venue's options now, so a bad value stops the process at start.

    Also refuses CoinGecko settings under which its call quota cannot keep its values and the
    FX leg of Binance's RUB crosses fresh (sources/coingecko.py `budget_refusal`).
    """
    # pylint: disable=import-outside-toplevel
    from ratesvc.sources import load_sources
    from ratesvc.sources.coingecko import CoinGeckoSource, budget_refusal

    sources = load_sources(settings.sources, env_file=env_file)
    fx_leg = "binance" in settings.sources and settings.fx_usdt_rub_source == "coingecko"
    for source in sources:
        if isinstance(source, CoinGeckoSource):
            refusal = budget_refusal(
                source.options, fx_stale_after_s=settings.fx_stale_after_s if fx_leg else None
            )
            if refusal:
                raise SettingsError(refusal)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ratesvc` console script and `python -m ratesvc`."""
    args = build_parser().parse_args(argv)
    env_file = args.env_file if args.env_file and args.env_file.exists() else None
    args.env_file = env_file
    try:
        settings = load_settings(env_file)
        if args.command in ("run", "collector"):
            validate_sources(settings, env_file)
    except SettingsError as err:
        print(f"ratesvc: {err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, role=args.command)
    try:
        return COMMANDS[args.command](settings, args)
    except SettingsError as err:
        print(f"ratesvc: {err}", file=sys.stderr)
        return 2
    except EmbeddedServerError as err:  # one line naming what to set, never a traceback
        print(f"ratesvc: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    # A command that fails is logged through the one sink, which masks passwords (a driver's error
    # may quote its URL); a refused or lost connection is one line, anything else a traceback.
    except Exception as err:  # pylint: disable=broad-exception-caught
        brief = connection_failure((type(err), err, err.__traceback__))
        if brief:
            logger.error("ratesvc {command} failed: {brief}", command=args.command, brief=brief)
        else:
            logger.exception("ratesvc {command} failed", command=args.command)
        return 1
