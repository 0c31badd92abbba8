"""The OpenAPI 3.1 document of the HTTP/JSON facade, generated from the `google.api.http` rules.

Nothing in it is written per operation: paths, methods, path variables and body fields come from the
transcoder's own compiled `RouteTable` (so the document and the server cannot disagree about a route),
query parameters from the request fields that neither the path nor the body binds, and every schema
from the message descriptors, projected the way `transcoder.codec` writes and reads JSON:

- lowerCamelCase JSON names, enums as their names, 64-bit integers as decimal strings, bytes as base64;
- `(jobwire.v1.raw_json)` bytes fields are any JSON value, inline (a schema without a `type`);
- in responses, every field without presence is always printed (`required`), while `optional`,
  message and oneof fields and raw JSON fields are omitted when unset; no other key appears;
- in requests every field may be left out, and the body limit of `(jobwire.v1.max_body_bytes)` is
  stated (413 beyond it);
- errors are `{"error": "..."}`; a server stream is NDJSON, one `{"result": ...}` per message, with
  an in-band `{"error": {"code", "message"}}` line if it fails after it started.

Descriptions are the proto comments when a `FileDescriptorSet` with source info is given
(`scripts/gen` compiles one); the descriptors that Python loads at run time carry none.

    python -m jobwire.server.api.openapi --descriptor-set set.pb --output gen/openapi/jobwire.v1.json

`openapi_route()` serves the document (the committed file when it sits beside the generated code, else
the same document built from the descriptors, without descriptions).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from jobwire.server.api.jobs import SERVICE
from jobwire.server.api.registry import Rpc
from jobwire.server.api.transcoder import DEFAULT_MAX_BODY, Route, RouteTable, routes_of
from jobwire.server.api.transcoder.codec import is_map, is_raw_json, is_well_known
from jobwire.server.api.transcoder.rules import STAR, STARS, Variable
from jobwire.v1 import jobs_pb2

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
NDJSON = "application/x-ndjson"
#: The committed document, relative to the root of the generated code (gen/).
DOCUMENT_PATH = Path("openapi") / "jobwire.v1.json"

Mode = Literal["in", "out"]
Schema = dict[str, Any]
#: Proto comments by full name: `pkg.Message`, `pkg.Message.field`, `pkg.Enum.VALUE`, `pkg.Service.Method`.
Comments = Mapping[str, str]

#: Every error is `{"error": message}` with one of these statuses (413 only where there is a body).
ERROR_STATUSES: dict[int, str] = {
    400: "The request is not valid: malformed JSON, a bad parameter value, or a job state that does not "
    "allow the operation.",
    401: "No API key, or one that is unknown, revoked or expired.",
    403: "The key belongs to another endpoint or lacks the role the operation needs.",
    404: "The endpoint or the job does not exist (or no longer exists).",
    413: "The request body is larger than the operation accepts.",
    429: "Too many requests.",
    503: "The job store is unavailable; the request may be retried.",
}

_UINT32_MAX = 2**32 - 1
_INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32 = {"type": "integer", "minimum": 0, "maximum": _UINT32_MAX}
_INT64_TEXT = {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"}
_UINT64_TEXT = {"type": "string", "format": "uint64", "pattern": r"^[0-9]+$"}
_NON_FINITE = {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}
_BASE64 = {"type": "string", "contentEncoding": "base64"}
_T = FieldDescriptor
_SCALARS: dict[int, Schema] = {
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_INT32: _INT32,
    _T.TYPE_SINT32: _INT32,
    _T.TYPE_SFIXED32: _INT32,
    _T.TYPE_UINT32: _UINT32,
    _T.TYPE_FIXED32: _UINT32,
    _T.TYPE_BYTES: _BASE64,
}
_INT64_TYPES = frozenset({_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64})
_UINT64_TYPES = frozenset({_T.TYPE_UINT64, _T.TYPE_FIXED64})
_FLOAT_TYPES = {_T.TYPE_DOUBLE: "double", _T.TYPE_FLOAT: "float"}

# The well-known types have JSON forms of their own (google/protobuf/*.proto, "JSON Mapping").
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Value": {},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.BytesValue": _BASE64,
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int32Value": _INT32,
    "google.protobuf.Int64Value": _INT64_TEXT,
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.UInt32Value": _UINT32,
    "google.protobuf.UInt64Value": _UINT64_TEXT,
}

ERROR_SCHEMA = "Error"
STREAM_ERROR_SCHEMA = "StreamError"
_RAW_JSON_NOTE = "Any JSON value, written inline (not base64)."


# ---- comments ---------------------------------------------------------------------------------------


def _clean_comment(text: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in text.strip("\n").split("\n")]
    # `buf:lint:ignore` directives are for the linter, not for readers.
    kept = [line.rstrip() for line in lines if not line.strip().startswith("buf:lint:")]
    return "\n".join(kept).strip()


def comments_of(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    """The leading (else trailing) comment of every message, field, enum, enum value, service and
    method of `files`, by full name. Files compiled without source info contribute nothing."""
    found: dict[str, str] = {}
    for file in files:
        names = dict(_element_names(file))
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            text = _clean_comment(location.leading_comments or location.trailing_comments)
            if name is not None and text:
                found[name] = text
    return found


def _element_names(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[tuple[int, ...], str]]:
    # Field numbers of FileDescriptorProto & co.: message_type 4, enum_type 5, service 6; inside a
    # message: field 2, nested_type 3, enum_type 4; inside an enum: value 2; inside a service: method 2.
    prefix = f"{file.package}." if file.package else ""
    for index, message in enumerate(file.message_type):
        yield from _message_names(message, (4, index), prefix)
    for index, enum in enumerate(file.enum_type):
        yield from _enum_names(enum, (5, index), prefix)
    for index, service in enumerate(file.service):
        name = prefix + service.name
        yield (6, index), name
        for number, method in enumerate(service.method):
            yield (6, index, 2, number), f"{name}.{method.name}"


def _message_names(
    message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    name = prefix + message.name
    yield path, name
    for index, field in enumerate(message.field):
        yield (*path, 2, index), f"{name}.{field.name}"
    for index, nested in enumerate(message.nested_type):
        yield from _message_names(nested, (*path, 3, index), f"{name}.")
    for index, enum in enumerate(message.enum_type):
        yield from _enum_names(enum, (*path, 4, index), f"{name}.")


def _enum_names(
    enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], prefix: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    name = prefix + enum.name
    yield path, name
    for index, value in enumerate(enum.value):
        # Enum values are scoped like siblings of their enum in protobuf, but named under it here.
        yield (*path, 2, index), f"{name}.{value.name}"


# ---- schemas ----------------------------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _described(schema: Schema, text: str | None) -> Schema:
    return {**schema, "description": text} if text else schema


class _Schemas:
    """The component schemas of one document: one per message and mode, one per enum."""

    def __init__(self, comments: Comments) -> None:
        self.comments = comments
        self.components: dict[str, Schema] = {}
        self._modes: dict[str, set[Mode]] = {}
        self._pending: list[tuple[Descriptor, Mode]] = []

    # Which messages each mode reaches decides the component names, so it is known before any is
    # written: a message used both ways gets two components (`X` for responses, `X.Input`).
    def reach(self, descriptor: Descriptor, mode: Mode) -> None:
        stack = [descriptor]
        while stack:
            current = stack.pop()
            if is_well_known(current):
                continue
            modes = self._modes.setdefault(current.full_name, set())
            if mode in modes:
                continue
            modes.add(mode)
            stack.extend(f.message_type for f in current.fields if f.message_type is not None)

    def name(self, descriptor: Descriptor, mode: Mode) -> str:
        both = self._modes.get(descriptor.full_name, set()) == {"in", "out"}
        return f"{descriptor.full_name}.Input" if mode == "in" and both else descriptor.full_name

    def message(self, descriptor: Descriptor, mode: Mode) -> Schema:
        """A reference to the message's schema (its JSON form for well-known types)."""
        known = _WELL_KNOWN.get(descriptor.full_name)
        if known is not None:
            return dict(known)
        if is_well_known(descriptor):
            return {}
        name = self.name(descriptor, mode)
        if name not in self.components:
            self.components[name] = {}  # reserved: recursive types refer to it while it is built
            self._pending.append((descriptor, mode))
        return _ref(name)

    def enum(self, enum: EnumDescriptor) -> Schema:
        if enum.full_name == "google.protobuf.NullValue":
            return {"type": "null"}
        if enum.full_name not in self.components:
            values = [value.name for value in enum.values]
            notes = [
                f"- `{value.name}`: {text}"
                for value in enum.values
                if (text := self.comments.get(f"{enum.full_name}.{value.name}"))
            ]
            text = "\n\n".join(part for part in (self.comments.get(enum.full_name), "\n".join(notes)) if part)
            self.components[enum.full_name] = _described({"type": "string", "enum": values}, text)
        return _ref(enum.full_name)

    def finish(self) -> None:
        while self._pending:
            descriptor, mode = self._pending.pop(0)
            self.components[self.name(descriptor, mode)] = self.object(descriptor, mode)

    def object(self, descriptor: Descriptor, mode: Mode, leave_out: frozenset[str] = frozenset()) -> Schema:
        """The object schema of a message's fields (but those in `leave_out`, by proto name)."""
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field in descriptor.fields:
            if field.name in leave_out:
                continue
            properties[field.json_name] = self.field(field, mode)
            # protojson prints every field without presence; the codec leaves out empty raw JSON.
            if mode == "out" and not field.has_presence and not is_raw_json(field):
                required.append(field.json_name)
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if mode == "out":
            schema["additionalProperties"] = False
        return _described(schema, self.comments.get(descriptor.full_name))

    def field(self, field: FieldDescriptor, mode: Mode) -> Schema:
        if is_map(field):
            entry = field.message_type
            assert entry is not None
            schema: Schema = {
                "type": "object",
                "additionalProperties": self.single(entry.fields_by_name["value"], mode),
            }
        elif field.is_repeated:
            schema = {"type": "array", "items": self.single(field, mode)}
        else:
            schema = self.single(field, mode)
        text = self.comments.get(field.full_name)
        if is_raw_json(field):
            text = f"{text}\n\n{_RAW_JSON_NOTE}" if text else _RAW_JSON_NOTE
        return _described(schema, text)

    def single(self, field: FieldDescriptor, mode: Mode) -> Schema:
        """The schema of one value of the field (an element, for a repeated field)."""
        if is_raw_json(field):
            return {}
        if field.message_type is not None:
            return self.message(field.message_type, mode)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        return scalar(field.type, mode)


def scalar(kind: int, mode: Mode) -> Schema:
    """The protojson schema of a scalar type. 64-bit integers are written as strings and read as
    either; floats may be the strings NaN and +-Infinity."""
    known = _SCALARS.get(kind)
    if known is not None:
        return dict(known)
    if kind in _INT64_TYPES or kind in _UINT64_TYPES:
        text = _INT64_TEXT if kind in _INT64_TYPES else _UINT64_TEXT
        if mode == "out":
            return dict(text)
        number = {"type": "integer", "minimum": 0} if kind in _UINT64_TYPES else {"type": "integer"}
        return {"anyOf": [number, dict(text)]}
    if kind in _FLOAT_TYPES:
        return {"anyOf": [{"type": "number", "format": _FLOAT_TYPES[kind]}, dict(_NON_FINITE)]}
    raise ValueError(f"no JSON schema for field type {kind}")


# ---- operations -------------------------------------------------------------------------------------


def _openapi_path(route: Route) -> str:
    """The template with each `{var=pattern}` written `{var}` (OpenAPI has no patterns in paths)."""
    template = route.template
    parts: list[str] = []
    index = 0
    variables = {v.start: v for v in template.variables}
    while index < len(template.segments):
        variable = variables.get(index)
        if variable is None:
            parts.append(template.segments[index])
            index += 1
        else:
            parts.append("{" + ".".join(variable.field_path) + "}")
            index = variable.end
    path = "/" + "/".join(parts)
    return f"{path}:{template.verb}" if template.verb else path


def _segments_pattern(segments: Sequence[str]) -> str:
    parts = ["[^/]+" if s == STAR else ".*" if s == STARS else re.escape(s) for s in segments]
    return "^" + "/".join(parts) + "$"


def _first_sentence(text: str) -> str:
    paragraph = " ".join(text.split("\n\n")[0].split())
    head, dot, _ = paragraph.partition(". ")
    return head + dot.strip()


def _size(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit} bytes ({limit // mib} MiB)" if limit % mib == 0 else f"{limit} bytes"


def _operation_ids(routes: Sequence[Route]) -> dict[int, str]:
    """grpc-gateway's operation ids: `Service_Method`, then `Service_Method2`... for more bindings."""
    ids: dict[int, str] = {}
    seen: dict[str, int] = {}
    for route in routes:
        method = route.rpc.method
        base = f"{method.containing_service.name}_{method.name}"
        seen[base] = seen.get(base, 0) + 1
        ids[id(route)] = base if seen[base] == 1 else f"{base}{seen[base]}"
    return ids


class _Operations:
    def __init__(self, schemas: _Schemas) -> None:
        self.schemas = schemas
        self.comments = schemas.comments

    def operation(self, route: Route, operation_id: str) -> Schema:
        method = route.rpc.method
        operation: Schema = {"operationId": operation_id, "tags": [method.containing_service.name]}
        text = self.comments.get(method.full_name)
        if text:
            operation["summary"] = _first_sentence(text)
            operation["description"] = text
        parameters = [*self.path_parameters(route), *self.query_parameters(route)]
        if parameters:
            operation["parameters"] = parameters
        if route.body:
            operation["requestBody"] = self.request_body(route)
        operation["responses"] = self.responses(route)
        return operation

    def path_parameters(self, route: Route) -> list[Schema]:
        parameters = []
        for variable, path in zip(route.template.variables, route.path_fields, strict=True):
            field = path[-1]
            schema = self.schemas.single(field, "in")
            if field.type == _T.TYPE_STRING:
                schema = self.string_variable(route, variable)
            parameters.append(
                _described(
                    {"name": ".".join(variable.field_path), "in": "path", "required": True, "schema": schema},
                    self.comments.get(field.full_name),
                )
            )
        return parameters

    @staticmethod
    def string_variable(route: Route, variable: Variable) -> Schema:
        segments = route.template.segments[variable.start : variable.end]
        if tuple(segments) == (STAR,):
            return {"type": "string", "minLength": 1}  # `*`: one non-empty path segment
        return {"type": "string", "pattern": _segments_pattern(segments)}

    def query_parameters(self, route: Route) -> list[Schema]:
        """Every scalar request field that the path and body leave free, by dotted JSON name."""
        if route.body == "*":
            return []  # the body carries every field; the query is not read
        found: list[Schema] = []
        self._query_fields(route.rpc.method.input_type, (), (), route.query_skip, found, set())
        return found

    def _query_fields(
        self,
        descriptor: Descriptor,
        names: tuple[str, ...],
        json_names: tuple[str, ...],
        skip: frozenset[tuple[str, ...]],
        found: list[Schema],
        seen: set[str],
    ) -> None:
        seen = seen | {descriptor.full_name}
        for field in descriptor.fields:
            path, json_path = (*names, field.name), (*json_names, field.json_name)
            if path in skip or is_map(field):
                continue
            message = field.message_type
            if message is not None:
                if not field.is_repeated and not is_well_known(message) and message.full_name not in seen:
                    self._query_fields(message, path, json_path, skip, found, seen)
                continue
            found.append(self.query_parameter(field, ".".join(json_path)))

    def query_parameter(self, field: FieldDescriptor, name: str) -> Schema:
        parameter: Schema = {"name": name, "in": "query"}
        if is_raw_json(field):
            # The text of the parameter is the JSON document itself.
            item: Schema = {}
            parameter["content"] = {JSON: {"schema": item}}
        else:
            item = self.schemas.single(field, "in")
            schema = {"type": "array", "items": item} if field.is_repeated else item
            parameter["schema"] = schema
            if field.is_repeated:
                parameter["style"], parameter["explode"] = "form", True
        return _described(parameter, self.comments.get(field.full_name))

    def request_body(self, route: Route) -> Schema:
        if route.body_field is None:  # body "*": the request message but its path-bound fields
            bound = frozenset(path[0].name for path in route.path_fields if len(path) == 1)
            schema = self.schemas.object(route.rpc.method.input_type, "in", leave_out=bound)
        else:
            schema = self.schemas.field(route.body_field, "in")
        limit = route.max_body_bytes
        return {
            "description": f"At most {_size(limit)}; larger bodies are refused with 413. "
            "An empty body means `{}`.",
            "required": False,
            "content": {JSON: {"schema": schema}},
        }

    def response_schema(self, route: Route) -> Schema:
        field = route.response_field
        if field is None:
            return self.schemas.message(route.rpc.method.output_type, "out")
        return self.schemas.field(field, "out")

    def responses(self, route: Route) -> Schema:
        result = self.response_schema(route)
        if route.rpc.method.server_streaming:
            line = {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"result": result},
                        "required": ["result"],
                        "additionalProperties": False,
                    },
                    _ref(STREAM_ERROR_SCHEMA),
                ]
            }
            ok: Schema = {
                "description": 'Newline-delimited JSON: one `{"result": ...}` line per message, or a '
                'final `{"error": {...}}` line if the stream fails after it started. The schema is '
                "that of one line.",
                "content": {NDJSON: {"schema": line}},
            }
        else:
            ok = {"description": "OK", "content": {JSON: {"schema": result}}}
        responses: Schema = {"200": ok}
        for status in ERROR_STATUSES:
            if status != 413 or route.body:
                responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
        return responses


# ---- the document -----------------------------------------------------------------------------------


def doc_rpcs(service: ServiceDescriptor) -> list[Rpc]:
    """The RPC table of `service` without behaviours: enough to compile its routes."""
    return [
        Rpc(
            method=method,
            request_class=GetMessageClass(method.input_type),
            response_class=GetMessageClass(method.output_type),
            unary=None,
            stream=None,
        )
        for method in service.methods
    ]


def service_routes(service: ServiceDescriptor, default_max_body: int = DEFAULT_MAX_BODY) -> list[Route]:
    """The HTTP routes of `service` in declaration order (method, then its bindings), compiled and
    checked for overlaps exactly as the transcoder does at startup."""
    routes = [route for rpc in doc_rpcs(service) for route in routes_of(rpc, default_max_body)]
    RouteTable(routes)  # raises TemplateError on a bad or overlapping rule, as the server would
    return routes


def _components(schemas: _Schemas) -> Schema:
    error = {
        "type": "object",
        "properties": {"error": {"type": "string", "description": "What went wrong."}},
        "required": ["error"],
        "additionalProperties": False,
    }
    stream_error = {
        "type": "object",
        "description": "The last line of a stream that failed after it started.",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer", "description": "The gRPC status code."},
                    "message": {"type": "string"},
                },
                "required": ["code", "message"],
                "additionalProperties": False,
            }
        },
        "required": ["error"],
        "additionalProperties": False,
    }
    responses: Schema = {}
    for status, text in ERROR_STATUSES.items():
        response: Schema = {"description": text, "content": {JSON: {"schema": _ref(ERROR_SCHEMA)}}}
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}
            }
        responses[f"Error{status}"] = response
    return {
        "schemas": {
            **dict(sorted(schemas.components.items())),
            ERROR_SCHEMA: error,
            STREAM_ERROR_SCHEMA: stream_error,
        },
        "responses": responses,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "`Authorization: Bearer KEY` with a jobwire API key.",
            },
            "key": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "`Authorization: KEY`: the bare API key, as Runpod's SDKs send it.",
            },
        },
    }


def build_document(service: ServiceDescriptor = SERVICE, comments: Comments | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `service`'s HTTP bindings. Deterministic: the same descriptors
    (and comments) always give the same document, in declaration order."""
    comments = comments or {}
    routes = service_routes(service)
    schemas = _Schemas(comments)
    for route in routes:
        method = route.rpc.method
        if route.body_field is not None and route.body_field.message_type is not None:
            schemas.reach(route.body_field.message_type, "in")
        elif route.body == "*":
            schemas.reach(method.input_type, "in")
        field = route.response_field
        if field is None:
            schemas.reach(method.output_type, "out")
        elif field.message_type is not None:
            schemas.reach(field.message_type, "out")
    operations = _Operations(schemas)
    ids = _operation_ids(routes)
    paths: dict[str, Schema] = {}
    for route in routes:
        item = paths.setdefault(_openapi_path(route), {})
        item[route.http_method.lower()] = operations.operation(route, ids[id(route)])
    schemas.finish()
    package = service.file.package
    info: Schema = {"title": f"jobwire: {service.full_name}", "version": package.rsplit(".", 1)[-1]}
    text = comments.get(service.full_name)
    if text:
        info["description"] = text
    return {
        "openapi": OPENAPI_VERSION,
        "info": info,
        "tags": [_described({"name": service.name}, text)],
        "security": [{"bearer": []}, {"key": []}],
        "paths": paths,
        "components": _components(schemas),
    }


def render(document: Mapping[str, Any]) -> bytes:
    """The document as the committed file holds it: 2-space indented JSON, UTF-8, final newline."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


# ---- serving ----------------------------------------------------------------------------------------


def committed_path() -> Path:
    """Where `scripts/gen` writes the document: gen/openapi/, beside the generated Python."""
    return Path(jobs_pb2.__file__).resolve().parents[2] / DOCUMENT_PATH


@functools.cache
def document_bytes() -> bytes:
    """The document to serve: the committed file (with descriptions) when this is a source checkout,
    else the same document built from the loaded descriptors."""
    path = committed_path()
    if path.is_file():
        return path.read_bytes()
    return render(build_document())


async def serve_document(request: Request) -> Response:
    del request
    return Response(document_bytes(), media_type=JSON)


def openapi_route(path: str = "/openapi.json") -> StarletteRoute:
    """A Starlette route that serves the document without authentication. Mount it before the
    transcoder's catch-all `Mount("/")`."""
    return StarletteRoute(path, serve_document, methods=["GET"])


# ---- command line -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Writes the OpenAPI document of the JobService.")
    parser.add_argument(
        "--descriptor-set",
        type=Path,
        help="a FileDescriptorSet compiled with --include_source_info: proto comments become descriptions",
    )
    parser.add_argument("--output", type=Path, help="the file to write (default: standard output)")
    args = parser.parse_args(argv)
    comments: dict[str, str] = {}
    if args.descriptor_set is not None:
        files = descriptor_pb2.FileDescriptorSet.FromString(args.descriptor_set.read_bytes())
        comments = comments_of(files.file)
    body = render(build_document(SERVICE, comments))
    if args.output is None:
        sys.stdout.buffer.write(body)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_bytes(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
