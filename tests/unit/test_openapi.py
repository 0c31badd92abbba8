"""The OpenAPI 3.1 document generated from the `google.api.http` rules (jobwire.server.api.openapi).

It must be a valid document, cover every route the transcoder serves, describe raw JSON fields as any
JSON, say exactly what the codec writes (checked by encoding filled and empty messages of every route,
JobService's and the transcoder tests' sample service with every field shape), and be the committed
gen/openapi/jobwire.v1.json.
"""

from __future__ import annotations

import json
import math
import runpy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
import schemathesis
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from schemathesis.core.result import Ok
from starlette.routing import Router
from starlette.testclient import TestClient

from jobwire.server.api import openapi
from jobwire.server.api.jobs import SERVICE
from jobwire.server.api.transcoder import Route, codec
from unit import transcoder_fixtures as fx

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "gen" / "openapi" / "jobwire.v1.json"
Document = dict[str, Any]


def comments() -> dict[str, str]:
    """The proto comments, compiled the way scripts/gen compiles them."""
    gen = runpy.run_path(str(ROOT / "scripts" / "gen"))
    files = gen["descriptor_set"](gen["our_protos"](ROOT / "proto"), imports=False)
    return openapi.comments_of(files.file)


@pytest.fixture(scope="module")
def document() -> Document:
    return openapi.build_document(SERVICE, comments())


@pytest.fixture(scope="module")
def sample_document() -> Document:
    return openapi.build_document(fx.SERVICE)


def oas31_validator() -> Callable[[Any], None] | None:
    """openapi-spec-validator when installed, else the OpenAPI 3.1 JSON Schema schemathesis ships."""
    try:
        from openapi_spec_validator import validate  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        check: Callable[[Any], None] = validate
        return check
    try:
        from schemathesis.specs.openapi import definitions
    except ImportError:  # pragma: no cover - moved in another schemathesis release
        return None
    return definitions.OPENAPI_31_VALIDATOR.validate


def schemas_in(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every Schema Object of the document (component, parameter, body and response schemas)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" or (where.endswith("/components/schemas")):
                yield f"{where}/{key}", value
            else:
                yield from schemas_in(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from schemas_in(value, f"{where}/{index}")


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs_in(value)


def resolve(document: Document, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def validator(document: Document, schema: Any) -> jsonschema_rs.Validator:
    """A validator of `schema` whose `#/components/...` references resolve in `document`."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


def operation(document: Document, route: Route) -> Any:
    return document["paths"][openapi._openapi_path(route)][route.http_method.lower()]


# ---- a valid OpenAPI 3.1 document -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["jobs", "sample"])
def test_the_document_is_valid_openapi_3_1(which: str, document: Document, sample_document: Document) -> None:
    doc = document if which == "jobs" else sample_document
    assert doc["openapi"] == "3.1.0"
    validate = oas31_validator()
    if validate is not None:
        validate(doc)
    # Structural checks whatever the validator: required members, resolvable references, unique ids,
    # schemas that are valid JSON Schema 2020-12 (the dialect of OpenAPI 3.1).
    assert {"title", "version"} <= set(doc["info"])
    for ref in refs_in(doc):
        resolve(doc, ref)
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for where, schema in schemas_in(doc):
        assert jsonschema_rs.meta.is_valid(schema), where
    for path, item in doc["paths"].items():
        for op in item.values():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.replace(":", "/").split("/") if part.startswith("{")}
            assert "200" in op["responses"]


def test_schemathesis_loads_every_operation(document: Document) -> None:
    schema = schemathesis.openapi.from_dict(document)
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results
    assert len(results) == sum(len(item) for item in document["paths"].values())


def test_security_is_the_authorization_header_bearer_or_bare(document: Document) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["key"] == {**schemes["key"], "type": "apiKey", "in": "header", "name": "Authorization"}
    assert document["security"] == [{"bearer": []}, {"key": []}]


# ---- it says what the transcoder serves -------------------------------------------------------------


def test_every_jobservice_route_is_an_operation(document: Document) -> None:
    routes = openapi.service_routes(SERVICE)
    expected = {(openapi._openapi_path(r), r.http_method.lower()) for r in routes}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == expected
    # Every RPC but those that take a stream of requests (RunStream), which have no JSON body.
    assert {r.rpc.method.name for r in routes} == {m.name for m in SERVICE.methods if not m.client_streaming}
    assert "RunStream" in {m.name for m in SERVICE.methods}
    assert ("/v2/{endpoint_id}/stream/{job_id}:follow", "get") in documented
    assert ("/v2/{endpoint_id}/status/{job_id}", "post") in documented  # an additional binding
    ids = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert {"JobService_Run", "JobService_Status", "JobService_Status2", "JobService_Health"} <= ids


def test_parameters_bodies_and_errors_follow_the_rules(document: Document) -> None:
    run = document["paths"]["/v2/{endpoint_id}/run"]["post"]
    where = {p["name"]: p["in"] for p in run["parameters"]}
    assert where["endpoint_id"] == "path"
    assert not any(name == "job" or name.startswith("job.") for name in where)  # the body, not the query
    body = run["requestBody"]
    submission = {"$ref": "#/components/schemas/jobwire.v1.JobSubmission"}
    assert body["content"]["application/json"]["schema"] == submission
    assert "10485760 bytes" in body["description"]
    runsync = document["paths"]["/v2/{endpoint_id}/runsync"]["post"]
    assert "20971520 bytes" in runsync["requestBody"]["description"]
    assert set(run["responses"]) == {"200", "400", "401", "403", "404", "413", "429", "503"}
    assert run["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/jobwire.v1.Job"
    }  # response_body: "job"

    sync = document["paths"]["/v2/{endpoint_id}/status-sync/{job_id}"]["get"]
    where = {p["name"]: p["in"] for p in sync["parameters"]}
    assert {"endpoint_id": "path", "job_id": "path", "wait": "query"}.items() <= where.items()
    assert "413" not in sync["responses"]  # no body, nothing too large
    follow = document["paths"]["/v2/{endpoint_id}/stream/{job_id}:follow"]["get"]
    assert [p["name"] for p in follow["parameters"]][-1] == "fromSeq"
    health = document["paths"]["/v2/{endpoint_id}/health"]["get"]
    assert health["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/jobwire.v1.HealthResponse"
    }
    error = document["components"]["responses"]["Error401"]
    assert error["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]


def test_sample_service_shapes(sample_document: Document) -> None:
    paths = sample_document["paths"]
    # `{inner.name=shelves/*}` is one parameter whose value spans two segments.
    shelves = paths["/v1/{inner.name}/samples/{id}"]["get"]["parameters"]
    assert shelves[0] == {"name": "inner.name", "in": "path", "required": True,
                          "schema": {"type": "string", "pattern": "^shelves/[^/]+$"}}  # fmt: skip
    # Query parameters: the fields neither path nor body binds, nested ones by dotted JSON name.
    query = {p["name"]: p for p in paths["/v1/samples/{id}"]["get"]["parameters"] if p["in"] == "query"}
    assert {"count", "limit", "tags", "inner.name", "inner.big", "plain.text", "picked.color"} <= set(query)
    assert "id" not in query and "items" not in query and "labels" not in query and "anyJson" not in query
    assert query["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert query["payload"]["content"] == {"application/json": {"schema": {}}}  # raw JSON: the text is JSON
    # body "*": the whole request but its path fields, and no query parameters.
    create = paths["/v1/samples"]["post"]
    assert "parameters" not in create
    assert "id" in create["requestBody"]["content"]["application/json"]["schema"]["properties"]
    echo = paths["/v1/echo/{id}:echo"]["post"]
    assert echo["responses"]["200"]["content"]["application/json"]["schema"] == {
        "description": "Any JSON value, written inline (not base64)."
    }  # response_body of a raw JSON field
    # A message read and written has a schema per direction; one only read or written has one.
    components = sample_document["components"]["schemas"]
    assert {"transcoder_test.v1.Inner", "transcoder_test.v1.Inner.Input"} <= set(components)
    assert "required" not in components["transcoder_test.v1.Inner.Input"]
    assert components["transcoder_test.v1.Inner"]["required"] == ["name", "big", "color"]
    assert "transcoder_test.v1.Reply.Input" not in components


def raw_json_fields(descriptor: Descriptor) -> Iterator[FieldDescriptor]:
    return (field for field in descriptor.fields if codec.is_raw_json(field))


@pytest.mark.parametrize("which", ["jobs", "sample"])
def test_raw_json_fields_are_any_json(which: str, document: Document, sample_document: Document) -> None:
    doc, service = (document, SERVICE) if which == "jobs" else (sample_document, fx.SERVICE)
    pool = service.file.pool
    checked = 0
    for name, schema in doc["components"]["schemas"].items():
        if "." not in name or schema.get("type") != "object":
            continue
        descriptor = pool.FindMessageTypeByName(name.removesuffix(".Input"))
        for field in raw_json_fields(descriptor):
            prop = schema["properties"][field.json_name]
            value = prop["items"] if field.is_repeated else prop
            assert set(value) <= {"description"}, (name, field.name, prop)  # no type: any JSON value
            assert "(not base64)" in prop["description"]
            assert field.json_name not in schema.get("required", [])  # left out when empty
            checked += 1
    assert checked >= (5 if which == "jobs" else 4)


def test_enums_are_their_names(document: Document) -> None:
    status = document["components"]["schemas"]["jobwire.v1.JobStatus"]
    assert status["type"] == "string"
    assert status["enum"] == [
        "JOB_STATUS_UNSPECIFIED", "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT",
    ]  # fmt: skip
    assert "buf:lint" not in json.dumps(document)  # linter directives are not documentation


# ---- it says exactly what the codec writes ----------------------------------------------------------

_SAMPLES: dict[int, Any] = {
    FieldDescriptor.TYPE_STRING: "text é",
    FieldDescriptor.TYPE_BOOL: True,
    FieldDescriptor.TYPE_BYTES: b"\x00\xffbytes",
    FieldDescriptor.TYPE_DOUBLE: math.nan,
    FieldDescriptor.TYPE_FLOAT: 1.5,
    FieldDescriptor.TYPE_INT64: -(2**63),
    FieldDescriptor.TYPE_UINT64: 2**64 - 1,
    FieldDescriptor.TYPE_UINT32: 2**32 - 1,
    FieldDescriptor.TYPE_INT32: -(2**31),
}


def _value(field: FieldDescriptor) -> Any:
    if codec.is_raw_json(field):
        return b'{"z": [1, 2.5, "x", null], "a": {}}'
    if field.enum_type is not None:
        return field.enum_type.values[-1].number
    return _SAMPLES.get(field.type, 7)


def filled(descriptor: Descriptor, depth: int = 3) -> Message:
    """A message with every field set (the last of each oneof), nested messages `depth` deep."""
    message = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        sub = field.message_type
        if codec.is_map(field):
            assert sub is not None
            value_field = sub.fields_by_name["value"]
            target = getattr(message, field.name)
            if value_field.message_type is None:
                target["k"] = _value(value_field)
            elif depth:
                target["k"].CopyFrom(filled(value_field.message_type, depth - 1))
        elif sub is not None and sub.full_name == "google.protobuf.Timestamp" and not field.is_repeated:
            getattr(message, field.name).FromSeconds(1_795_000_000)  # any valid instant
        elif sub is not None:
            if not depth:
                continue
            if field.is_repeated:
                getattr(message, field.name).extend([filled(sub, depth - 1), GetMessageClass(sub)()])
            else:
                getattr(message, field.name).CopyFrom(filled(sub, depth - 1))
        elif field.is_repeated:
            getattr(message, field.name).extend([_value(field), _value(field)])
        else:
            setattr(message, field.name, _value(field))
    return message


def samples(descriptor: Descriptor) -> list[Message]:
    return [GetMessageClass(descriptor)(), filled(descriptor, 1), filled(descriptor)]


def routes_of_both() -> Iterator[tuple[str, ServiceDescriptor, Route]]:
    for which, service in (("jobs", SERVICE), ("sample", fx.SERVICE)):
        for route in openapi.service_routes(service):
            yield which, service, route


@pytest.mark.parametrize(
    ("which", "route"),
    [(w, r) for w, _, r in routes_of_both()],
    ids=[f"{r.http_method} {r.template.source}" for _, _, r in routes_of_both()],
)
def test_responses_match_the_documented_schema(
    which: str, route: Route, document: Document, sample_document: Document
) -> None:
    doc = document if which == "jobs" else sample_document
    ok = operation(doc, route)["responses"]["200"]["content"]
    for message in samples(route.rpc.method.output_type):
        if route.rpc.method.server_streaming:
            check = validator(doc, ok["application/x-ndjson"]["schema"])
            body = codec.encode_line(message, route.response_field)
        else:
            check = validator(doc, ok["application/json"]["schema"])
            body = codec.encode(message, route.response_field)
        instance = orjson.loads(body)
        errors = [f"{e.instance_path}: {e.message}" for e in check.iter_errors(instance)]
        assert not errors, (body, errors)
    if route.rpc.method.server_streaming:  # the in-band error of a stream that failed mid-way
        check.validate({"error": {"code": 13, "message": "internal error"}})


@pytest.mark.parametrize(
    ("which", "route"),
    [(w, r) for w, _, r in routes_of_both() if r.body],
    ids=[f"{r.http_method} {r.template.source}" for _, _, r in routes_of_both() if r.body],
)
def test_request_bodies_accept_what_the_codec_reads(
    which: str, route: Route, document: Document, sample_document: Document
) -> None:
    doc = document if which == "jobs" else sample_document
    check = validator(doc, operation(doc, route)["requestBody"]["content"]["application/json"]["schema"])
    for message in samples(route.rpc.method.input_type):
        whole = orjson.loads(orjson.dumps(codec.to_jsonable(message)))
        body = whole if route.body_field is None else whole.get(route.body_field.json_name, {})
        if route.body_field is None:
            for path in route.path_fields:
                body.pop(path[0].json_name, None)
        assert check.is_valid(body), body
        # ... and the transcoder reads that body back into the same fields.
        parsed = route.rpc.request_class()
        value, dumps = codec.decode_json(orjson.dumps(body))
        target = value if route.body_field is None else {route.body_field.name: value}
        codec.parse_message(parsed, target, dumps)


def test_errors_match_the_documented_schema(document: Document) -> None:
    not_found = document["components"]["responses"]["Error404"]
    check = validator(document, not_found["content"]["application/json"]["schema"])
    check.validate({"error": "job not found"})
    assert not check.is_valid({"error": {"code": 5}})


# ---- generated, committed, served -------------------------------------------------------------------


def test_it_is_the_committed_file(document: Document) -> None:
    assert COMMITTED.read_bytes() == openapi.render(document), "run scripts/gen and commit gen/openapi/"


def test_it_is_deterministic() -> None:
    first = openapi.render(openapi.build_document(SERVICE, comments()))
    assert openapi.render(openapi.build_document(SERVICE, comments())) == first


def test_comments_become_summaries_and_descriptions(document: Document) -> None:
    run = document["paths"]["/v2/{endpoint_id}/run"]["post"]
    assert run["summary"] == "Submits a job and returns at once with its id and IN_QUEUE."
    cancel = document["paths"]["/v2/{endpoint_id}/cancel/{job_id}"]["post"]
    assert cancel["summary"] == "Cancels a queued or running job."
    wait = document["paths"]["/v2/{endpoint_id}/runsync"]["post"]["parameters"][1]
    assert wait["description"].startswith("Milliseconds to wait for the job to end")
    assert "Waiting for a worker." in document["components"]["schemas"]["jobwire.v1.JobStatus"]["description"]


def without_prose(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_prose(v) for k, v in node.items() if k not in ("description", "summary")}
    if isinstance(node, list):
        return [without_prose(v) for v in node]
    return node


def test_served_document_is_the_committed_file() -> None:
    openapi.document_bytes.cache_clear()
    with TestClient(Router(routes=[openapi.openapi_route()])) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == COMMITTED.read_bytes()


def test_without_the_file_the_same_document_is_built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # An installed wheel has no gen/openapi/: the document is built from the descriptors, without
    # the proto comments but otherwise the same.
    monkeypatch.setattr(openapi, "committed_path", lambda: tmp_path / "missing.json")
    openapi.document_bytes.cache_clear()
    try:
        built = json.loads(openapi.document_bytes())
    finally:
        openapi.document_bytes.cache_clear()
    assert without_prose(built) == without_prose(json.loads(COMMITTED.read_bytes()))
