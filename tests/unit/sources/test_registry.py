"""The source registry: load_sources(), option_models() and one-line settings errors."""

# test names say what they check
# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ratesvc.settings import SettingsError
from ratesvc.sources import load_sources, option_models, register, registry
from ratesvc.sources.binance import BinanceSource
from ratesvc.sources.coingecko import CoinGeckoSource


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit BINANCE_*/COINGECKO_* from the shell."""
    for name in list(os.environ):
        if name.startswith(("BINANCE_", "COINGECKO_")):
            monkeypatch.delenv(name)


def test_load_sources_builds_the_named_sources_in_order() -> None:
    coingecko, binance = load_sources(["coingecko", "binance"], env_file=None)
    assert isinstance(coingecko, CoinGeckoSource) and isinstance(binance, BinanceSource)
    assert (coingecko.name, coingecko.stale_after_s) == ("coingecko", 900)
    assert (binance.name, binance.stale_after_s) == ("binance", 5)


def test_option_models_cover_every_registered_source() -> None:
    models = option_models()
    assert set(models) == set(registry()) >= {"binance", "coingecko"}
    assert models["binance"].model_config["env_prefix"] == "BINANCE_"


def test_env_file_values_are_used(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("BINANCE_STREAM=aggTrade\nCOINGECKO_ACTIVE_POLL_INTERVAL_S=45\nOTHER=1\n")
    binance, coingecko = load_sources(["binance", "coingecko"], env_file=env_file)
    assert binance.options.stream == "aggTrade"  # type: ignore[attr-defined]
    assert coingecko.poll_interval_s() == 300  # type: ignore[attr-defined]
    coingecko.set_active(True)
    assert coingecko.poll_interval_s() == 45  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        ("COINGECKO_POLL_INTERVAL_S", "soon", "invalid setting COINGECKO_POLL_INTERVAL_S: "),
        ("COINGECKO_STALE_AFTER_S", "60", "invalid setting COINGECKO_STALE_AFTER_S: must exceed"),
        ("COINGECKO_PLAN", "free", "invalid setting COINGECKO_PLAN: "),
        ("BINANCE_STREAM", "depth", "invalid setting BINANCE_STREAM: "),
        ("BINANCE_WS_URL", "http://x", "invalid setting BINANCE_WS_URL: must start with ws://"),
        ("BINANCE_USDC_CORRECTION", "maybe", "invalid setting BINANCE_USDC_CORRECTION: "),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, line: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_sources(["binance", "coingecko"], env_file=None)
    assert str(caught.value).startswith(line)
    assert "\n" not in str(caught.value)


def test_the_api_key_never_appears_in_errors_or_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COINGECKO_API_KEY", "CG-topsecret")
    [source] = load_sources(["coingecko"], env_file=None)
    assert "CG-topsecret" not in repr(source.options)  # type: ignore[attr-defined]
    monkeypatch.setenv("COINGECKO_API_URL", "ftp://x")
    with pytest.raises(SettingsError) as caught:
        load_sources(["coingecko"], env_file=None)
    assert "CG-topsecret" not in str(caught.value)


def test_unknown_source_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="unknown source"):
        load_sources(["kraken"], env_file=None)


def test_every_variable_is_documented_in_its_module_docstring() -> None:
    for name, model in option_models().items():
        doc = sys.modules[registry()[name].__module__].__doc__ or ""
        prefix = model.model_config["env_prefix"]
        for field in model.model_fields:
            assert f"| {prefix}{field.upper()} |" in doc, f"{prefix}{field.upper()} undocumented"


def test_register_refuses_a_second_class_under_the_same_name() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("binance")(CoinGeckoSource)
