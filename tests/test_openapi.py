"""The OpenAPI document comes from the code that validates requests (issue 3)."""

from __future__ import annotations

from trainflow.accounts.schemas import RegisterRequest, ReplaceUserRequest


def test_the_document_is_openapi_3_1_and_public(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"] == "3.1.0"
    assert {"bearer", "basic"} <= set(spec["components"]["securitySchemes"])


def test_every_trainflow_route_is_documented(app, client):
    import re

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
