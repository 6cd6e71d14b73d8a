"""The OpenAPI document comes from the code that validates requests (issue 3)."""

from __future__ import annotations

import re

from trainflow.accounts.schemas import RegisterRequest, ReplaceUserRequest


def test_the_document_is_openapi_3_1_and_public(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"] == "3.1.0"
    assert {"bearer", "basic"} <= set(spec["components"]["securitySchemes"])


def test_every_trainflow_route_is_documented(app, client):
    spec = client.get("/api/openapi.json").json
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    own = ("accounts.", "meta.", "scripts.", "jobs.")
    rules = [
        r
        for r in app.url_map.iter_rules()
        if r.endpoint.startswith(own) and not r.endpoint.endswith(".static")
    ]
    assert len(rules) >= 20
    for rule in rules:
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)


def test_request_schemas_are_the_validating_models(client):
    spec = client.get("/api/openapi.json").json
    schemas = spec["components"]["schemas"]
    assert schemas["RegisterRequest"] == RegisterRequest.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    put = spec["paths"]["/api/users/{user_id}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReplaceUserRequest")
    assert set(schemas["ReplaceUserRequest"]["required"]) == set(ReplaceUserRequest.model_fields)
    assert put["parameters"][0] == {
        "name": "user_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer"},
    }


def test_paging_parameters_carry_their_limits(client):
    spec = client.get("/api/openapi.json").json
    params = {p["name"]: p for p in spec["paths"]["/api/users"]["get"]["parameters"]}
    assert params["size"]["schema"]["maximum"] == 100 and params["page"]["schema"]["minimum"] == 1


def test_public_and_protected_routes_are_marked(client):
    paths = client.get("/api/openapi.json").json["paths"]
    assert "security" not in paths["/api/login"]["post"]
    assert "security" in paths["/api/users"]["get"]


def test_docs_page_is_served_with_a_strict_csp(client):
    response = client.get("/api/docs")
    assert response.status_code == 200 and b"trainflow API" in response.data
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    response.close()
    script = client.get("/api/static/docs.js")
    assert script.status_code == 200 and b"openapi.json" in script.data
    script.close()


# -- issue 11: every status a route can answer, and the validation rules ------------------------

PROTECTED = ("401", "403", "429")
SERVER = ("408", "414", "431")


def _operations(spec):
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_every_protected_operation_declares_sign_in_failures_and_429(client):
    spec = client.get("/api/openapi.json").json
    protected = [(p, m, op) for p, m, op in _operations(spec) if "security" in op]
    assert len(protected) >= 20
    for path, method, op in protected:
        for status in PROTECTED:
            assert status in op["responses"], (method, path, status)


def test_the_429_tells_when_to_retry(client):
    spec = client.get("/api/openapi.json").json
    too_many = spec["paths"]["/api/users"]["get"]["responses"]["429"]
    assert "Retry-After" in too_many["headers"]
    assert "TRAINFLOW_LOGIN_ATTEMPTS" in too_many["description"]


def test_every_operation_declares_what_the_server_answers_before_a_route_runs(client):
    spec = client.get("/api/openapi.json").json
    for path, method, op in _operations(spec):
        for status in SERVER:
            assert status in op["responses"], (method, path, status)


def test_every_operation_reading_a_json_body_declares_400_and_415(client):
    spec = client.get("/api/openapi.json").json
    with_json = [
        (p, m, op)
        for p, m, op in _operations(spec)
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]
    assert len(with_json) >= 8
    for path, method, op in with_json:
        assert {"400", "415"} <= set(op["responses"]), (method, path)


def test_operations_on_the_database_declare_503_and_static_pages_do_not(client):
    paths = client.get("/api/openapi.json").json["paths"]
    assert "503" in paths["/api/health"]["get"]["responses"]
    assert "503" in paths["/ajax-api/2.0/mlflow/train/jobs"]["get"]["responses"]
    assert "503" not in paths["/api/docs"]["get"]["responses"]
    assert "503" not in paths["/api/openapi.json"]["get"]["responses"]


def test_writes_declare_507(client):
    paths = client.get("/api/openapi.json").json["paths"]
    assert "507" in paths["/api/register"]["post"]["responses"]
    assert "507" in paths["/api/users/{user_id}"]["delete"]["responses"]
    assert "507" not in paths["/api/users/{user_id}"]["get"]["responses"]


def test_other_successes_are_declared(client):
    paths = client.get("/api/openapi.json").json["paths"]
    cancel = paths["/ajax-api/2.0/mlflow/train/jobs/{job_id}/cancel"]["post"]["responses"]
    assert cancel["202"]["content"] == cancel["200"]["content"]
    events = paths["/ajax-api/2.0/mlflow/train/jobs/{job_id}/events"]["get"]["responses"]
    assert "content" not in events["204"]


def test_password_length_is_in_the_document(client):
    schemas = client.get("/api/openapi.json").json["components"]["schemas"]
    for name in ("RegisterRequest", "CreateUserRequest"):
        password = schemas[name]["properties"]["password"]
        assert password["minLength"] == 8, name
        assert password["maxLength"] == 1024, name
    assert schemas["ChangePasswordRequest"]["properties"]["new_password"]["minLength"] == 8


def _string_member(prop):
    return next(member for member in prop["anyOf"] if member.get("type") == "string")


def test_phone_and_email_formats_are_in_the_document(client):
    schemas = client.get("/api/openapi.json").json["components"]["schemas"]
    for name in ("RegisterRequest", "PatchUserRequest", "ReplaceUserRequest"):
        assert "pattern" in _string_member(schemas[name]["properties"]["phone"]), name
        assert "pattern" in _string_member(schemas[name]["properties"]["email"]), name
        assert "pattern" in schemas[name]["properties"]["username"] or name == "PatchUserRequest"


PHONES = ["+44 20 7946 0958", "(030) 1234-567", "555.0100", "12345", "+", "phone 5550100", "1" * 33]


def test_the_documented_phone_pattern_is_the_one_enforced(client, alice):
    schemas = client.get("/api/openapi.json").json["components"]["schemas"]
    pattern = _string_member(schemas["PatchUserRequest"]["properties"]["phone"])["pattern"]
    for phone in PHONES:
        response = client.patch(f"/api/users/{alice.id}", json={"phone": phone}, headers=alice.basic)
        documented = re.search(pattern, phone) is not None
        assert (response.status_code == 200) == documented, (phone, response.json)


def test_the_documented_password_length_is_the_one_enforced(client, alice):
    schemas = client.get("/api/openapi.json").json["components"]["schemas"]
    rule = schemas["ChangePasswordRequest"]["properties"]["new_password"]
    for length in (7, 1025, 8):  # the one that works last: it changes the password
        password = ("Xq7-" * 300)[:length]
        response = client.post(
            "/api/me/password",
            json={"old_password": alice.password, "new_password": password},
            headers=alice.basic,
        )
        documented = rule["minLength"] <= length <= rule["maxLength"]
        assert (response.status_code == 200) == documented, (length, response.json)


def test_streams_files_and_pages_declare_what_they_answer(client):
    paths = client.get("/api/openapi.json").json["paths"]
    events = paths["/ajax-api/2.0/mlflow/train/jobs/{job_id}/events"]["get"]["responses"]["200"]
    assert set(events["content"]) == {"application/x-ndjson", "text/event-stream"}
    download = paths["/ajax-api/2.0/mlflow/train/jobs/{job_id}/logs/download"]["get"]["responses"]["200"]
    assert set(download["content"]) == {"text/plain"}
    assert set(paths["/api/docs"]["get"]["responses"]["200"]["content"]) == {"text/html"}


def test_a_path_naming_an_object_declares_404_and_the_dashboard_does_not(client):
    paths = client.get("/api/openapi.json").json["paths"]
    assert "404" in paths["/ajax-api/2.0/mlflow/train/jobs/{job_id}"]["get"]["responses"]
    assert "404" not in paths["/train/{path}"]["get"]["responses"]
