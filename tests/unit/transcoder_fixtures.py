"""Helpers for the transcoder tests: a test-only proto with every shape the transcoder handles
(compiled with protoc at import, added to the default pool) and a loopback uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from google.api import annotations_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_tools import protoc

from jobwire.server.api.context import CallContext
from jobwire.v1 import options_pb2

NAME = "transcoder_test/v1/sample.proto"

PROTO = """
syntax = "proto3";
package transcoder_test.v1;

import "google/api/annotations.proto";
import "google/protobuf/struct.proto";
import "jobwire/v1/options.proto";

enum Color {
  COLOR_UNSPECIFIED = 0;
  RED = 1;
  GREEN = 2;
}

message Inner {
  string name = 1;
  bytes doc = 2 [(jobwire.v1.raw_json) = true];
  int64 big = 3;
  Color color = 4;
}

message Node {
  bytes value = 1 [(jobwire.v1.raw_json) = true];
  repeated Node children = 2;
}

message Plain {
  string text = 1;
  int32 number = 2;
}

message Sample {
  string id = 1;
  int32 count = 2;
  optional uint32 limit = 3;
  repeated string tags = 4;
  Color color = 5;
  bool flag = 6;
  Inner inner = 7;
  repeated Inner items = 8;
  bytes payload = 9 [(jobwire.v1.raw_json) = true];
  repeated bytes docs = 10 [(jobwire.v1.raw_json) = true];
  int64 big = 11;
  double ratio = 12;
  map<string, string> labels = 13;
  bytes blob = 14;
  oneof choice {
    Inner picked = 15;
    string note = 16;
  }
  repeated int32 numbers = 17;
  Node tree = 18;
  Plain plain = 19;
  optional bool maybe = 20;
  uint64 huge = 21;
  float ratio32 = 22;
  google.protobuf.Value any_json = 23;
}

message BadMap {
  map<string, Inner> entries = 1;
}

message Reply {
  Sample sample = 1;
  uint32 total = 2;
  repeated Plain plains = 3;
}

service SampleService {
  rpc Get(Sample) returns (Reply) {
    option (google.api.http) = {
      get: "/v1/samples/{id}"
      additional_bindings {get: "/v1/{inner.name=shelves/*}/samples/{id}"}
    };
  }
  rpc Create(Sample) returns (Reply) {
    option (google.api.http) = {post: "/v1/samples" body: "*"};
  }
  rpc Files(Sample) returns (Reply) {
    option (google.api.http) = {get: "/v1/files/{id=**}"};
  }
  rpc Echo(Sample) returns (Sample) {
    option (google.api.http) = {
      post: "/v1/echo/{id}:echo"
      body: "inner"
      response_body: "payload"
    };
  }
  rpc Tags(Sample) returns (Sample) {
    option (google.api.http) = {post: "/v1/tags" body: "tags" response_body: "tags"};
  }
  rpc Watch(Sample) returns (stream Reply) {
    option (google.api.http) = {get: "/v1/samples/{id}:watch"};
  }
  rpc Hidden(Sample) returns (Sample);
}
"""


def _include_dirs() -> list[str]:
    repo = Path(__file__).resolve().parents[2]
    googleapis = Path(annotations_pb2.__file__).resolve().parents[2]
    import grpc_tools

    bundled = Path(grpc_tools.__file__).resolve().parent / "_proto"
    return [str(repo / "proto"), str(googleapis), str(bundled)]


def _compile() -> FileDescriptor:
    pool = descriptor_pool.Default()
    with contextlib.suppress(KeyError):
        return pool.FindFileByName(NAME)
    # The imports of the test proto must be in the pool before it.
    assert {m.DESCRIPTOR.name for m in (annotations_pb2, struct_pb2, options_pb2)} == {
        "google/api/annotations.proto",
        "google/protobuf/struct.proto",
        "jobwire/v1/options.proto",
    }
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / NAME
        source.parent.mkdir(parents=True)
        source.write_text(PROTO)
        out = Path(tmp) / "set.pb"
        args = [
            "protoc",
            f"-I{tmp}",
            *(f"-I{d}" for d in _include_dirs()),
            f"--descriptor_set_out={out}",
            NAME,
        ]
        assert protoc.main(args) == 0, "protoc failed"
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (proto,) = [f for f in files.file if f.name == NAME]
    return pool.AddSerializedFile(proto.SerializeToString())


FILE = _compile()
SERVICE: ServiceDescriptor = FILE.services_by_name["SampleService"]


def message_class(name: str) -> type[Message]:
    return GetMessageClass(FILE.message_types_by_name[name])


Sample = message_class("Sample")
Inner = message_class("Inner")
Node = message_class("Node")
Reply = message_class("Reply")
Plain = message_class("Plain")
BadMap = message_class("BadMap")


def method(name: str) -> MethodDescriptor:
    return SERVICE.methods_by_name[name]


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Runs `app` under uvicorn on a free loopback port; yields its base URL."""
    # A bounded graceful shutdown: a handler that wrongly never ends fails its test instead of hanging.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
        ws="none",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise its error
        await asyncio.sleep(0)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class SampleServicer:
    """The SampleService for HTTP tests. Requests are recorded; some ids select a behaviour."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: list[Any] = []
        self.metadata: list[Any] = []
        self.time_remaining: float | None = None
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.closed = asyncio.Event()
        self.gate = asyncio.Event()  # nothing sets it: a call waiting on it waits until stopped

    def _record(self, request: Any, context: CallContext) -> None:
        self.requests.append(request)
        self.metadata.append(context.invocation_metadata())
        self.time_remaining = context.time_remaining()

    async def _hold(self) -> None:
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def get(self, request: Any, context: CallContext) -> Any:
        self._record(request, context)
        if request.id == "slow":
            await self._hold()
        if request.id == "crash":
            raise RuntimeError("the handler has a bug")
        if request.id == "denied":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")
        return Reply(sample=request, total=1)

    async def create(self, request: Any, context: CallContext) -> Any:
        self._record(request, context)
        return Reply(sample=request, total=2)

    async def files(self, request: Any, context: CallContext) -> Any:
        self._record(request, context)
        return Reply(sample=request, total=3)

    async def echo(self, request: Any, context: CallContext) -> Any:
        self._record(request, context)
        return Sample(id=request.id, payload=request.inner.doc)

    async def tags(self, request: Any, context: CallContext) -> Any:
        self._record(request, context)
        return Sample(tags=request.tags)

    async def watch(self, request: Any, context: CallContext) -> AsyncIterator[Any]:
        self._record(request, context)
        try:
            if request.id == "fail-first":
                await context.abort(grpc.StatusCode.NOT_FOUND, "no such sample")
            if request.id == "slow-first":
                await self._hold()
            yield Reply(total=1, sample=Sample(payload=b'{"n":1}'))
            if request.id == "fail-later":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the store went away")
            if request.id == "crash-later":
                raise RuntimeError("the stream has a bug")
            if request.id == "slow":
                await self._hold()
            yield Reply(total=2)
        finally:
            self.closed.set()

    async def hidden(self, request: Any, context: CallContext) -> Any:
        return request
