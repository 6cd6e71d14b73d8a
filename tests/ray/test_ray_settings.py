"""TRAINFLOW_EXECUTOR and TRAINFLOW_RAY_ADDRESS are checked at start-up (#13)."""

from __future__ import annotations

import pytest

from trainflow.errors import ConfigError
from trainflow.settings import Settings


def test_the_default_executor_is_local():
    assert Settings.from_env({}).executor == "local"


def test_an_unknown_executor_is_refused_by_name():
    with pytest.raises(ConfigError, match="TRAINFLOW_EXECUTOR must be local or ray"):
        Settings.from_env({"TRAINFLOW_EXECUTOR": "kubernetes"})


@pytest.mark.parametrize("address", ["", "127.0.0.1:8265", "ray://head:10001"])
def test_ray_needs_an_http_address(address):
    with pytest.raises(ConfigError, match="TRAINFLOW_RAY_ADDRESS"):
        Settings.from_env({"TRAINFLOW_EXECUTOR": "ray", "TRAINFLOW_RAY_ADDRESS": address})


def test_ray_with_its_address():
    settings = Settings.from_env({"TRAINFLOW_EXECUTOR": "ray", "TRAINFLOW_RAY_ADDRESS": "http://head:8265"})
    assert settings.ray_address == "http://head:8265"
