"""Where scripts' originals are kept for every host, in shared mode.

The scripts package knows nothing of MLflow, so the store is registered from above
(``create_app`` registers :class:`trainflow.tracking.blobs.ArtifactBlobs` in shared mode); on
one host none is registered and the data directory holds everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flask import Flask

EXTENSION = "trainflow.shared_files"
PREFIX = "trainflow-scripts"


class SharedFiles(Protocol):
    """A store of whole files that every host reaches, by relative name."""

    def put(self, name: str, source: Path) -> None: ...

    def fetch(self, name: str, destination: Path) -> None:
        """Copy ``name`` to the file ``destination``; FileNotFoundError if it is not stored."""

    def delete(self, name: str) -> None: ...


def init_app(app: Flask, store: SharedFiles | None) -> None:
    app.extensions[EXTENSION] = store


def shared_files(app: Flask) -> SharedFiles | None:
    """The app's shared store, or ``None`` when its data directory is the only copy."""
    store: SharedFiles | None = app.extensions.get(EXTENSION)
    return store


def original_name(storage_key: str) -> str:
    """A script's original in the shared store: ``trainflow-scripts/<key>/original``."""
    return f"{PREFIX}/{storage_key}/original"
