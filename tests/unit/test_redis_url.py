"""REDIS_URL forms: the Sentinel form DESIGN.md fixes is parsed; a malformed one is one line."""

import pytest

from ratesvc.redis_url import SentinelUrl, check_redis_url, parse_sentinel_url
from ratesvc.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://s1:26379,s2:26380,s3:26381/ratesvc",
            SentinelUrl((("s1", 26379), ("s2", 26380), ("s3", 26381)), "ratesvc", 0),
        ),
        (
            "redis+sentinel://:p%40ss@10.0.0.1:5000/mymaster/3",
            SentinelUrl((("10.0.0.1", 5000),), "mymaster", 3, None, "p@ss"),
        ),
        (
            "redis+sentinel://app:secret@[::1]:26379,sentinel-b/svc/0",
            SentinelUrl((("::1", 26379), ("sentinel-b", 26379)), "svc", 0, "app", "secret"),
        ),
    ],
)
def test_the_sentinel_form_names_sentinels_service_db_and_data_credentials(url, expected):
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379",  # no service
        "redis+sentinel://s1:26379/",
        "redis+sentinel://s1:26379/svc/x",  # db not a number
        "redis+sentinel://s1:26379/svc/0/extra",
        "redis+sentinel://s1:port/svc",
        "redis+sentinel://s1:70000/svc",
        "redis+sentinel://s1:26379,,s2:26379/svc",
        "redis+sentinel://[::1/svc",
        "redis+sentinel://secret@s1:26379/svc",  # a password needs its colon
        "redis+sentinel://s1:26379/svc?db=1",
        "sentinel://s1:26379/svc",
    ],
)
def test_a_malformed_redis_url_is_refused_with_the_expected_form(url):
    with pytest.raises(ValueError) as err:
        check_redis_url(url)
    assert "\n" not in str(err.value)


def test_settings_take_the_sentinel_form_and_refuse_a_malformed_one_in_one_line(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://:hunter2@s1:26379,s2:26379/ratesvc/1")
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", "sentinel-secret")
    settings = load_settings(None)
    assert settings.redis_url is not None and "hunter2" not in repr(settings)
    assert "sentinel-secret" not in repr(settings)

    monkeypatch.setenv("REDIS_URL", "redis+sentinel://:hunter2@s1:26379,s2:x/ratesvc")
    with pytest.raises(SettingsError) as err:
        load_settings(None)
    message = str(err.value)
    assert message.startswith("invalid setting REDIS_URL:") and "no valid port" in message
    assert "hunter2" not in message and "\n" not in message
