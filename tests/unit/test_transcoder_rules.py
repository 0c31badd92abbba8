"""Path templates and the route table compiled from `google.api.http` rules."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any, cast

import pytest
from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2

from jobwire.server.api.registry import Rpc, rpcs_of
from jobwire.server.api.transcoder import (
    HttpError,
    RouteTable,
    TemplateError,
    compile_rule,
    parse_template,
    routes_of,
)
from jobwire.server.api.transcoder.rules import STAR, STARS
from jobwire.v1 import jobs_pb2
from unit import transcoder_fixtures as fx

JOB_SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobService"]


class _Anything:
    """A servicer whose every RPC exists (routing tests never call them)."""

    def __getattr__(self, name: str) -> Any:
        async def behaviour(request: Any, context: Any) -> Any:
            raise AssertionError(name)

        return behaviour


def job_rpcs() -> list[Rpc]:
    return rpcs_of(JOB_SERVICE, _Anything())


def sample_rpcs() -> list[Rpc]:
    return rpcs_of(fx.SERVICE, _Anything())


def rpc_named(rpcs: list[Rpc], name: str) -> Rpc:
    (found,) = [rpc for rpc in rpcs if rpc.method.name == name]
    return found


def split(path: str) -> list[str]:
    return path[1:].split("/")


# ---- templates --------------------------------------------------------------------------------------


def test_literal_template_matches_only_itself() -> None:
    template = parse_template("/v2/health")
    assert template.segments == ("v2", "health")
    assert template.verb == ""
    assert template.variables == ()
    assert template.match(split("/v2/health")) == []
    assert template.match(split("/v2/healthz")) is None
    assert template.match(split("/v2/health/")) is None
    assert template.match(split("/v2")) is None


def test_variable_is_one_non_empty_segment() -> None:
    template = parse_template("/v2/{endpoint_id}/status/{job_id}")
    assert template.segments == ("v2", STAR, "status", STAR)
    assert [(v.field_path, v.start, v.end) for v in template.variables] == [
        (("endpoint_id",), 1, 2),
        (("job_id",), 3, 4),
    ]
    assert template.match(split("/v2/ep/status/j1")) == ["ep", "j1"]
    assert template.match(split("/v2//status/j1")) is None
    assert template.match(split("/v2/ep/status/j1/x")) is None


def test_variable_with_sub_pattern_and_nested_field_path() -> None:
    template = parse_template("/v1/{inner.name=shelves/*}/samples/{id}")
    assert template.variables[0].field_path == ("inner", "name")
    assert template.match(split("/v1/shelves/s1/samples/x")) == ["shelves/s1", "x"]
    assert template.match(split("/v1/racks/s1/samples/x")) is None


def test_anonymous_wildcards() -> None:
    assert parse_template("/v1/*/x").match(split("/v1/anything/x")) == []
    template = parse_template("/v1/a/**")
    assert template.segments == ("v1", "a", STARS)
    assert template.match(split("/v1/a")) == []
    assert template.match(split("/v1/a/b/c")) == []
    assert template.match(split("/v1/b/c")) is None


def test_double_wildcard_variable_takes_the_rest_and_keeps_encoded_slashes() -> None:
    template = parse_template("/v1/files/{path=**}")
    assert template.match(split("/v1/files/a/b%20c/d")) == ["a/b c/d"]
    assert template.match(split("/v1/files/a%2Fb/c")) == ["a%2Fb/c"]
    assert template.match(split("/v1/files/one")) == ["one"]
    assert template.match(split("/v1/files")) == [""]


def test_verb_is_matched_as_a_suffix_of_the_last_segment() -> None:
    follow = parse_template("/v2/{endpoint_id}/stream/{job_id}:follow")
    assert follow.segments == ("v2", STAR, "stream", STAR)
    assert follow.verb == "follow"
    assert follow.match(split("/v2/ep/stream/j1:follow")) == ["ep", "j1"]
    assert follow.match(split("/v2/ep/stream/j1")) is None
    assert follow.match(split("/v2/ep/stream/j1:other")) is None
    assert follow.match(split("/v2/ep/stream/:follow")) is None
    assert parse_template("/v1/{name=a/*}:run").match(split("/v1/a/b:run")) == ["a/b"]


def test_path_variables_are_percent_decoded() -> None:
    template = parse_template("/v2/{endpoint_id}/status/{job_id}")
    assert template.match(split("/v2/ep%20one/status/a%2Fb%3Ac")) == ["ep one", "a/b:c"]
    assert template.match(split("/v2/%C3%A9/status/x")) == ["é", "x"]
    assert template.match(split("/v%32/ep/status/x")) == ["ep", "x"]  # an encoded literal still matches
    with pytest.raises(HttpError) as caught:
        template.match(split("/v2/%ff/status/x"))
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "source",
    [
        "v1/x",
        "/v1/**/x",
        "/v1/{a",
        "/v1/{a={b}}",
        "/v1/{1a}",
        "/v1//x",
        "/v1/{a}/{a}",
        "/v1/a*b",
        "/v1/x:",
        "/v1/{a.}",
        "/v1/{a=}",
        "/v1/x}",
    ],
)
def test_bad_templates_are_refused(source: str) -> None:
    with pytest.raises(TemplateError, match="path template"):
        parse_template(source)


def test_templates_with_a_verb_rank_before_those_without() -> None:
    with_verb = parse_template("/v2/{e}/stream/{j}:follow")
    without = parse_template("/v2/{e}/stream/{j}")
    literal = parse_template("/v2/{e}/stream/latest")
    assert sorted([without, literal, with_verb], key=lambda t: t.rank) == [with_verb, literal, without]


# ---- routes -----------------------------------------------------------------------------------------


def test_job_service_routes() -> None:
    table = RouteTable.of(job_rpcs(), 1000)
    by_rpc = {(r.rpc.method.name, r.http_method): r for r in table.routes}
    assert len(table.routes) == 15
    assert by_rpc["ListRequests", "GET"].template.source == "/v2/{endpoint_id}/requests"
    assert by_rpc["ListEndpoints", "GET"].template.source == "/v1/endpoints"
    run = by_rpc["Run", "POST"]
    assert (run.template.source, run.body, run.response_body) == ("/v2/{endpoint_id}/run", "job", "job")
    assert run.max_body_bytes == 10 * 1024 * 1024
    assert run.body_field is not None and run.body_field.name == "job"
    assert run.response_field is not None and run.response_field.name == "job"
    assert run.query_skip == {("endpoint_id",), ("job",)}
    assert by_rpc["RunSync", "POST"].max_body_bytes == 20 * 1024 * 1024
    assert by_rpc["Status", "GET"].max_body_bytes == 1000
    assert by_rpc["Status", "POST"].response_field is not None
    assert by_rpc["Health", "GET"].body_field is None
    assert [f.name for f in by_rpc["Status", "GET"].path_fields[1]] == ["job_id"]


@pytest.mark.parametrize(
    ("method", "path", "rpc", "values"),
    [
        ("GET", "/v2/ep/stream/j1:follow", "Stream", ["ep", "j1"]),
        ("GET", "/v2/ep/stream/j1", "ReadStream", ["ep", "j1"]),
        ("POST", "/v2/ep/stream/j1", "ReadStream", ["ep", "j1"]),
        ("GET", "/v2/ep/status/j1", "Status", ["ep", "j1"]),
        ("POST", "/v2/ep/status/j1", "Status", ["ep", "j1"]),
        ("GET", "/v2/ep/status-sync/j1", "StatusSync", ["ep", "j1"]),
        ("POST", "/v2/ep/run", "Run", ["ep"]),
        ("POST", "/v2/ep/runsync", "RunSync", ["ep"]),
        ("POST", "/v2/ep/purge-queue", "PurgeQueue", ["ep"]),
        ("GET", "/v2/ep/health", "Health", ["ep"]),
    ],
)
def test_route_table_matches(method: str, path: str, rpc: str, values: list[str]) -> None:
    found = RouteTable.of(job_rpcs(), 1000).match(method, path)
    assert found.route.rpc.method.name == rpc
    assert found.values == values


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/v2/ep/nothing", 404, None),
        ("GET", "/v3/ep/health", 404, None),
        ("GET", "/v2/ep/health/", 404, None),
        ("GET", "", 404, None),
        ("DELETE", "/v2/ep/health", 405, b"GET"),
        ("PUT", "/v2/ep/status/j1", 405, b"GET, POST"),
        ("GET", "/v2/ep/run", 405, b"POST"),
        ("POST", "/v2/ep/stream/j1:follow", None, None),  # ReadStream's POST takes `j1:follow` as the id
    ],
)
def test_route_table_refusals(method: str, path: str, status: int | None, allow: bytes | None) -> None:
    table = RouteTable.of(job_rpcs(), 1000)
    if status is None:
        assert table.match(method, path).values == ["ep", "j1:follow"]
        return
    with pytest.raises(HttpError) as caught:
        table.match(method, path)
    assert caught.value.status == status
    assert dict(caught.value.headers).get(b"allow") == allow


def test_identical_templates_conflict_at_startup() -> None:
    rpcs = job_rpcs()
    with pytest.raises(TemplateError, match="overlaps"):
        RouteTable.of([*rpcs, rpc_named(rpcs, "Health")], 1000)
    status = routes_of(rpc_named(rpcs, "Status"), 1000)[0]
    renamed = dataclasses.replace(status, template=parse_template("/v2/{a}/status/{b}"))
    with pytest.raises(TemplateError, match="overlaps"):
        RouteTable([status, renamed])
    other_verb = dataclasses.replace(status, template=parse_template("/v2/{a}/status/{b}:x"))
    assert len(RouteTable([status, other_verb]).routes) == 2


def test_sample_service_routes() -> None:
    rpcs = sample_rpcs()
    assert routes_of(rpc_named(rpcs, "Hidden"), 1000) == []
    get = routes_of(rpc_named(rpcs, "Get"), 1000)
    assert [r.template.source for r in get] == ["/v1/samples/{id}", "/v1/{inner.name=shelves/*}/samples/{id}"]
    assert [f.name for f in get[1].path_fields[0]] == ["inner", "name"]
    assert get[1].query_skip == {("inner", "name"), ("id",)}
    (echo,) = routes_of(rpc_named(rpcs, "Echo"), 1000)
    assert (echo.template.verb, echo.body, echo.response_body) == ("echo", "inner", "payload")


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"get": "/v1/{inner}"}, "not a scalar field"),
        ({"get": "/v1/{nope}"}, "not a scalar field"),
        ({"get": "/v1/{tags}"}, "not a scalar field"),
        ({"get": "/v1/{inner.nope}"}, "not a scalar field"),
        ({"post": "/v1/x", "body": "nope"}, "no field 'nope'"),
        ({"post": "/v1/x", "response_body": "nope"}, "no field 'nope'"),
        ({"body": "*"}, "without a pattern"),
        ({"get": "v1"}, "must start with /"),
    ],
)
def test_bad_rules_are_refused(rule: dict[str, str], error: str) -> None:
    rpc = rpc_named(sample_rpcs(), "Get")
    with pytest.raises(TemplateError, match=error):
        compile_rule(rpc, http_pb2.HttpRule(**rule), 1000)


def test_custom_pattern_and_nested_bindings() -> None:
    rpc = rpc_named(sample_rpcs(), "Get")
    custom = http_pb2.HttpRule(custom=http_pb2.CustomHttpPattern(kind="head", path="/v1/x/{id}"))
    assert compile_rule(rpc, custom, 1).http_method == "HEAD"
    rule = http_pb2.HttpRule(get="/v1/a/{id}")
    rule.additional_bindings.add(get="/v1/b/{id}").additional_bindings.add(get="/v1/c/{id}")
    options = descriptor_pb2.MethodOptions()
    options.Extensions[annotations_pb2.http].CopyFrom(rule)
    fake_method = SimpleNamespace(
        GetOptions=lambda: options,
        client_streaming=False,
        full_name=rpc.method.full_name,
        input_type=rpc.method.input_type,
        output_type=rpc.method.output_type,
    )
    nested = dataclasses.replace(rpc, method=cast(Any, fake_method))
    with pytest.raises(TemplateError, match="may not nest"):
        routes_of(nested, 1000)
    fake_method.client_streaming = True
    with pytest.raises(TemplateError, match="client-streaming"):
        routes_of(nested, 1000)
