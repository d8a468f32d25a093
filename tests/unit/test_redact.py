"""Passwords never reach a screen or a log: URLs, log lines, tracebacks, reprs, the run banner."""

from __future__ import annotations

import pytest
from loguru import logger

from ratesvc.cli import main
from ratesvc.embedded import Servers
from ratesvc.logs import configure_logging
from ratesvc.redact import redact_text, redact_url
from ratesvc.runner import Child, _print_banner
from ratesvc.settings import load_settings, reveal

SECRET = "s3cr3t-Pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cr3t-Pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://app:s3cr3t-Pw@cache:6379/0", "redis://app:***@cache:6379/0"),
        (
            "rediss://default:s3cr3t-Pw@cache.example:6380",
            "rediss://default:***@cache.example:6380",
        ),
        (
            "unix:///run/redis.sock?db=2&password=s3cr3t-Pw",
            "unix:///run/redis.sock?db=2&password=***",
        ),
        ("redis://cache:6379/0?password=s3cr3t-Pw", "redis://cache:6379/0?password=***"),
        (
            "redis+sentinel://:s3cr3t-Pw@s1:26379,s2:26379,s3:26379/mymaster/2",
            "redis+sentinel://:***@s1:26379,s2:26379,s3:26379/mymaster/2",
        ),
        (
            "redis+sentinel://:s3cr3t-Pw@s1:26379/mymaster",
            "redis+sentinel://:***@s1:26379/mymaster",
        ),
        ("postgres://ratesvc:s3cr3t-Pw@db:5432/ratesvc", "postgres://ratesvc:***@db:5432/ratesvc"),
        ("postgres://u:s3cr3t%40Pw@db/x?sslmode=require", "postgres://u:***@db/x?sslmode=require"),
        # unencoded reserved characters in the password: still hidden whole
        ("postgres://u:s3cr3t@/Pw@db:5432/x", "postgres://u:***@db:5432/x"),
        ("redis://:s3cr3t/P?w@cache:6379/0", "redis://:***@cache:6379/0"),
    ],
)
def test_a_url_is_shown_with_its_password_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cr3t" not in redact_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis+sentinel://s1:26379,s2:26379/mymaster/0",
        "postgres://postgres@127.0.0.1:5432/ratesvc",  # a user name alone is not a secret
        "unix:///run/redis.sock?db=2",
    ],
)
def test_a_url_without_a_password_is_shown_as_it_is(url: str) -> None:
    assert redact_url(url) == url


def test_every_url_in_a_text_is_masked_and_the_rest_kept() -> None:
    text = (
        "Error connecting to redis://:s3cr3t-Pw@cache:6379/0; fallback "
        "'postgres://u:s3cr3t@Pw@db:5432/x' failed too (user bob@example.org)"
    )
    assert redact_text(text) == (
        "Error connecting to redis://:***@cache:6379/0; fallback "
        "'postgres://u:***@db:5432/x' failed too (user bob@example.org)"
    )


def test_settings_keep_both_urls_secret_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://:{SECRET}@cache:6379/0")
    monkeypatch.setenv("DATABASE_URL", f"postgres://u:{SECRET}@db:5432/x")
    settings = load_settings(None)
    for shown in (repr(settings), str(settings), str(settings.model_dump())):
        assert SECRET not in shown
    assert reveal(settings.redis_url) == f"redis://:{SECRET}@cache:6379/0"
    assert reveal(None) is None


@pytest.mark.parametrize("name", ["REDIS_URL", "DATABASE_URL"])
def test_a_bad_url_setting_is_named_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    monkeypatch.setenv(name, f"mysql://u:{SECRET}@db/x")
    assert main(["--env-file", "/nonexistent", "migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ratesvc: invalid setting {name}:") and SECRET not in err


def test_the_log_sink_masks_messages_and_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", role="test")
    try:
        logger.warning("redis not reachable at redis://:{pw}@cache:6379/0", pw=SECRET)
        try:
            raise ConnectionError(f"cannot reach postgres://u:{SECRET}@db:5432/x")
        except ConnectionError:
            logger.exception("persister failed")
    finally:
        configure_logging("INFO")
    err = capsys.readouterr().err
    assert "redis://:***@cache:6379/0" in err and "postgres://u:***@db:5432/x" in err
    assert "Traceback" in err and SECRET not in err


def test_a_failed_command_is_logged_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # port 1 refuses at once: the migration fails on its first connection
    monkeypatch.setenv("DATABASE_URL", f"postgres://u:{SECRET}@127.0.0.1:1/x")
    try:
        assert main(["--env-file", "/nonexistent", "migrate"]) == 1
    finally:
        configure_logging("INFO")
    err = capsys.readouterr().err
    assert "ratesvc migrate failed: ConnectionRefusedError" in err and SECRET not in err


def test_the_run_banner_and_reprs_mask_external_urls(capsys: pytest.CaptureFixture[str]) -> None:
    servers = Servers(
        redis_url=f"redis+sentinel://:{SECRET}@s1:26379,s2:26379/mymaster/0",
        database_url=f"postgres://ratesvc:{SECRET}@db:5432/ratesvc",
    )
    _print_banner("0.0.0.0", 8000, servers, load_settings(None))
    out = capsys.readouterr().out
    assert "redis+sentinel://:***@s1:26379,s2:26379/mymaster/0 (external)" in out
    assert "postgres://ratesvc:***@db:5432/ratesvc (external)" in out
    assert "http://127.0.0.1:8000/courses" in out
    child = Child("api", ["ratesvc", "api"], {"REDIS_URL": servers.redis_url})
    for shown in (out, repr(servers), repr(child)):
        assert SECRET not in shown
