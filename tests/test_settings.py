"""Settings come from TRAINFLOW_* variables, are typed, and are all documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainflow.errors import ConfigError
from trainflow.jobs import sandboxing
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


SHARED = {
    "TRAINFLOW_SHARED": "true",
    "TRAINFLOW_DATABASE_URL": "postgresql://trainflow@db.internal/trainflow",
    "TRAINFLOW_REDIS_URL": "redis://redis.internal:6379/0",
    "TRAINFLOW_SECRET_KEY": "k" * 48,
    "TRAINFLOW_ARTIFACTS_URI": "s3://artifacts/trainflow",
    "TRAINFLOW_PUBLIC_URL": "http://trainflow.internal:8080",
}


def test_shared_mode_refuses_to_start_half_configured_and_names_every_missing_piece():
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"TRAINFLOW_SHARED": "true"})
    for variable in (
        "TRAINFLOW_DATABASE_URL",
        "TRAINFLOW_REDIS_URL",
        "TRAINFLOW_SECRET_KEY",
        "TRAINFLOW_ARTIFACTS_URI",
        "TRAINFLOW_PUBLIC_URL",
    ):
        assert variable in str(refused.value)
    with pytest.raises(ConfigError, match="TRAINFLOW_REDIS_URL") as refused:
        Settings.from_env({**SHARED, "TRAINFLOW_REDIS_URL": ""})
    assert "TRAINFLOW_SECRET_KEY" not in str(refused.value)  # only what is missing


def test_shared_mode_starts_with_every_piece_and_jobs_use_the_public_url():
    settings = Settings.from_env(SHARED)
    assert settings.shared
    assert settings.jobs_tracking_url == "http://trainflow.internal:8080"
    assert settings.artifacts_destination == "s3://artifacts/trainflow"
    assert sandboxing.server_ports(settings) == [5000, 8080]  # a sandboxed job may reach both


def test_without_a_public_url_jobs_reach_this_host_and_artifacts_stay_in_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path, port=5123)
    assert settings.jobs_tracking_url == "http://127.0.0.1:5123"
    assert settings.artifacts_destination == str(tmp_path.resolve() / "artifacts")
    assert sandboxing.server_ports(settings) == [5123]


@pytest.mark.parametrize("url", ["trainflow.internal:5000", "ftp://trainflow.internal", "http://"])
def test_a_public_url_that_is_not_http_is_refused(url):
    with pytest.raises(ConfigError, match="TRAINFLOW_PUBLIC_URL"):
        Settings(public_url=url)
