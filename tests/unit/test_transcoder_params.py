"""Query parameters and path values set on request fields, grpc-gateway style."""

from __future__ import annotations

from typing import Any

import pytest

from jobwire.server.api.transcoder import HttpError, codec, params
from jobwire.v1 import jobs_pb2
from unit import transcoder_fixtures as fx


def query(text: str, skip: frozenset[tuple[str, ...]] = frozenset(), message: Any = None) -> Any:
    target = fx.Sample() if message is None else message
    params.apply_query(target, params.parse_query(text.encode()), skip)
    return target


def query_error(text: str) -> str:
    with pytest.raises(HttpError) as caught:
        query(text)
    assert caught.value.status == 400
    return caught.value.message


def test_parse_query_keeps_order_and_repeats() -> None:
    assert params.parse_query(b"") == {}
    assert params.parse_query(b"a=1&b=&a=2&c=x+y%20z&d=%C3%A9") == {
        "a": ["1", "2"],
        "b": [""],
        "c": ["x y z"],
        "d": ["é"],
    }


def test_parse_query_refuses_bad_encoding_and_floods() -> None:
    with pytest.raises(HttpError, match="malformed query"):
        params.parse_query(b"a=%ff")
    with pytest.raises(HttpError, match="malformed query"):
        params.parse_query(b"&".join([b"a=1"] * (params.MAX_QUERY_FIELDS + 1)))


def test_scalars_enums_bools_and_nested_paths() -> None:
    sample = query(
        "count=-5&limit=0&tags=a&tags=b&color=GREEN&flag=true&inner.name=n&inner.color=1"
        "&ratio=1.5&ratio32=0.25&big=-9007199254740993&huge=18446744073709551615&numbers=1&numbers=2"
        "&note=x&plain.number=7&maybe=0"
    )
    assert sample.count == -5
    assert sample.HasField("limit") and sample.limit == 0
    assert list(sample.tags) == ["a", "b"]
    assert sample.color == 2
    assert sample.flag is True
    assert (sample.inner.name, sample.inner.color) == ("n", 1)
    assert (sample.ratio, sample.ratio32) == (1.5, 0.25)
    assert (sample.big, sample.huge) == (-9007199254740993, 2**64 - 1)
    assert list(sample.numbers) == [1, 2]
    assert sample.note == "x"
    assert sample.plain.number == 7
    assert sample.HasField("maybe") and sample.maybe is False


def test_json_names_bytes_and_raw_json() -> None:
    sample = query("blob=AP8&payload=%7B%22a%22%3A%20%5B1%2C%202%5D%7D&inner.doc=12345678901234567890123")
    assert sample.blob == b"\x00\xff"
    assert sample.payload == b'{"a":[1,2]}'
    assert sample.inner.doc == b"12345678901234567890123"
    assert query("blob=-_8=").blob == b"\xfb\xff"


def test_unknown_keys_are_ignored() -> None:
    sample = query("nope=1&inner.nope=2&tags.x=3&count.x=4&items.name=5&labels.k=6")
    assert sample == fx.Sample()


def test_bound_fields_are_skipped() -> None:
    skip = frozenset({("id",), ("inner",)})
    sample = query("id=x&inner.name=y&count=1", skip)
    assert (sample.id, sample.inner.name, sample.count) == ("", "", 1)
    sample = query("inner.name=y&inner.color=RED", frozenset({("inner", "name")}))
    assert (sample.inner.name, sample.inner.color) == ("", 1)


def test_runsync_wait_by_query() -> None:
    request = query(
        "wait=5000&job.webhook=x", frozenset({("endpoint_id",), ("job",)}), jobs_pb2.RunSyncRequest()
    )
    assert request.HasField("wait") and request.wait == 5000
    assert not request.HasField("job")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("count=abc", "'count'"),
        ("count=1_000", "'count'"),
        ("count=1.5", "'count'"),
        ("count=99999999999", "'count'"),
        ("limit=-1", "'limit'"),
        ("huge=18446744073709551616", "'huge'"),
        ("flag=yes", "'flag'"),
        ("color=PURPLE", "'color'"),
        ("inner.color=9x", "'inner.color'"),
        ("ratio=1_0", "'ratio'"),
        ("ratio=abc", "'ratio'"),
        ("blob=!!", "'blob'"),
        ("payload=%7Bbad", "'payload'"),
        ("count=1&count=2", "'count'"),
        ("inner=x", "'inner'"),
        ("labels=x", "'labels'"),
        ("anyJson=1", "'anyJson'"),
        ("picked.name=a&note=b", "'note'"),
    ],
)
def test_bad_values_are_400_naming_the_parameter(text: str, names: str) -> None:
    assert names in query_error(text)


def test_open_enums_take_unknown_numbers() -> None:
    assert query("color=7").color == 7


def test_convert_by_field_type() -> None:
    fields = codec.descriptor_of(fx.Sample()).fields_by_name
    assert params.convert(fields["id"], "x y") == "x y"
    assert params.convert(fields["flag"], "F") is False
    assert params.convert(fields["color"], "RED") == 1
    assert params.convert(fields["count"], "+3") == 3
    with pytest.raises(ValueError, match="cannot be set"):
        params.convert(fields["inner"], "x")
