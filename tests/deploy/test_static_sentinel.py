"""docker-compose.sentinel.yml, validated with the real compose CLI (no Docker engine needed).

Merged over docker-compose.yml (and the sim override), it must add a replica and three sentinels
with healthchecks, hand every ratesvc role a Sentinel REDIS_URL that ratesvc accepts and that
names the sentinels and the service they monitor, and start the roles only once the sentinels
name a master.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from ratesvc.redis_url import parse_sentinel_url
from ratesvc.settings import Settings
from tests.deploy.native import (
    COMPOSE_FILE,
    COMPOSE_SENTINEL_FILE,
    COMPOSE_SIM_FILE,
    compose_config,
)

SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
REDIS_ROLES = ("collector", "collector-standby", "persister", "api")


@pytest.fixture(name="stack")
def stack_fixture(tmp_path) -> dict[str, Any]:
    return compose_config(tmp_path, COMPOSE_FILE, COMPOSE_SENTINEL_FILE)["services"]


def sentinel_script(service: dict[str, Any]) -> str:
    return " ".join(service["command"])


def test_the_overlay_adds_a_replica_and_three_healthchecked_sentinels(stack):
    for name in ("redis", "redis-replica", *SENTINELS):
        service = stack[name]
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
        assert not service.get("ports"), f"{name} must not be published"
    replica = stack["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert replica[replica.index("--appendonly") + 1] == "yes"
    for name in ("redis", "redis-replica"):
        command = stack[name]["command"]
        assert command[command.index("--replica-announce-ip") + 1] == name


def test_the_sentinels_monitor_the_primary_with_a_majority_quorum(stack):
    for name in SENTINELS:
        script = sentinel_script(stack[name])
        monitor = re.search(r"sentinel monitor (\S+) (\S+) (\d+) (\d+)", script)
        assert monitor is not None, name
        assert monitor.groups()[1:] == ("redis", "6379", "2"), "quorum 2 of 3 sentinels"
        assert "--sentinel" in script and "resolve-hostnames yes" in script
        assert stack[name]["environment"]["SENTINEL_NAME"] == name
        assert stack[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_role_finds_the_master_through_the_sentinels(stack):
    monitored = re.search(r"sentinel monitor (\S+)", sentinel_script(stack["sentinel-1"]))
    assert monitored is not None
    for role in (*REDIS_ROLES, "migrate"):
        env = stack[role]["environment"]
        url = parse_sentinel_url(env["REDIS_URL"])
        assert {host for host, _port in url.sentinels} == set(SENTINELS), role
        assert {port for _host, port in url.sentinels} == {26379}, role
        assert url.service == monitored.group(1), role
        assert Settings(_env_file=None, redis_url=env["REDIS_URL"]).redis_url is not None
        assert env["DATABASE_URL"].startswith("postgres://"), "override must merge, not replace"
    for role in REDIS_ROLES:
        for sentinel in SENTINELS:
            assert stack[role]["depends_on"][sentinel]["condition"] == "service_healthy", role


def test_the_overlay_combines_with_the_simulator(tmp_path):
    stack = compose_config(tmp_path, COMPOSE_FILE, COMPOSE_SIM_FILE, COMPOSE_SENTINEL_FILE)
    collector = stack["services"]["collector"]
    assert collector["environment"]["BINANCE_WS_URL"] == "ws://sim:18443"
    assert collector["environment"]["REDIS_URL"].startswith("redis+sentinel://")
    assert {"sim", *SENTINELS} <= set(collector["depends_on"])
