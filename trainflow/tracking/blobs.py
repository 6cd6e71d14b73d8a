"""Files every host reaches, kept in the artifact store (``TRAINFLOW_ARTIFACTS_URI``).

In shared mode the hosts have data directories of their own, so what one host stores for all
(an uploaded script's original) goes to the artifact store runs use: a shared folder, S3, MinIO
or any other of MLflow's artifact repositories, reached through MLflow's repository registry.
Names are relative paths under that store (``trainflow-scripts/<key>/original``); run artifacts
live under experiment ids, so the two never meet.

A remote store's calls wait on the network with the timeouts of MLflow's own clients
(``MLFLOW_HTTP_REQUEST_TIMEOUT`` for HTTP-based stores, boto's for S3).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainflow.settings import Settings


class BlobMissing(FileNotFoundError):
    """The named file is not in the store."""


class ArtifactBlobs:
    """Put, fetch and delete whole files under one MLflow artifact store."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _repository(self) -> Any:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(self.uri)

    def put(self, name: str, source: Path) -> None:
        """Store ``source`` as ``name`` (the file's own name must be the last part of ``name``)."""
        folder, base = posixpath.split(name)
        if source.name != base:
            raise ValueError(f"{source} must be named {base!r} to be stored as {name!r}")
        self._repository().log_artifact(str(source), folder)

    def fetch(self, name: str, destination: Path) -> None:
        """Copy ``name`` to the file ``destination``; :class:`BlobMissing` if it is not stored."""
        from mlflow.exceptions import MlflowException

        folder, base = posixpath.split(name)
        repository = self._repository()
        try:
            listed = {posixpath.basename(info.path) for info in repository.list_artifacts(folder)}
        except (MlflowException, OSError) as e:
            raise BlobMissing(f"{name} is not in the artifact store: {e}") from None
        if base not in listed:
            raise BlobMissing(f"{name} is not in the artifact store ({self.uri})")
        with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
            fetched = Path(scratch) / base
            # Every repository implements this one-file download (download_artifacts adds a
            # progress bar on stderr, and a listing per folder).
            repository._download_file(name, str(fetched))
            os.replace(fetched, destination)

    def delete(self, name: str) -> None:
        """Remove ``name``'s folder (``trainflow-scripts/<key>``) from the store; gone already is fine."""
        from mlflow.exceptions import MlflowException

        folder = posixpath.dirname(name)
        try:
            self._repository().delete_artifacts(folder)
        except FileNotFoundError:
            pass
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    def exists(self, name: str) -> bool:
        folder, base = posixpath.split(name)
        try:
            listed = self._repository().list_artifacts(folder)
        except FileNotFoundError:
            return False
        return base in {posixpath.basename(info.path) for info in listed}


def shared_blobs(settings: Settings) -> ArtifactBlobs | None:
    """The shared store of shared mode; ``None`` on one host (its data directory is the store)."""
    return ArtifactBlobs(settings.artifacts_destination) if settings.shared else None
