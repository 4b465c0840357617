"""The generated protocol classes round-trip every message in every valid version."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.protocol import _messages as m
from tidelog.protocol.codec import Field, Message
from tidelog.protocol.primitives import DecodeError, Reader

INTS = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
}
MESSAGES = sorted(
    {*m.REQUESTS.values(), *m.RESPONSES.values(), m.RequestHeader, m.ResponseHeader}, key=lambda c: c.__name__
)


def primitive(kind: str) -> st.SearchStrategy:
    if kind in INTS:
        return st.integers(*INTS[kind])
    return {
        "bool": st.booleans(),
        "float64": st.floats(allow_nan=False),
        "string": st.text(max_size=8),
        "uuid": st.uuids().map(lambda u: uuid.UUID(int=u.int)),
        "bytes": st.binary(max_size=8),
        "records": st.binary(max_size=8),
    }[kind]


def field_value(f: Field, version: int, depth: int) -> st.SearchStrategy:
    if f.kind == "array":
        elem = primitive(f.arg) if isinstance(f.arg, str) else struct_of(f.arg, version, depth + 1)
        base = st.lists(elem, max_size=2 if depth < 2 else 0)
    elif f.kind == "struct":
        base = struct_of(f.arg, version, depth + 1)
    else:
        base = primitive(f.kind)
    return st.one_of(st.none(), base) if f.is_nullable(version) else base


def struct_of(cls: type, version: int, depth: int = 0) -> st.SearchStrategy:
    fields = {f.name: field_value(f, version, depth) for f in cls.FIELDS if f.present(version)}
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_round_trip_every_version(cls: type[Message], data: st.DataObject) -> None:
    version = data.draw(st.integers(*cls.VALID_VERSIONS), label="version")
    msg = data.draw(struct_of(cls, version), label="message")
    encoded = bytes(msg.encode(version).buf)
    r = Reader(encoded)
    decoded = cls.decode(r, version)
    assert r.remaining() == 0
    assert decoded == msg
    assert bytes(decoded.encode(version).buf) == encoded


def test_unknown_tagged_fields_are_kept_and_written_back() -> None:
    msg = m.ApiVersionsRequest(client_software_name="tidelog", client_software_version="1")
    body = bytearray(msg.encode(3).buf)
    assert body[-1] == 0  # empty tagged section
    body[-1:] = bytes([1, 42, 3]) + b"abc"  # one unknown tag 42 of 3 bytes
    decoded = m.ApiVersionsRequest.decode(bytes(body), 3)
    assert decoded._unknown_tags == {42: b"abc"}
    assert bytes(decoded.encode(3).buf) == bytes(body)


def test_request_header_v2_keeps_a_classic_client_id() -> None:
    h = m.RequestHeader(request_api_key=3, request_api_version=12, correlation_id=9, client_id="c")
    assert bytes(h.encode(2).buf) == bytes.fromhex("0003000c0000000900016300")


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"])
def test_truncated_or_garbage_input_raises_decode_error(junk: bytes) -> None:
    with pytest.raises(DecodeError):
        m.MetadataRequest.decode(junk, 12)
