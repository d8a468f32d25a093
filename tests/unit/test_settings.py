"""Settings: defaults, .env reading, and one clear line naming a bad variable."""

import pytest

from ratesvc.cli import main
from ratesvc.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (
        *("LOG_LEVEL", "SOURCES", "DATABASE_URL", "REDIS_URL", "FAILBACK_HOLD_DOWN_S"),
        *("FORWARDED_ALLOW_IPS", "API_ACCESS_LOG"),
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_need_no_environment():
    settings = load_settings(None)
    assert settings.redis_url is None and settings.database_url is None
    assert settings.exchanger_preference == ["binance", "coingecko"]
    assert settings.failback_hold_down_s == 10


def test_env_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("LOG_LEVEL=DEBUG\nFAILBACK_HOLD_DOWN_S=3\n")
    monkeypatch.setenv("FAILBACK_HOLD_DOWN_S", "7")
    settings = load_settings(env)
    assert settings.log_level == "DEBUG"
    assert settings.failback_hold_down_s == 7


@pytest.mark.parametrize(
    "name,value",
    [
        ("LOG_LEVEL", "LOUD"),
        ("SOURCES", "binance,kraken"),
        ("FAILBACK_HOLD_DOWN_S", "-1"),
        ("DATABASE_URL", "mysql://x@y/z"),
        ("REDIS_URL", "http://localhost"),
        ("FORWARDED_ALLOW_IPS", "haproxy"),  # a name: uvicorn would never match it
        ("FORWARDED_ALLOW_IPS", "10.0.0.1/24"),  # host bits set: uvicorn would ignore it
        ("FORWARDED_ALLOW_IPS", "*,10.0.0.1"),
        ("FORWARDED_ALLOW_IPS", "127.0.0.1,300.1.2.3"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings(None)
    message = str(err.value)
    assert message.startswith(f"invalid setting {name}:")
    assert "\n" not in message


def test_secrets_are_not_echoed_in_errors(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://user:hunter2@db/x")
    with pytest.raises(SettingsError) as err:
        load_settings(None)
    assert "hunter2" not in str(err.value)


def test_postgresql_scheme_is_accepted_and_normalised(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@h:5432/db")
    url = load_settings(None).database_url
    assert url is not None and url.get_secret_value() == "postgres://u:p@h:5432/db"
    assert "p@h" not in repr(url)


def test_cli_exits_2_with_the_one_line_message(monkeypatch, capsys):
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    assert main(["--env-file", "/nonexistent", "migrate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ratesvc: invalid setting LOG_LEVEL:")


@pytest.mark.parametrize(
    ("value", "trusted"),
    [
        (None, ["127.0.0.1", "::1"]),  # the default: loopback only
        ("10.89.53.0/24, 192.0.2.7,fd00::/8", ["10.89.53.0/24", "192.0.2.7", "fd00::/8"]),
        ("*", ["*"]),
        ("", []),  # no proxy is trusted
    ],
)
def test_forwarded_allow_ips_takes_addresses_and_networks(monkeypatch, value, trusted):
    if value is not None:
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", value)
    assert load_settings(None).forwarded_allow_ips == trusted
