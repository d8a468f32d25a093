"""The Locust load test (locust/locustfile.py) agrees with the running service.

Every Locust user checks each answer (status, headers, body, problem type); a short headless run
against `ratesvc run` fails here when the API and the load test's expectations drift apart.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import PRICES, Service, Sim, all_served, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RUN_S = 8


def test_a_short_locust_run_has_every_kind_of_request_and_no_failure(
    service: Service, sim: Sim, tmp_path: Path
) -> None:
    wait_until(lambda: all_served(service, "binance"), what="binance values")
    command = [
        *(sys.executable, "-m", "locust", "-f", str(ROOT / "locust" / "locustfile.py")),
        *("--headless", "--host", f"http://127.0.0.1:{service.port}"),
        *("-u", "40", "-r", "40", "-t", f"{RUN_S}s", "--stop-timeout", "3"),
        *("--csv", str(tmp_path / "run"), "--only-summary", "--loglevel", "WARNING"),
    ]
    locust = subprocess.Popen(  # pylint: disable=consider-using-with
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for price in ("70001", "70002", "70003"):  # new ETags: pollers must get 200, then 304
            time.sleep(RUN_S / 4)
            sim.post("/prices", {"binance": {"BTCUSDT": price}})
        output, _ = locust.communicate(timeout=RUN_S + 60)
    finally:
        locust.kill()
        sim.post("/prices", PRICES)
    with (tmp_path / "run_stats.csv").open(newline="", encoding="utf-8") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    assert locust.returncode == 0, output[-3000:]
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    names = set(rows) - {"Aggregated"}
    assert {n for n in names if "(poll, If-None-Match)" in n}, names
    assert {n for n in names if "filters" in n}, names
    assert {n for n in names if n.startswith("bad: ")}, names
    # API v2 and the push (the locustfile runs every class when none is named)
    assert "/v2/courses (poll, If-None-Match)" in names, names
    assert "/v2/stream (connect)" in names, names
    assert int(rows["/v2/stream event (ms since newest leg)"]["Request Count"]) > 0, names
