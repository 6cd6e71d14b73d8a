"""Artifacts go where TRAINFLOW_ARTIFACTS_URI says, behind the server's artifact proxy (#13)."""

from __future__ import annotations

from tests.conftest import dispose
from tests.tracking.test_permissions import _create_experiment, _create_run
from trainflow.app import create_app


def test_artifacts_are_stored_in_the_configured_store_and_read_back_through_the_proxy(
    settings, make_user, tmp_path
):
    store = tmp_path / "shared-artifacts"  # a folder every host mounts, say
    app = create_app(settings.replace(artifacts_uri=str(store)))
    try:
        client = app.test_client()
        alice = make_user("alice")
        experiment_id = _create_experiment(client, alice)
        run_id = _create_run(client, alice, experiment_id)
        path = f"{experiment_id}/{run_id}/artifacts/model.txt"
        proxy = f"/api/2.0/mlflow-artifacts/artifacts/{path}"
        assert client.put(proxy, data=b"weights", headers=alice.basic).status_code == 200
        assert (store / path).read_bytes() == b"weights"
        assert not (settings.artifacts_dir / path).exists()
        response = client.get(proxy, headers=alice.basic)
        assert (response.status_code, response.get_data()) == (200, b"weights")
        response.close()
    finally:
        dispose(app)
