"""The committed API contract: docs/openapi.json is what the app serves (drift fails with the
command that regenerates it), no breaking change against the baseline and against the version
committed in git, the bearer security scheme, problem documents on every error response, and
the breaking-change check itself on synthetic before/after pairs."""

from __future__ import annotations

import copy
import json
import os

import pytest

from services.cli import openapi as contract
from services.cli.openapi import BASELINE_PATH, REGENERATE, SPEC_PATH, breaking_changes, render


@pytest.fixture(scope="module")
def spec() -> dict:
    return contract.document()


def test_committed_spec_matches_the_app(spec):
    assert SPEC_PATH.exists(), f"{SPEC_PATH} is missing; generate it with: {REGENERATE}"
    committed = SPEC_PATH.read_text()
    assert committed == render(spec), (
        f"{SPEC_PATH.relative_to(contract.ROOT)} differs from the app's OpenAPI document; "
        f"regenerate it with: {REGENERATE} (and review the diff: is any of it breaking?)"
    )


def test_rendering_is_deterministic(spec):
    text = render(spec)
    assert text == render(contract.document())
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _explain(found: list[str], against: str) -> str:
    return (
        f"breaking changes against {against}:\n  " + "\n  ".join(found) + "\nIf they are "
        "deliberate (a new API version the app team agreed to), bump the baseline in the same "
        f"change: {REGENERATE} && cp docs/openapi.json docs/openapi.baseline.json, and write the "
        "migration note in docs/gateway.md"
    )


def test_no_breaking_change_against_the_baseline(spec):
    baseline = json.loads(BASELINE_PATH.read_text())
    found = breaking_changes(baseline, spec)
    assert not found, _explain(found, "docs/openapi.baseline.json")


def test_no_breaking_change_against_the_committed_version(spec):
    """Against docs/openapi.json at OPENAPI_BASE_REF (CI: the branch the change merges into),
    else HEAD (local work). Skipped where git has no such file (a tarball, a shallow clone
    without that commit, the commit that adds the file): the baseline test still runs."""
    ref = os.environ.get("OPENAPI_BASE_REF", "HEAD")
    before = contract.git_spec(ref)
    if before is None:
        pytest.skip(f"no docs/openapi.json at git ref {ref!r}")
    found = breaking_changes(before, spec)
    bumped = BASELINE_PATH.read_text() == render(spec) and (
        contract.git_spec(ref, "docs/openapi.baseline.json") != json.loads(render(spec))
    )
    assert not found or bumped, _explain(found, f"docs/openapi.json at {ref}")


def test_security_is_http_bearer_jwt(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {
        "FirebaseIdToken": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": schemes["FirebaseIdToken"]["description"],
        }
    }
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not path.startswith("/v1/"):
                assert "security" not in operation, (method, path)
            elif path.endswith("/result"):  # the signed result link needs no token
                assert operation["security"] == [{"FirebaseIdToken": []}, {}]
            else:
                assert operation["security"] == [{"FirebaseIdToken": []}], (method, path)
                params = {p["name"].lower() for p in operation.get("parameters", [])}
                assert "authorization" not in params, (method, path)


def test_every_error_response_is_a_problem_document(spec):
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code", "error"}
    assert problem["properties"]["error"]["deprecated"] is True
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            if path.startswith("/v1/"):
                assert {"401", "500", "503"} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"] == {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    }, (method, path, status)
                    assert response["description"], (method, path, status)
    create = spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"400", "413", "415", "422", "429"} <= set(create)
    assert "Retry-After" in create["429"]["headers"] and "Retry-After" in create["503"]["headers"]


def test_job_view_documents_queue_position_and_links(spec):
    view = spec["components"]["schemas"]["JobView"]
    assert {"queue_position", "links", "eta_seconds"} <= set(view["required"])
    links = spec["components"]["schemas"]["JobLinks"]
    assert set(links["properties"]) == {"self", "events", "cancel", "result"}


def test_cli_check_fails_on_a_stale_file_and_names_the_command(tmp_path, capsys):
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    assert contract.main(["--check", "--output", str(stale)]) == 1
    assert REGENERATE in capsys.readouterr().err
    assert contract.main(["--output", str(stale)]) == 0
    assert contract.main(["--check", "--output", str(stale)]) == 0
    assert stale.read_text() == SPEC_PATH.read_text()


# --------------------------------------------------- the check on synthetic spec pairs --


def _spec() -> dict:
    """A small spec with what the checks look at: paths, parameters, bodies, responses."""
    return {
        "openapi": "3.1.0",
        "paths": {
            "/v1/things": {
                "get": {
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                    ],
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Page"}
                                }
                            }
                        }
                    },
                },
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Create"}}
                        },
                    },
                    "responses": {
                        "202": {
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Thing"}
                                }
                            }
                        },
                        "422": {
                            "content": {
                                "application/problem+json": {
                                    "schema": {"$ref": "#/components/schemas/Problem"}
                                }
                            }
                        },
                    },
                },
            },
            "/v1/things/{id}": {
                "get": {
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Thing"}
                                }
                            }
                        }
                    },
                },
                "delete": {"responses": {"200": {"description": "gone"}}},
            },
        },
        "components": {
            "schemas": {
                "Create": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["url"],
                    "properties": {
                        "url": {"type": "string", "maxLength": 2048},
                        "seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                        "options": {"$ref": "#/components/schemas/Options"},
                    },
                },
                "Options": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"scale": {"type": "number", "minimum": 0}},
                },
                "Thing": {
                    "type": "object",
                    "required": ["id", "status", "progress"],
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"type": "string", "enum": ["queued", "done"]},
                        "progress": {"type": "number", "minimum": 0, "maximum": 1},
                        "eta": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Page": {
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Thing"}}
                    },
                },
                "Problem": {
                    "type": "object",
                    "required": ["code", "detail"],
                    "properties": {
                        "code": {"type": "string"},
                        "detail": {"type": "string"},
                        "error": {"type": "object"},
                    },
                },
            }
        },
    }


def _schemas(spec: dict) -> dict:
    return spec["components"]["schemas"]


BREAKING = {
    "path removed": lambda s: s["paths"].pop("/v1/things/{id}"),
    "operation removed": lambda s: s["paths"]["/v1/things/{id}"].pop("delete"),
    "success response removed": lambda s: s["paths"]["/v1/things"]["post"]["responses"].pop("202"),
    "response field removed": lambda s: _schemas(s)["Thing"]["properties"].pop("eta"),
    "response field removed deep (array of refs)": lambda s: _schemas(s)["Thing"]["properties"].pop(
        "tags"
    ),
    "error body field removed": lambda s: _schemas(s)["Problem"]["properties"].pop("error"),
    "response field no longer always present": lambda s: _schemas(s)["Thing"]["required"].remove(
        "progress"
    ),
    "response field may now be null": lambda s: _schemas(s)["Thing"]["properties"].update(
        id={"anyOf": [{"type": "string"}, {"type": "null"}]}
    ),
    "response enum widened": lambda s: _schemas(s)["Thing"]["properties"]["status"]["enum"].append(
        "failed"
    ),
    "response bound widened": lambda s: _schemas(s)["Thing"]["properties"]["progress"].update(
        maximum=100
    ),
    "request field made required": lambda s: _schemas(s)["Create"]["required"].append("mode"),
    "new required request field": lambda s: (
        _schemas(s)["Create"]["properties"].update(kind={"type": "string"}),
        _schemas(s)["Create"]["required"].append("kind"),
    ),
    "request field removed from a closed object": lambda s: _schemas(s)["Create"]["properties"].pop(
        "mode"
    ),
    "request enum narrowed": lambda s: _schemas(s)["Create"]["properties"]["mode"].update(
        enum=["a"]
    ),
    "request enum added": lambda s: _schemas(s)["Create"]["properties"]["note"].update(
        anyOf=[{"type": "string", "enum": ["x"]}, {"type": "null"}]
    ),
    "request type narrowed": lambda s: _schemas(s)["Create"]["properties"]["seconds"].update(
        type="integer"
    ),
    "request null no longer accepted": lambda s: _schemas(s)["Create"]["properties"].update(
        note={"type": "string"}
    ),
    "request maximum lowered": lambda s: _schemas(s)["Create"]["properties"]["seconds"].update(
        maximum=5
    ),
    "request exclusive bound at the same value": lambda s: _schemas(s)["Options"]["properties"][
        "scale"
    ].update(minimum=None, exclusiveMinimum=0),
    "request maxLength lowered": lambda s: _schemas(s)["Create"]["properties"]["url"].update(
        maxLength=100
    ),
    "request pattern added": lambda s: _schemas(s)["Create"]["properties"]["url"].update(
        pattern="^https://"
    ),
    "nested request bound (through a $ref)": lambda s: _schemas(s)["Options"]["properties"][
        "scale"
    ].update(minimum=1),
    "query parameter now required": lambda s: s["paths"]["/v1/things"]["get"]["parameters"][
        0
    ].update(required=True),
    "new required header": lambda s: s["paths"]["/v1/things"]["get"]["parameters"].append(
        {"name": "X-Tenant", "in": "header", "required": True, "schema": {"type": "string"}}
    ),
    "query bound narrowed": lambda s: s["paths"]["/v1/things"]["get"]["parameters"][0][
        "schema"
    ].update(maximum=50),
    "parameter removed": lambda s: s["paths"]["/v1/things"]["get"].pop("parameters"),
    "request media type removed": lambda s: (
        s["paths"]["/v1/things"]["post"]["requestBody"]["content"].update(
            {"multipart/form-data": {}}
        )
        or s["paths"]["/v1/things"]["post"]["requestBody"]["content"].pop("application/json")
    ),
    "response media type removed": lambda s: s["paths"]["/v1/things/{id}"]["get"]["responses"][
        "200"
    ].update(content={"text/plain": {"schema": {"type": "string"}}}),
}


def _refuse_extras(s: dict) -> None:
    s["components"]["schemas"]["Open"] = {"type": "object", "properties": {}}
    s["paths"]["/v1/things/{id}"]["delete"]["requestBody"] = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Open"}}}
    }


def _clean(value):
    """Drop keys set to None by the edits above (a way to delete a key in a lambda)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@pytest.mark.parametrize("name", list(BREAKING))
def test_breaking_changes_are_flagged(name):
    old = _spec()
    new = copy.deepcopy(old)
    BREAKING[name](new)
    found = breaking_changes(old, _clean(new))
    assert found, f"{name} was not flagged"


def test_refusing_unknown_request_fields_is_flagged():
    old = _spec()
    _refuse_extras(old)
    new = copy.deepcopy(old)
    new["components"]["schemas"]["Open"]["additionalProperties"] = False
    assert any("unknown fields" in line for line in breaking_changes(old, new))


COMPATIBLE = {
    "nothing changed": lambda s: None,
    "path added": lambda s: s["paths"].update({"/v1/other": {"get": {"responses": {}}}}),
    "operation added": lambda s: s["paths"]["/v1/things/{id}"].update(
        patch={"responses": {"200": {"description": "ok"}}}
    ),
    "response field added": lambda s: (
        _schemas(s)["Thing"]["properties"].update(links={"type": "object"}),
        _schemas(s)["Thing"]["required"].append("links"),
    ),
    "optional request field added": lambda s: _schemas(s)["Create"]["properties"].update(
        extra={"type": "boolean"}
    ),
    "request field made optional": lambda s: _schemas(s)["Create"].update(required=[]),
    "request enum widened": lambda s: _schemas(s)["Create"]["properties"]["mode"]["enum"].append(
        "c"
    ),
    "request bound relaxed": lambda s: _schemas(s)["Create"]["properties"]["seconds"].update(
        maximum=20
    ),
    "request integer widened to number": lambda s: s["paths"]["/v1/things"]["get"]["parameters"][0][
        "schema"
    ].update(type="number"),
    "request may now be null": lambda s: _schemas(s)["Create"]["properties"].update(
        seconds={
            "anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 10}, {"type": "null"}]
        }
    ),
    "response enum narrowed": lambda s: _schemas(s)["Thing"]["properties"]["status"].update(
        enum=["done"]
    ),
    "response no longer null": lambda s: _schemas(s)["Thing"]["properties"].update(
        eta={"type": "number"}
    ),
    "response bound tightened": lambda s: _schemas(s)["Thing"]["properties"]["progress"].update(
        maximum=0.99
    ),
    "response field made always present": lambda s: _schemas(s)["Thing"]["required"].append("eta"),
    "error response removed": lambda s: s["paths"]["/v1/things"]["post"]["responses"].pop("422"),
    "error response added": lambda s: s["paths"]["/v1/things/{id}"]["get"]["responses"].update(
        {"404": {"description": "none"}}
    ),
    "descriptions and titles changed": lambda s: _schemas(s)["Thing"].update(
        description="a thing", title="Thing!"
    ),
    "request media type added": lambda s: s["paths"]["/v1/things"]["post"]["requestBody"][
        "content"
    ].update({"multipart/form-data": {"schema": {"type": "object"}}}),
    "optional query parameter added": lambda s: s["paths"]["/v1/things"]["get"][
        "parameters"
    ].append({"name": "cursor", "in": "query", "schema": {"type": "string"}}),
    "schema moved behind a $ref": lambda s: (
        _schemas(s).update(Tags={"type": "array", "items": {"type": "string"}}),
        _schemas(s)["Thing"]["properties"].update(tags={"$ref": "#/components/schemas/Tags"}),
    ),
    "keys reordered": lambda s: s["paths"].update(dict(reversed(list(s["paths"].items())))),
}


@pytest.mark.parametrize("name", list(COMPATIBLE))
def test_compatible_changes_are_not_flagged(name):
    old = _spec()
    new = copy.deepcopy(old)
    COMPATIBLE[name](new)
    assert breaking_changes(old, new) == []


def test_a_recursive_schema_terminates():
    old = _spec()
    _schemas(old)["Thing"]["properties"]["children"] = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Thing"},
    }
    new = copy.deepcopy(old)
    _schemas(new)["Thing"]["properties"].pop("eta")
    found = breaking_changes(old, new)
    assert found and all("eta" in line for line in found)


def test_the_real_spec_against_itself_and_a_real_break(spec):
    assert breaking_changes(spec, copy.deepcopy(spec)) == []
    broken = copy.deepcopy(spec)
    broken["components"]["schemas"]["Problem"]["properties"].pop("code")
    broken["components"]["schemas"]["Problem"]["required"].remove("code")
    found = breaking_changes(spec, broken)
    assert any("'code' removed" in line for line in found), found
