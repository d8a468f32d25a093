"""`python -m testkit.standins`: build (or reuse) every stand-in in the private engine, leave the
engine running and print how to use it (see README.md here)."""

from __future__ import annotations

import sys
from pathlib import Path

from testkit.engine import RUN_DIR, EngineUnavailable, engine_lock, start_private_engine
from testkit.standins import STANDINS, StandinBuilder

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    """Build or reuse the stand-ins; 1 when no private engine can be started."""
    with engine_lock(timeout_s=60):
        try:
            engine = start_private_engine()
        except EngineUnavailable as err:
            print(f"no private engine: {err}", file=sys.stderr)
            return 1
        outcome = StandinBuilder(engine, project_root=ROOT).ensure(STANDINS)
    for image, how in outcome.items():
        print(f"{how:>7}  {image}  ({STANDINS[image]})")
    print(f"\nexport DOCKER_HOST={engine.host}")
    print(f"# stop the engine when done: kill $(cat {RUN_DIR / 'dockerd.pid'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
