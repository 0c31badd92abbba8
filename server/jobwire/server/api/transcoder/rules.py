"""`google.api.http` rules compiled into a route table: path templates, bodies, limits.

Template grammar (google/api/http.proto):

    Template = "/" Segments [ ":" Verb ]
    Segment  = "*" | "**" | LITERAL | "{" FieldPath [ "=" Segments ] "}"

`{var}` means `{var=*}`; `**` matches any number of segments and only comes last. A template with
a verb is tried before one without, so `/v2/{e}/stream/{j}:follow` is not taken for `{j}` = `j1:follow`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor

from jobwire.server.api.registry import Rpc
from jobwire.server.api.transcoder import codec, params
from jobwire.server.api.transcoder.errors import HttpError, bad_request
from jobwire.v1 import options_pb2

STAR = "*"
STARS = "**"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HTTP_METHODS = ("get", "put", "post", "delete", "patch")


class TemplateError(ValueError):
    """A path template or http rule that cannot be compiled."""


@dataclass(frozen=True, slots=True)
class Variable:
    """A `{field.path=...}` of a template: the field it sets and the segments it spans."""

    field_path: tuple[str, ...]
    start: int
    end: int  # exclusive; a trailing `**` extends it to the end of the request path


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A compiled path template. `segments` holds literals and the STAR/STARS wildcards."""

    source: str
    segments: tuple[str, ...]
    verb: str
    variables: tuple[Variable, ...]

    @property
    def shape(self) -> tuple[tuple[str, ...], str]:
        """What two templates must share to match the same paths (variable names aside)."""
        return self.segments, self.verb

    @property
    def rank(self) -> tuple[int, tuple[int, ...]]:
        """Sort key: with a verb first, then literals before `*` before `**`, segment by segment."""
        ranks = tuple(0 if s not in (STAR, STARS) else 1 if s == STAR else 2 for s in self.segments)
        return (0 if self.verb else 1, ranks)

    def match(self, parts: Sequence[str]) -> list[str] | None:
        """The (percent-decoded) variable values if the raw path segments match, else None."""
        if self.verb:
            suffix = ":" + self.verb
            last = parts[-1]
            if len(last) <= len(suffix) or not last.endswith(suffix):
                return None
            parts = [*parts[:-1], last[: -len(suffix)]]
        segments = self.segments
        open_ended = segments[-1] == STARS
        if len(parts) != len(segments) and not (open_ended and len(parts) >= len(segments) - 1):
            return None
        for segment, part in zip(segments, parts, strict=False):
            if segment == STAR:
                if not part:
                    return None
            elif segment != STARS and part != segment and ("%" not in part or _decode(part) != segment):
                return None
        return [self._value(variable, parts) for variable in self.variables]

    def _value(self, variable: Variable, parts: Sequence[str]) -> str:
        end = (
            len(parts) if variable.end == len(self.segments) and self.segments[-1] == STARS else variable.end
        )
        if end - variable.start == 1 and self.segments[variable.start] != STARS:
            return _decode(parts[variable.start])
        # Several segments: keep an encoded slash encoded so the value's own slashes stay meaningful.
        return "/".join(
            _decode(part.replace("%2F", "%252F").replace("%2f", "%252F"))
            for part in parts[variable.start : end]
        )


def _decode(part: str) -> str:
    try:
        return unquote(part, errors="strict")
    except UnicodeDecodeError:
        raise bad_request(f"invalid percent-encoding in path segment {part!r}") from None


def _split_top(text: str) -> tuple[list[str], int]:
    """Splits on `/` outside braces; also returns the index of a top-level `:` after the last `/`."""
    parts: list[str] = []
    depth = start = 0
    colon = -1
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0 and char == "/":
            parts.append(text[start:index])
            start, colon = index + 1, -1
        elif depth == 0 and char == ":" and colon < 0:
            colon = index
        if depth not in (0, 1):
            raise TemplateError("unbalanced or nested braces")
    if depth:
        raise TemplateError("unbalanced braces")
    parts.append(text[start:])
    return parts, colon


def _check_segment(segment: str) -> str:
    if (
        not segment
        or any(char in segment for char in "{}=")
        or (STAR in segment and segment not in (STAR, STARS))
    ):
        raise TemplateError(f"bad segment {segment!r}")
    return segment


def parse_template(source: str) -> PathTemplate:
    """Compiles a template such as `/v2/{endpoint_id}/stream/{job_id}:follow`; TemplateError if bad."""
    try:
        return _parse(source)
    except TemplateError as exc:
        raise TemplateError(f"path template {source!r}: {exc}") from None


def _parse(source: str) -> PathTemplate:
    if not source.startswith("/"):
        raise TemplateError("must start with /")
    body = source[1:]
    parts, colon = _split_top(body)
    verb = ""
    if colon >= 0:
        verb = _check_segment(body[colon + 1 :])
        parts, _ = _split_top(body[:colon])
    segments: list[str] = []
    variables: list[Variable] = []
    for part in parts:
        if not part.startswith("{"):
            segments.append(_check_segment(part))
            continue
        if not part.endswith("}"):
            raise TemplateError(f"bad variable {part!r}")
        name, has_pattern, pattern = part[1:-1].partition("=")
        names = tuple(name.split("."))
        if not all(_IDENT.fullmatch(n) for n in names):
            raise TemplateError(f"bad field path {name!r}")
        if any(v.field_path == names for v in variables):
            raise TemplateError(f"variable {name!r} given twice")
        start = len(segments)
        segments.extend(_check_segment(s) for s in (pattern.split("/") if has_pattern else [STAR]))
        variables.append(Variable(names, start, len(segments)))
    if STARS in segments[:-1]:
        raise TemplateError("** may only be the last segment")
    return PathTemplate(source, tuple(segments), verb, tuple(variables))


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of an RPC, resolved against its request and response types."""

    rpc: Rpc
    http_method: str
    template: PathTemplate
    body: str  # "", "*" or a top-level request field
    response_body: str
    max_body_bytes: int
    #: Per template variable, the request fields it walks (proto names in `template`).
    path_fields: tuple[params.FieldPath, ...]
    body_field: FieldDescriptor | None
    response_field: FieldDescriptor | None
    #: Field paths (proto names) that query parameters may not set: the body field and path variables.
    query_skip: frozenset[tuple[str, ...]] = field(default=frozenset())
    #: Members of the body object kept as the client's bytes (its raw_json fields, `codec.decode_body`).
    verbatim: frozenset[str] = field(default=frozenset())


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    values: list[str]


def _pattern(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise TemplateError("http rule without a pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    assert kind in _HTTP_METHODS
    return kind.upper(), getattr(rule, kind)


def _top_field(method: MethodDescriptor, name: str, *, response: bool) -> FieldDescriptor | None:
    if not name or name == "*":
        return None
    descriptor = method.output_type if response else method.input_type
    found = descriptor.fields_by_name.get(name)
    if found is None:
        raise TemplateError(f"{method.full_name}: no field {name!r} in {descriptor.full_name}")
    return found


def compile_rule(rpc: Rpc, rule: http_pb2.HttpRule, max_body: int) -> Route:
    """The route of one http rule of `rpc` (not its additional bindings); TemplateError if the rule
    names fields the request or response does not have, or binds a path variable to a non-scalar."""
    http_method, source = _pattern(rule)
    template = parse_template(source)
    method = rpc.method
    path_fields = []
    for variable in template.variables:
        path = params.resolve(method.input_type, variable.field_path)
        if path is None or not params.is_scalar(path[-1]) or path[-1].is_repeated:
            raise TemplateError(
                f"{method.full_name}: {source}: {'.'.join(variable.field_path)} is not a scalar field"
            )
        path_fields.append(path)
    body_field = _top_field(method, rule.body, response=False)
    skip = {tuple(f.name for f in path) for path in path_fields}
    if body_field is not None:
        skip.add((body_field.name,))
    return Route(
        rpc=rpc,
        http_method=http_method,
        template=template,
        body=rule.body,
        response_body=rule.response_body,
        max_body_bytes=max_body,
        path_fields=tuple(path_fields),
        body_field=body_field,
        response_field=_top_field(method, rule.response_body, response=True),
        query_skip=frozenset(skip),
        verbatim=_verbatim(method, rule.body, body_field),
    )


def _verbatim(method: MethodDescriptor, body: str, body_field: FieldDescriptor | None) -> frozenset[str]:
    if body == "*":
        return codec.verbatim_names(method.input_type)
    target = None if body_field is None or body_field.is_repeated else body_field.message_type
    if target is None or codec.is_well_known(target):
        return frozenset()
    return codec.verbatim_names(target)


def routes_of(rpc: Rpc, default_max_body: int) -> list[Route]:
    """The routes of one RPC: its http rule and its additional bindings; none without a rule."""
    options = rpc.method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    if rpc.method.client_streaming:
        # A stream of request messages has no single JSON body to decode.
        raise TemplateError(f"{rpc.method.full_name}: client-streaming methods cannot have an http rule")
    rule = options.Extensions[annotations_pb2.http]
    limit = options.Extensions[options_pb2.max_body_bytes] or default_max_body
    routes = [compile_rule(rpc, rule, limit)]
    for binding in rule.additional_bindings:
        if binding.additional_bindings:
            raise TemplateError(f"{rpc.method.full_name}: additional_bindings may not nest")
        routes.append(compile_rule(rpc, binding, limit))
    return routes


class RouteTable:
    """The compiled routes of a set of RPCs, most specific first; matches request paths."""

    def __init__(self, routes: Iterable[Route]) -> None:
        seen: dict[tuple[str, tuple[tuple[str, ...], str]], Route] = {}
        for route in routes:
            key = (route.http_method, route.template.shape)
            other = seen.get(key)
            if other is not None:
                raise TemplateError(
                    f"{route.http_method} {route.template.source} ({route.rpc.method.full_name}) overlaps "
                    f"{other.template.source} ({other.rpc.method.full_name})"
                )
            seen[key] = route
        self.routes: tuple[Route, ...] = tuple(sorted(seen.values(), key=lambda r: r.template.rank))

    @classmethod
    def of(cls, rpcs: Iterable[Rpc], default_max_body: int) -> RouteTable:
        return cls(route for rpc in rpcs for route in routes_of(rpc, default_max_body))

    def match(self, http_method: str, path: str) -> RouteMatch:
        """The route for a raw (still percent-encoded) path; HttpError 404 or 405 otherwise."""
        if not path.startswith("/"):
            raise HttpError(404, "not found")
        parts = path[1:].split("/")
        allowed: list[str] = []
        for route in self.routes:
            values = route.template.match(parts)
            if values is None:
                continue
            if route.http_method == http_method:
                return RouteMatch(route, values)
            allowed.append(route.http_method)
        if allowed:
            allow = ", ".join(sorted(set(allowed))).encode()
            raise HttpError(405, f"method {http_method} not allowed", ((b"allow", allow),))
        raise HttpError(404, "not found")
