"""The generic HTTP/JSON transcoder: `google.api.http` rules served in-process, grpc-gateway style.

    from jobwire.server.api.registry import rpcs_of
    from jobwire.server.api.transcoder import Transcoder

    app = Transcoder(rpcs_of(jobs_pb2.DESCRIPTOR.services_by_name["JobService"], servicer))
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=8080))

`Transcoder.routes` (a `RouteTable` of `Route`s) is the compiled rule set, for an OpenAPI generator.
"""

from __future__ import annotations

from jobwire.server.api.transcoder.app import DEFAULT_MAX_BODY, Transcoder
from jobwire.server.api.transcoder.errors import HttpError
from jobwire.server.api.transcoder.rules import (
    PathTemplate,
    Route,
    RouteMatch,
    RouteTable,
    TemplateError,
    Variable,
    compile_rule,
    parse_template,
    routes_of,
)
from jobwire.server.api.transcoder.shim import HTTP_STATUS, CallShim, RpcAbort

__all__ = [
    "DEFAULT_MAX_BODY",
    "HTTP_STATUS",
    "CallShim",
    "HttpError",
    "PathTemplate",
    "Route",
    "RouteMatch",
    "RouteTable",
    "RpcAbort",
    "TemplateError",
    "Transcoder",
    "Variable",
    "compile_rule",
    "parse_template",
    "routes_of",
]
