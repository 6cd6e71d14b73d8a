"""Settings come from TRAINFLOW_* variables, are typed, and are all documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainflow.errors import ConfigError
from trainflow.settings import Settings, documented_settings, normalize_database_url, settings_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs" / "SETTINGS.md"


def test_defaults_need_nothing_installed():
    settings = Settings.from_env({})
    assert settings.port == 5000 and settings.host == "127.0.0.1"
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.resolved_database_url.endswith("/data/trainflow.db")


def test_environment_values_are_parsed():
    settings = Settings.from_env(
        {
            "TRAINFLOW_PORT": "8080",
            "TRAINFLOW_HOST": "0.0.0.0",
            "TRAINFLOW_DATA_DIR": "/srv/tf",
            "TRAINFLOW_REGISTRATION_OPEN": "false",
            "TRAINFLOW_DATABASE_URL": "postgresql://u@db/tf",
        }
    )
    assert settings.port == 8080 and settings.host == "0.0.0.0"
    assert settings.resolved_data_dir == Path("/srv/tf")
    assert settings.is_registration_open is False
    assert settings.resolved_database_url == "postgresql+psycopg2://u@db/tf"


@pytest.mark.parametrize(
    ("name", "value"), [("TRAINFLOW_PORT", "eighty"), ("TRAINFLOW_REGISTRATION_OPEN", "maybe")]
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_database_urls_keep_explicit_drivers():
    assert normalize_database_url("postgresql+psycopg2://x/y") == "postgresql+psycopg2://x/y"
    assert normalize_database_url("postgres://x/y") == "postgresql+psycopg2://x/y"
    assert normalize_database_url("sqlite:///a.db") == "sqlite:///a.db"


def test_every_setting_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    for env, _default, help_text in documented_settings():
        assert f"`{env}`" in text, f"{env} is missing from docs/SETTINGS.md"
        assert help_text, env
    assert text == settings_markdown(), "regenerate: python -m trainflow.settings > docs/SETTINGS.md"
