"""JSON <-> message: protojson for ordinary fields, raw JSON spliced for `(jobwire.v1.raw_json)` fields."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import orjson
import pytest
from google.protobuf.message import Message

from jobwire.server.api.transcoder import HttpError, codec
from jobwire.v1 import job_pb2, jobs_pb2
from unit import transcoder_fixtures as fx

M = TypeVar("M", bound=Message)


def parse(message: M, body: bytes) -> M:
    value, dumps = codec.decode_json(body)
    codec.parse_message(message, value, dumps)
    return message


def parse_error(message: Message, body: bytes) -> str:
    with pytest.raises(HttpError) as caught:
        parse(message, body)
    assert caught.value.status == 400
    return caught.value.message


def encoded(message: Message, field: str | None = None) -> Any:
    descriptor = codec.descriptor_of(message).fields_by_name[field] if field else None
    return orjson.loads(codec.encode(message, descriptor))


# ---- decoding ---------------------------------------------------------------------------------------


def test_raw_json_input_is_compact_exact_and_ordered() -> None:
    body = b'{"input": {"z": 1, "a": [1, 2.5, "x", true, null], "s": "\\u00e9\\n"}, "webhook": "http://h"}'
    job = parse(job_pb2.JobSubmission(), body)
    assert isinstance(job, job_pb2.JobSubmission)
    assert job.input == '{"z":1,"a":[1,2.5,"x",true,null],"s":"é\\n"}'.encode()
    assert job.webhook == "http://h"


@pytest.mark.parametrize(
    "number",
    [
        "9007199254740993",  # above 2^53: a double would round it
        "18446744073709551615",  # 2^64 - 1: orjson's largest
        "18446744073709551616",  # 2^64: orjson would make it a float
        "-9223372036854775809",  # below -2^63
        "123456789012345678901234567890",
    ],
)
def test_raw_json_integers_stay_exact(number: str) -> None:
    job = parse(
        job_pb2.JobSubmission(), b'{"input": {"n": %s, "m": [%s]}}' % (number.encode(), number.encode())
    )
    assert job.input == b'{"n":%s,"m":[%s]}' % (number.encode(), number.encode())
    assert json.loads(job.input)["n"] == int(number)


def test_only_long_integer_literals_need_the_exact_parser() -> None:
    assert codec.decode_json(b"[0.00012345678901234567, 123456789012345678]")[1] is orjson.dumps
    assert codec.decode_json(b"[-1234567890123456789]")[1] is not orjson.dumps
    assert codec.decode_json(b"12345678901234567890123") == (12345678901234567890123, codec._dumps_exact)


def test_long_digit_runs_elsewhere_do_not_change_the_result() -> None:
    body = b'{"input": {"id": "12345678901234567890123", "f": 0.12345678901234567890, "n": 1.5}}'
    assert (
        parse(job_pb2.JobSubmission(), body).input
        == b'{"id":"12345678901234567890123","f":0.12345678901234568,"n":1.5}'
    )


def test_raw_json_null_missing_and_scalars() -> None:
    assert parse(job_pb2.JobSubmission(), b'{"input": null}').input == b"null"
    assert parse(job_pb2.JobSubmission(), b'{"webhook": "w"}').input == b""
    assert parse(job_pb2.JobSubmission(), b'{"input": "text"}').input == b'"text"'
    assert parse(job_pb2.JobSubmission(), b'{"input": 12}').input == b"12"
    assert parse(job_pb2.JobSubmission(), b'{"input": []}').input == b"[]"


def test_raw_json_field_by_proto_or_json_name() -> None:
    assert parse(job_pb2.JobSubmission(), b'{"s3Config": {"a": 1}}').s3_config == b'{"a":1}'
    assert parse(job_pb2.JobSubmission(), b'{"s3_config": {"a": 1}}').s3_config == b'{"a":1}'
    assert "given twice" in parse_error(job_pb2.JobSubmission(), b'{"s3Config": 1, "s3_config": 2}')


def test_ordinary_fields_follow_protojson() -> None:
    body = b'{"input": {}, "policy": {"executionTimeout": 60000, "low_priority": true}, "unknown": {"x": 1}}'
    job = parse(job_pb2.JobSubmission(), body)
    assert isinstance(job, job_pb2.JobSubmission)
    assert job.policy.execution_timeout == 60000
    assert job.policy.low_priority is True
    assert not job.policy.HasField("ttl")


def test_raw_json_at_any_depth() -> None:
    body = orjson.dumps(
        {
            "payload": {"top": 1},
            "docs": [{"a": 1}, None, 3],
            "inner": {"name": "n", "doc": [1, 2], "big": "12"},
            "items": [{"doc": {"i": 0}}, {"name": "no doc"}],
            "picked": {"doc": "p"},
            "tree": {"value": 1, "children": [{"value": 2, "children": [{"value": {"d": 3}}]}]},
            "labels": {"k": "v"},
            "plain": {"text": "t", "number": 7},
            "anyJson": [1, {"a": "b"}],
        }
    )
    sample: Any = parse(fx.Sample(), body)
    assert sample.payload == b'{"top":1}'
    assert list(sample.docs) == [b'{"a":1}', b"null", b"3"]
    assert (sample.inner.name, sample.inner.doc, sample.inner.big) == ("n", b"[1,2]", 12)
    assert [item.doc for item in sample.items] == [b'{"i":0}', b""]
    assert sample.items[1].name == "no doc"
    assert sample.WhichOneof("choice") == "picked"
    assert sample.picked.doc == b'"p"'
    assert sample.tree.value == b"1"
    assert sample.tree.children[0].children[0].value == b'{"d":3}'
    assert dict(sample.labels) == {"k": "v"}
    assert (sample.plain.text, sample.plain.number) == ("t", 7)
    assert sample.any_json.list_value.values[1].struct_value["a"] == "b"


def test_unknown_enum_names_are_ignored_like_unknown_fields() -> None:
    # protojson's DiscardUnknown, which grpc-gateway sets, drops unknown enum names too.
    sample: Any = parse(fx.Sample(), b'{"color": "PURPLE", "inner": {"color": "RED"}}')
    assert (sample.color, sample.inner.color) == (0, 1)


def test_an_empty_object_still_sets_a_message_field() -> None:
    sample: Any = parse(fx.Sample(), b'{"inner": {}, "tree": null}')
    assert sample.HasField("inner")
    assert not sample.HasField("tree")


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"[1, 2]", "request body must be a JSON object"),
        (b'"text"', "request body must be a JSON object"),
        (b'{"count": "many"}', "count"),
        (b'{"count": 3000000000}', "count"),
        (b'{"limit": -1}', "limit"),
        (b'{"inner": 5}', "inner"),
        (b'{"inner": {"big": "x"}}', "big"),
        (b'{"items": {"doc": 1}}', "items"),
        (b'{"items": [{"doc": 1}, 5]}', "items[1]"),
        (b'{"items": [{"big": "no"}]}', "big"),
        (b'{"tree": {"children": [{"value": 1, "children": [{"value": 2, "children": 3}]}]}}', "children"),
        (b'{"docs": {"a": 1}}', "docs"),
        (b'{"picked": {}, "note": "x"}', "choice"),
        (b'{"note": "x", "picked": {}}', "choice"),
        (b'{"plain": {"number": "n"}}', "number"),
    ],
)
def test_bad_values_are_400_naming_the_field(body: bytes, names: str) -> None:
    assert names in parse_error(fx.Sample(), body)


@pytest.mark.parametrize(
    "body", [b"{", b'{"a": 1} x', b"[NaN]", b"[1e400]", b'{"a": 12345678901234567890123, "b": 1e400}']
)
def test_malformed_json_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - orjson and the stdlib word it differently
        codec.decode_json(body)


# ---- encoding ---------------------------------------------------------------------------------------


def test_job_output_is_spliced_and_optional_fields_need_presence() -> None:
    job = job_pb2.Job(
        id="j1", status=job_pb2.COMPLETED, output=b'{"big":123456789012345678901234,"z":1,"a":2}'
    )
    job.delay_time = 0
    body = codec.encode(job)
    assert b'"output":{"big":123456789012345678901234,"z":1,"a":2}' in body
    assert json.loads(body) == {  # orjson would read the big integer as a float
        "id": "j1",
        "status": "COMPLETED",
        "delayTime": 0,
        "output": {"big": 123456789012345678901234, "z": 1, "a": 2},
    }


def test_empty_raw_json_is_left_out_not_base64() -> None:
    assert encoded(job_pb2.Job(id="j1")) == {"id": "j1", "status": "JOB_STATUS_UNSPECIFIED"}
    assert encoded(job_pb2.Job(id="j1", output=b"null"))["output"] is None


def test_zero_values_and_empty_lists_are_printed() -> None:
    assert encoded(jobs_pb2.PurgeQueueResponse(removed=0, status="completed")) == {
        "removed": 0,
        "status": "completed",
    }
    assert encoded(jobs_pb2.ReadStreamResponse(id="j1", status=job_pb2.IN_PROGRESS)) == {
        "id": "j1",
        "status": "IN_PROGRESS",
        "stream": [],
    }
    health = encoded(
        jobs_pb2.HealthResponse(jobs=jobs_pb2.JobCounts(), workers=jobs_pb2.WorkerCounts(idle=2))
    )
    assert health == {
        "jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
        "workers": {"idle": 2, "initializing": 0, "ready": 0, "running": 0, "throttled": 0, "unhealthy": 0},
    }


def test_nested_raw_json_is_spliced() -> None:
    read = jobs_pb2.ReadStreamResponse(
        id="j1",
        status=job_pb2.IN_PROGRESS,
        stream=[job_pb2.StreamOutput(output=b'{"t":"a"}'), job_pb2.StreamOutput(output=b'"b"')],
    )
    body = codec.encode(read)
    assert b'"stream":[{"output":{"t":"a"}},{"output":"b"}]' in body
    assert encoded(jobs_pb2.StreamResponse(chunk=jobs_pb2.Chunk(seq=0, output=b"[1]"))) == {
        "chunk": {"seq": 0, "output": [1]}
    }
    assert encoded(jobs_pb2.StreamResponse(done=job_pb2.Job(id="j", output=b"7"))) == {
        "done": {"id": "j", "status": "JOB_STATUS_UNSPECIFIED", "output": 7}
    }


def test_other_fields_of_a_spliced_message_survive() -> None:
    sample: Any = fx.Sample(
        id="s",
        count=0,
        tags=["a", "b"],
        color=2,
        flag=True,
        big=-(2**62),
        huge=2**64 - 1,
        ratio=0.5,
        labels={"k": "v"},
        blob=b"\x00\xff",
        note="n",
        numbers=[1, 2],
        plain=fx.Plain(text="t"),
        maybe=False,
        payload=b'{"p":1}',
        docs=[b"1", b""],
        items=[fx.Inner(name="i", doc=b"[]", color=1)],
        tree=fx.Node(children=[fx.Node(value=b"true")]),
    )
    sample.any_json.string_value = "v"
    assert encoded(sample) == {
        "id": "s",
        "count": 0,
        "tags": ["a", "b"],
        "color": "GREEN",
        "flag": True,
        "big": str(-(2**62)),
        "huge": str(2**64 - 1),
        "ratio": 0.5,
        "labels": {"k": "v"},
        "blob": "AP8=",
        "note": "n",
        "numbers": [1, 2],
        "plain": {"text": "t", "number": 0},
        "maybe": False,
        "ratio32": 0.0,
        "anyJson": "v",
        "payload": {"p": 1},
        "docs": [1, None],
        "items": [{"name": "i", "doc": [], "big": "0", "color": "RED"}],
        "tree": {"children": [{"value": True, "children": []}]},
    }
    assert sample.payload == b'{"p":1}'  # encoding leaves the message alone


def test_response_body_selects_one_field() -> None:
    run = jobs_pb2.RunResponse(job=job_pb2.Job(id="j1", status=job_pb2.IN_QUEUE))
    assert encoded(run, "job") == {"id": "j1", "status": "IN_QUEUE"}
    assert encoded(jobs_pb2.RunResponse(), "job") == {"id": "", "status": "JOB_STATUS_UNSPECIFIED"}
    payload = codec.descriptor_of(fx.Sample()).fields_by_name["payload"]
    assert codec.encode(fx.Sample(payload=b'{"raw": 1}'), payload) == b'{"raw": 1}'
    assert encoded(fx.Sample(), "payload") is None
    assert encoded(fx.Sample(tags=["x"]), "tags") == ["x"]
    assert encoded(fx.Sample(), "tags") == []
    assert encoded(fx.Sample(count=3), "count") == 3
    assert encoded(fx.Sample(docs=[b"{}"]), "docs") == [{}]


def test_stream_lines_wrap_the_result() -> None:
    line = codec.encode_line(jobs_pb2.StreamResponse(chunk=jobs_pb2.Chunk(seq=1, output=b'{"a":1}')))
    assert line == b'{"result":{"chunk":{"seq":1,"output":{"a":1}}}}\n'


@pytest.mark.parametrize("offset", [0, 2**63], ids=["orjson", "stdlib"])
def test_ten_megabytes_round_trip_byte_exact(offset: int) -> None:
    # With offset 2**63 every "big" has 19 digits, so the exact (stdlib) parser reads the body.
    rows = [{"i": i, "v": i * 0.5, "big": offset + i, "s": f"r{i}"} for i in range(190_000)]
    document = orjson.dumps({"prompt": "é" * 600_000, "rows": rows})
    assert len(document) > 10_000_000
    request: Any = parse(jobs_pb2.RunRequest(), b'{"job": {"input": %s}}' % document)
    assert request.job.input == document
    body = codec.encode(
        jobs_pb2.RunResponse(job=job_pb2.Job(id="j", output=document)),
        codec.descriptor_of(jobs_pb2.RunResponse()).fields_by_name["job"],
    )
    assert body == b'{"id":"j","status":"JOB_STATUS_UNSPECIFIED","output":%s}' % document


# ---- plans ------------------------------------------------------------------------------------------


def test_plans_find_raw_fields_and_their_ancestors() -> None:
    plan = codec.plan_of(codec.descriptor_of(fx.Sample()))
    assert [f.name for f in plan.raw] == ["payload", "docs"]
    assert [f.name for f in plan.nested] == ["inner", "items", "picked", "tree"]
    assert codec.plan_of(codec.descriptor_of(fx.Plain())).names == frozenset()
    assert codec.plan_of(codec.descriptor_of(jobs_pb2.RunRequest())).names == {"job"}
    assert codec.plan_of(codec.descriptor_of(jobs_pb2.HealthResponse())).names == frozenset()


def test_raw_json_inside_map_values_is_refused_at_startup() -> None:
    with pytest.raises(TypeError, match="map values"):
        codec.prepare(codec.descriptor_of(fx.BadMap()))


# ---- bodies with raw_json members kept verbatim ----------------------------------------------------

SUBMISSION = codec.verbatim_names(job_pb2.JobSubmission.DESCRIPTOR)


def parse_body(body: bytes) -> job_pb2.JobSubmission:
    message = job_pb2.JobSubmission()
    value, dumps = codec.decode_body(body, SUBMISSION)
    codec.parse_message(message, value, dumps)
    return message


def test_verbatim_names_are_the_singular_raw_json_fields_by_both_names() -> None:
    assert {"input", "s3Config", "s3_config"} == SUBMISSION
    assert codec.verbatim_names(job_pb2.Job.DESCRIPTOR) >= {"output"}


def test_raw_json_members_keep_the_clients_text_and_the_rest_follows_protojson() -> None:
    text = b'{ "b": 12345678901234567890123, "a": [1.50, "\\u00e9"] }'
    job = parse_body(b'{"input": ' + text + b', "s3Config": {"k": 1}, "policy": {"ttl": 60000}}')
    assert job.input == text
    assert job.s3_config == b'{"k": 1}'
    assert job.policy.ttl == 60000
    assert parse_body(b'{"input": null}').input == b"null"
    assert parse_body(b'{"s3_config": "x"}').s3_config == b'"x"'


@pytest.mark.parametrize(
    "body",
    [b'{"input": [1, }', b'{"input": NaN}', b'{"input": 1} x', b'{"input": "\xff"}', b"{"],
)
def test_a_malformed_body_with_raw_members_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - msgspec, orjson and the codec word it differently
        codec.decode_body(body, SUBMISSION)


def test_a_body_that_is_not_an_object_is_left_to_the_usual_refusal() -> None:
    assert codec.decode_body(b"[1]", SUBMISSION)[0] == [1]
    assert codec.NOT_OBJECT in parse_error(job_pb2.JobSubmission(), b"[1]")


def test_long_integers_in_other_members_keep_the_exact_encoder() -> None:
    value, dumps = codec.decode_body(b'{"input": 1, "webhook": 12345678901234567890123}', SUBMISSION)
    assert value["webhook"] == 12345678901234567890123 and dumps is codec._dumps_exact
