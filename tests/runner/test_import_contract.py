"""The import contract that keeps trainflow.runner to the standard library names everything it must.

import-linter (``lint-imports`` in ``make lint`` and ``make test``) only forbids what the
contract lists, so a new trainflow module or a new dependency would slip past it unlisted.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def forbidden() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["source_modules"] == ["trainflow.runner"]]
    return set(contract["forbidden_modules"])


def requirements(name: str) -> set[str]:
    lines = (ROOT / name).read_text().splitlines()
    return {canonical(line.split("==")[0]) for line in lines if line and not line.startswith(("#", "-"))}


def canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_the_contract_forbids_every_trainflow_module_outside_the_runner():
    package = ROOT / "trainflow"
    modules = {p.stem for p in package.glob("*.py")} | {p.parent.name for p in package.glob("*/__init__.py")}
    expected = {f"trainflow.{name}" for name in modules - {"__init__", "runner"}}
    assert expected - forbidden() == set()


def test_the_contract_forbids_every_installed_third_party_package():
    installed = requirements("requirements.txt") | requirements("requirements-test.txt")
    expected = {
        top
        for top, distributions in importlib.metadata.packages_distributions().items()
        if top.isidentifier() and not top.startswith("_")
        if any(canonical(d) in installed for d in distributions)
    }
    assert expected - forbidden() == set()
