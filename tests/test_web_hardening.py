"""What a browser may do with trainflow's answers (issue 10): user bytes never run on our origin,
CORS only for configured origins, experiment names that cannot be squatted, no 500 on odd input."""

from __future__ import annotations

import io

import pytest

from trainflow.web_security import MLFLOW_UI_POLICY, USER_BYTES_ENDPOINTS, USER_BYTES_POLICY

API = "/api/2.0/mlflow"
TRAIN = "/ajax-api/2.0/mlflow/train"
PROXY = "/api/2.0/mlflow-artifacts/artifacts"
ORIGIN = "http://localhost:1234"

# name -> (bytes, whether a browser may show it inline under its own type)
ARTIFACTS = {
    "x.mjs": (b"export default 1; alert(document.domain)", False),
    "x.js": (b"alert(document.domain)", False),
    "x.html": (b"<script>alert(document.domain)</script>", False),
    "x.htm": (b"<script>alert(1)</script>", False),
    "x.xhtml": (b'<html xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></html>', False),
    "x.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', False),
    "x.xml": (b"<?xml version='1.0'?><x/>", False),
    "x.css": (b"body{background:url(//evil)}", False),
    "noext": (b"<script>alert(1)</script>", False),
    "x.txt": (b"plain text", True),
    "x.json": (b'{"a": 1}', True),
    "x.png": (b"\x89PNG\r\n\x1a\n not really", True),
}


def run_with_artifacts(client, user):  # type: ignore[no-untyped-def]
    """An experiment and run of `user` with every artifact of ARTIFACTS, uploaded through the proxy."""
    experiment = client.post(
        f"{API}/experiments/create", json={"name": f"{user.username}/web"}, headers=user.basic
    )
    assert experiment.status_code == 200, experiment.json
    experiment_id = experiment.json["experiment_id"]
    run = client.post(f"{API}/runs/create", json={"experiment_id": experiment_id}, headers=user.basic)
    assert run.status_code == 200, run.json
    info = run.json["run"]["info"]
    prefix = info["artifact_uri"].removeprefix("mlflow-artifacts:/")
    for name, (content, _) in ARTIFACTS.items():
        put = client.put(f"{PROXY}/{prefix}/{name}", data=content, headers=user.basic)
        assert put.status_code == 200, put.data
    return info["run_id"], prefix


def model_version_of(client, user, run_id, prefix):  # type: ignore[no-untyped-def]
    created = client.post(f"{API}/registered-models/create", json={"name": "web-model"}, headers=user.basic)
    assert created.status_code == 200, created.json
    version = client.post(
        f"{API}/model-versions/create",
        json={"name": "web-model", "source": f"mlflow-artifacts:/{prefix}", "run_id": run_id},
        headers=user.basic,
    )
    assert version.status_code == 200, version.json
    return version.json["model_version"]["version"]


@pytest.fixture
def artifact_urls(client, alice):  # type: ignore[no-untyped-def]
    """name -> the URLs that serve it: get-artifact, the proxy (both prefixes), the model version's."""
    run_id, prefix = run_with_artifacts(client, alice)
    version = model_version_of(client, alice, run_id, prefix)
    return {
        name: [
            f"/get-artifact?run_id={run_id}&path={name}",
            f"{PROXY}/{prefix}/{name}",
            f"/ajax-api/2.0/mlflow-artifacts/artifacts/{prefix}/{name}",
            f"/model-versions/get-artifact?name=web-model&version={version}&path={name}",
        ]
        for name in ARTIFACTS
    }


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_artifacts_never_run_on_our_origin(client, alice, artifact_urls, name):
    content, is_inert = ARTIFACTS[name]
    for url in artifact_urls[name]:
        response = client.get(url, headers=alice.basic)
        assert response.status_code == 200, (url, response.data[:300])
        assert response.data == content, url
        assert response.headers["X-Content-Type-Options"] == "nosniff", url
        assert response.headers["Content-Security-Policy"] == USER_BYTES_POLICY, url
        assert response.headers["Content-Disposition"].startswith("attachment"), url
        if not is_inert:  # a type no browser runs, and nosniff keeps it so
            assert response.mimetype in {"application/octet-stream", "text/plain"}, url
        response.close()


def test_an_inert_type_keeps_its_type(client, alice, artifact_urls):
    response = client.get(artifact_urls["x.png"][0], headers=alice.basic)
    assert response.mimetype == "image/png"
    response.close()


def test_every_route_that_serves_artifact_bytes_is_protected(app):
    """A new MLflow route that serves artifact bytes fails here until it is in USER_BYTES_ENDPOINTS."""
    json_only = {
        "_list_artifacts",
        "_list_artifacts_mlflow_artifacts",
        "_get_presigned_download_url",
        "_list_logged_model_artifacts",
        "_upload_artifact",
        "_delete_artifact_mlflow_artifacts",
        "upload_artifact_handler",
        "_create_multipart_upload_artifact",
        "_complete_multipart_upload_artifact",
        "_abort_multipart_upload_artifact",
    }
    routes = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert USER_BYTES_ENDPOINTS <= routes
    serving = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if "GET" in (rule.methods or ()) and "artifact" in rule.rule and rule.endpoint not in json_only
    }
    assert serving <= USER_BYTES_ENDPOINTS, serving - USER_BYTES_ENDPOINTS


@pytest.mark.parametrize(("filename", "content"), [("train.py", b"print(1)\n"), ("page.html.py", b"x = 1\n")])
def test_a_scripts_content_is_sandboxed(client, alice, filename, content):
    upload = client.post(
        f"{TRAIN}/upload",
        data={"file": (io.BytesIO(content), filename)},
        headers=alice.basic,
        content_type="multipart/form-data",
    )
    assert upload.status_code == 201, upload.json
    response = client.get(f"{TRAIN}/scripts/{upload.json['script']}/content", headers=alice.basic)
    assert response.data == content
    assert response.mimetype == "text/x-python"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == USER_BYTES_POLICY
    response.close()


def submit_job(client, user, **body):  # type: ignore[no-untyped-def]
    upload = client.post(
        f"{TRAIN}/upload",
        data={"file": (io.BytesIO(b"print('hi')\n"), "train.py")},
        headers=user.basic,
        content_type="multipart/form-data",
    )
    assert upload.status_code == 201, upload.json
    return client.post(f"{TRAIN}/jobs", json={"script_id": upload.json["script"], **body}, headers=user.basic)


def test_a_jobs_log_download_is_sandboxed(client, alice):
    job = submit_job(client, alice)
    assert job.status_code == 201, job.json
    response = client.get(f"{TRAIN}/jobs/{job.json['job']}/logs/download", headers=alice.basic)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == USER_BYTES_POLICY
    response.close()


def test_a_log_offset_past_any_file_is_an_empty_page(client, alice, settings):
    job = submit_job(client, alice)
    folder = settings.jobs_dir / str(job.json["job"])  # as a job that ran leaves it: log and index
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs.ndjson").write_text('{"n": 0, "ts": 1.0, "stream": "stdout", "line": "hi"}\n')
    (folder / "logs.idx").write_bytes((0).to_bytes(8, "little"))
    response = client.get(
        f"{TRAIN}/jobs/{job.json['job']}/logs?offset=10000000000000000", headers=alice.basic
    )
    assert response.status_code == 200, response.json
    assert response.json["lines"] == []


def test_a_log_offset_beyond_64_bits_is_a_400(client, alice):
    job = submit_job(client, alice)
    response = client.get(f"{TRAIN}/jobs/{job.json['job']}/logs?offset={10**30}", headers=alice.basic)
    assert response.status_code == 400, response.json
    assert "offset" in response.json["error"]["message"]


# --- the MLflow UI ------------------------------------------------------------------------------


def test_the_mlflow_ui_has_its_policy(client, alice):
    page = client.get("/", headers=alice.basic)
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == MLFLOW_UI_POLICY
    assert page.headers["X-Frame-Options"] == "SAMEORIGIN"
    page.close()
    asset = client.get("/static-files/favicon.ico")
    assert asset.headers["Content-Security-Policy"] == MLFLOW_UI_POLICY
    asset.close()


def test_the_mlflow_ui_policy_runs_no_inline_or_foreign_script():
    directives = dict(d.strip().split(" ", 1) for d in MLFLOW_UI_POLICY.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert "*" not in MLFLOW_UI_POLICY


def test_the_dashboard_keeps_its_own_policy(client):
    from trainflow.web.views import CONTENT_SECURITY_POLICY

    response = client.get("/train/")
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    response.close()


@pytest.mark.parametrize("page", ["jobs/12", "a%0Ab", "%0A", "/twice", "x%1F%C2%9E%00y"])
def test_every_page_under_train_is_the_dashboard_even_an_odd_one(client, page):
    """The browser routes pages; the server answers every /train/<path> with the same HTML."""
    from trainflow.web.views import CONTENT_SECURITY_POLICY

    response = client.get(f"/train/{page}")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    response.close()


def test_an_unknown_host_header_is_refused(client, alice):
    """DNS rebinding: a page on evil.example.com that resolves to this server is not answered."""
    response = client.get(f"{API}/experiments/search", headers={**alice.basic, "Host": "evil.example.com"})
    assert response.status_code == 403
    assert response.json["error"]["code"] == "invalid_host"
    assert client.get("/api/health", headers={"Host": "evil.example.com"}).status_code == 200


# --- CORS ---------------------------------------------------------------------------------------


def preflight(client, origin=ORIGIN):  # type: ignore[no-untyped-def]
    return client.options(
        f"{API}/experiments/search",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_no_origin_gets_cors_by_default(client, alice):
    assert "Access-Control-Allow-Origin" not in preflight(client).headers
    read = client.get(f"{API}/experiments/search?max_results=1", headers={**alice.basic, "Origin": ORIGIN})
    assert read.status_code == 200
    assert "Access-Control-Allow-Origin" not in read.headers
    assert "Access-Control-Allow-Credentials" not in read.headers


def test_a_localhost_page_cannot_change_anything_by_default(client, alice):
    response = client.post(
        f"{API}/experiments/create",
        json={"name": "from-elsewhere"},
        headers={**alice.basic, "Origin": ORIGIN},
    )
    assert response.status_code == 403
    assert response.json["error"]["code"] == "cross_origin_refused"
    found = client.get(f"{API}/experiments/get-by-name?experiment_name=from-elsewhere", headers=alice.basic)
    assert found.status_code == 404


def test_the_servers_own_pages_may_change_things(client, alice):
    response = client.post(
        f"{API}/experiments/create",
        json={"name": "same-origin"},
        headers={**alice.basic, "Origin": "http://localhost"},
    )
    assert response.status_code == 200, response.json


@pytest.fixture
def cors_client(app, settings):  # type: ignore[no-untyped-def]
    from tests.conftest import dispose
    from trainflow.app import create_app

    configured = create_app(settings.replace(cors_origins=f"{ORIGIN}, https://app.example.com"))
    yield configured.test_client()
    dispose(configured)


def test_a_configured_origin_gets_credentialed_cors(cors_client, alice):
    answer = preflight(cors_client)
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    created = cors_client.post(
        f"{API}/experiments/create", json={"name": "from-the-app"}, headers={**alice.basic, "Origin": ORIGIN}
    )
    assert created.status_code == 200, created.json
    assert created.headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize("origin", ["http://localhost:12345", "https://app.example.com.evil.net", "null"])
def test_only_the_configured_origins_get_cors(cors_client, alice, origin):
    assert "Access-Control-Allow-Origin" not in preflight(cors_client, origin).headers
    refused = cors_client.post(
        f"{API}/experiments/create", json={"name": "x"}, headers={**alice.basic, "Origin": origin}
    )
    assert refused.status_code == 403


@pytest.mark.parametrize("value", ["localhost:1234", "http://a.example.com/path", "ftp://a.example.com"])
def test_a_malformed_origin_is_a_start_up_error(settings, value):
    from trainflow.errors import ConfigError
    from trainflow.web_security import cors_origins

    with pytest.raises(ConfigError, match="TRAINFLOW_CORS_ORIGINS"):
        cors_origins(settings.replace(cors_origins=value))


# --- experiment names ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [API, "/ajax-api/2.0/mlflow"])
@pytest.mark.parametrize("name", ["alice/train", "ALICE/train", "alice/", "/alice/train"])
def test_no_one_creates_an_experiment_in_another_users_namespace(client, alice, bob, prefix, name):
    response = client.post(f"{prefix}/experiments/create", json={"name": name}, headers=bob.basic)
    assert response.status_code == 403, response.json
    assert "bob/" in response.json["error"]["message"]


def test_no_one_renames_an_experiment_into_another_users_namespace(client, alice, bob):
    mine = client.post(f"{API}/experiments/create", json={"name": "bob/mine"}, headers=bob.basic)
    assert mine.status_code == 200
    renamed = client.post(
        f"{API}/experiments/update",
        json={"experiment_id": mine.json["experiment_id"], "new_name": "alice/train"},
        headers=bob.basic,
    )
    assert renamed.status_code == 403


@pytest.mark.parametrize("name", ["bob/train", "Bob/other", "plain-name"])
def test_own_and_plain_names_are_free(client, bob, name):
    response = client.post(f"{API}/experiments/create", json={"name": name}, headers=bob.basic)
    assert response.status_code == 200, response.json


def test_an_admin_names_anything(client, admin, alice):
    response = client.post(f"{API}/experiments/create", json={"name": "alice/shared"}, headers=admin.basic)
    assert response.status_code == 200, response.json


def test_a_squatter_cannot_break_someones_default_submissions(client, alice, bob):
    squat = client.post(f"{API}/experiments/create", json={"name": "alice/train"}, headers=bob.basic)
    assert squat.status_code == 403
    job = submit_job(client, alice)
    assert job.status_code == 201, job.json
    experiment = client.get(
        f"{API}/experiments/get?experiment_id={job.json['experiment_id']}", headers=alice.basic
    )
    assert experiment.json["experiment"]["name"] == "alice/train"


def test_a_job_cannot_create_an_experiment_in_another_users_namespace(client, alice, bob):
    job = submit_job(client, bob, experiment_name="alice/train")
    assert job.status_code == 403, job.json
    assert (
        client.get(
            f"{API}/experiments/get-by-name?experiment_name=alice/train", headers=alice.basic
        ).status_code
        == 404
    )


def test_a_default_experiment_someone_else_made_earlier_says_what_to_do(client, admin, alice):
    """Made before names were reserved (or by an admin): the owner is told, not given a bare 403."""
    made = client.post(f"{API}/experiments/create", json={"name": "alice/train"}, headers=admin.basic)
    assert made.status_code == 200
    job = submit_job(client, alice)
    assert job.status_code == 403
    assert "an admin can rename it" in job.json["error"]["message"]
