"""Path variables and query parameters: text values set on (possibly nested) request fields.

Both follow grpc-gateway: a dotted name walks singular message fields, the last field is a scalar or
enum (repeated allowed for query parameters), and the text is converted to the field's type. Query
keys may use proto or JSON names; unknown keys are ignored, bad values are a 400 that names the key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from jobwire.server.api.transcoder import codec
from jobwire.server.api.transcoder.errors import bad_request

FieldPath = tuple[FieldDescriptor, ...]

_INT = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "True", "TRUE", "t", "T", "1"})
_FALSE = frozenset({"false", "False", "FALSE", "f", "F", "0"})
_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})
#: A query string with more fields than this is refused rather than parsed (cheap DoS guard).
MAX_QUERY_FIELDS = 1000

# Successful query-key resolutions per message type. Only hits are cached: keys come from clients,
# and caching misses would let them grow the cache without bound.
_resolved: dict[tuple[str, str], FieldPath] = {}


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    field = descriptor.fields_by_name.get(name)
    if field is not None:
        return field
    for candidate in descriptor.fields:
        if candidate.json_name == name:
            return candidate
    return None


def resolve(descriptor: Descriptor, names: Sequence[str]) -> FieldPath | None:
    """The fields that a dotted name walks, or None if it does not name a field reachable through
    singular message fields."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for name in names:
        if current is None:
            return None
        field = _field(current, name)
        if field is None:
            return None
        fields.append(field)
        current = None if field.is_repeated else field.message_type
    return tuple(fields)


def is_scalar(field: FieldDescriptor) -> bool:
    return field.type != FieldDescriptor.TYPE_MESSAGE and field.type != FieldDescriptor.TYPE_GROUP


def convert(field: FieldDescriptor, text: str) -> object:
    """The value of `text` for a scalar or enum field; ValueError says why it does not fit."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return text
    if kind in _INT_TYPES:
        if not _INT.fullmatch(text):
            raise ValueError(f"not an integer: {text!r}")
        return int(text)
    if kind == FieldDescriptor.TYPE_BOOL:
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if kind in _FLOAT_TYPES:
        if "_" in text:
            raise ValueError(f"not a number: {text!r}")
        return float(text)
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum_number(field, text)
    if kind == FieldDescriptor.TYPE_BYTES:
        return _bytes(field, text)
    raise ValueError(f"{field.name} cannot be set from text")


def _enum_number(field: FieldDescriptor, text: str) -> int:
    enum = field.enum_type
    assert enum is not None
    value = enum.values_by_name.get(text)
    if value is not None:
        return value.number
    if _INT.fullmatch(text) and (not enum.is_closed or int(text) in enum.values_by_number):
        return int(text)
    raise ValueError(f"not a value of {enum.name}: {text!r}")


def _bytes(field: FieldDescriptor, text: str) -> bytes:
    if codec.is_raw_json(field):
        # The field holds a JSON document, so its text form is JSON too, not base64.
        value, dumps = codec.decode_json(text.encode())
        return dumps(value)
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


def assign(message: Message, path: FieldPath, values: Sequence[str], name: str, what: str) -> None:
    """Sets the field at `path` from text values (all of them for a repeated field)."""
    target = message
    for field in path[:-1]:
        target = getattr(target, field.name)
    last = path[-1]
    if not last.is_repeated and len(values) != 1:
        raise bad_request(f"{what} {name!r} was given more than once")
    try:
        converted = [convert(last, text) for text in values]
        oneof = last.containing_oneof
        if oneof is not None and target.WhichOneof(oneof.name) not in (None, last.name):
            raise ValueError(f"another field of {oneof.name} is already set")
        if last.is_repeated:
            getattr(target, last.name).extend(converted)
        else:
            setattr(target, last.name, converted[0])
    except (ValueError, TypeError) as exc:
        raise bad_request(f"invalid value for {what} {name!r}: {exc}") from None


def parse_query(query_string: bytes) -> dict[str, list[str]]:
    """The parameters of a raw query string, in order, repeated keys gathered."""
    params: dict[str, list[str]] = {}
    if not query_string:
        return params
    try:
        pairs = parse_qsl(
            query_string.decode("latin-1"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_QUERY_FIELDS,
        )
    except ValueError as exc:  # UnicodeDecodeError included
        raise bad_request(f"malformed query string: {exc}") from None
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    return params


def apply_query(message: Message, params: Mapping[str, list[str]], skip: frozenset[tuple[str, ...]]) -> None:
    """Sets the fields named by query parameters, except those under a path in `skip` (the body
    field and the path variables, as proto names)."""
    descriptor = codec.descriptor_of(message)
    for key, values in params.items():
        cache_key = (descriptor.full_name, key)
        path = _resolved.get(cache_key)
        if path is None:
            path = resolve(descriptor, key.split("."))
            if path is None:
                continue  # unknown keys are ignored, as grpc-gateway does
            _resolved[cache_key] = path
        names = tuple(field.name for field in path)
        if any(names[:i] in skip for i in range(1, len(names) + 1)):
            continue
        if not is_scalar(path[-1]):
            raise bad_request(f"query parameter {key!r} names a message field, not a value")
        assign(message, path, values, key, "query parameter")
