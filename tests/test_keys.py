"""The JWT signing key: configured, or generated once into the data directory (issue 3)."""

from __future__ import annotations

import os
import stat

import pytest

from trainflow.errors import ConfigError
from trainflow.keys import load_secret_key
from trainflow.settings import Settings


def test_a_generated_key_is_private_and_reused(tmp_path):
    settings = Settings(data_dir=tmp_path)
    first = load_secret_key(settings)
    path = tmp_path / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 43
    assert load_secret_key(settings) == first


def test_a_key_file_readable_by_others_is_tightened(tmp_path):
    settings = Settings(data_dir=tmp_path)
    load_secret_key(settings)
    os.chmod(tmp_path / "secret_key", 0o644)
    load_secret_key(settings)
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


def test_the_setting_wins_and_must_be_long(tmp_path):
    assert load_secret_key(Settings(data_dir=tmp_path, secret_key="k" * 40)) == "k" * 40
    assert not (tmp_path / "secret_key").exists()
    with pytest.raises(ConfigError, match="at least 32"):
        load_secret_key(Settings(data_dir=tmp_path, secret_key="short"))


def test_tokens_survive_a_restart_on_the_same_data_directory(settings, alice, app):
    from trainflow.app import create_app

    token = alice.login()["access_token"]
    restarted = create_app(settings)
    assert (
        restarted.test_client().get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )


def test_the_key_is_never_in_a_response_or_the_settings_repr(settings, app, client, alice):
    key = app.config["JWT_SECRET_KEY"]
    tokens = alice.login()
    for response in (
        client.get("/api/health"),
        client.get("/api/openapi.json"),
        client.get("/api/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}),
    ):
        assert key not in response.get_data(as_text=True)
    assert key not in str(tokens)
    assert "k" * 40 not in repr(settings.replace(secret_key="k" * 40))
