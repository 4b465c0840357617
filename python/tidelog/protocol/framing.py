"""Frames (int32 size + header + body) and the per-API header-version rules."""

from __future__ import annotations

from typing import Any

from tidelog.protocol._messages import REQUESTS, RESPONSES, RequestHeader, ResponseHeader
from tidelog.protocol.codec import Message
from tidelog.protocol.primitives import INT16, INT32, DecodeError, Reader, Writer

API_VERSIONS_KEY = 18


def request_header_version(api_key: int, api_version: int) -> int:
    cls = REQUESTS.get(api_key)
    if cls is not None and cls.is_flexible(api_version):
        return 2
    return 1


def response_header_version(api_key: int, api_version: int) -> int:
    if api_key == API_VERSIONS_KEY:
        return 0  # clients must parse it before they know what the broker speaks
    cls = RESPONSES.get(api_key)
    return 1 if cls is not None and cls.is_flexible(api_version) else 0


def decode_request_header(frame: bytes) -> tuple[Any, Reader]:
    """The request header (v1 or v2 by the API's flexibility) and a reader at the body."""
    r = Reader(frame)
    if r.remaining() < 8:
        raise DecodeError("request header shorter than 8 bytes", 0)
    api_key = r.fixed(INT16)
    api_version = r.fixed(INT16)
    r.pos = 0
    header = RequestHeader.decode(r, request_header_version(api_key, api_version))
    return header, r


def encode_response(api_key: int, api_version: int, correlation_id: int, body: Message) -> list[Any]:
    """The response frame as chunks: bytes, and any file slices spliced into its records."""
    w = Writer()
    w.buf += b"\0\0\0\0"  # size, filled in below
    ResponseHeader(correlation_id=correlation_id).encode(response_header_version(api_key, api_version), w)
    body.encode(api_version, w)
    size = w.size() - 4
    chunks = w.chunks()
    first = bytearray(chunks[0])
    first[0:4] = INT32.pack(size)
    chunks[0] = bytes(first)
    return chunks


def encode_request(header: Any, body: Message, api_version: int) -> bytes:
    """A request frame (used by tidelog's own client and tests)."""
    w = Writer()
    header.encode(request_header_version(body.API_KEY, api_version), w)
    body.encode(api_version, w)
    data = bytes(w.buf)
    return INT32.pack(len(data)) + data
