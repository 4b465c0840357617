"""Encodes and decodes the generated message classes (``_messages.py``) for any version by
interpreting their ``FIELDS`` tables: classic and flexible versions, compact types, tagged
fields (unknown tags are kept and written back), nullable fields and field-level
flexibility (the request header's ClientId)."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, NamedTuple

from tidelog.buffers import RecordsSlice, as_view
from tidelog.protocol.primitives import FIXED, INT8, DecodeError, Reader, Writer

ZERO_UUID = uuid.UUID(int=0)
#: Default-value markers in FIELDS: a fresh empty list, a fresh default struct.
LIST = object()
STRUCT = object()


class Field(NamedTuple):
    name: str
    kind: str  # a primitive type name, "array" or "struct"
    arg: Any  # arrays: element type name or struct class; structs: the class
    versions: tuple[int, int]
    nullable: tuple[int, int] | None
    tag: int | None
    tagged: tuple[int, int] | None
    default: Any
    flexible: tuple[int, int] | None  # field-level override of the message's flexibility, or None

    def present(self, version: int) -> bool:
        return self.versions[0] <= version <= self.versions[1]

    def is_nullable(self, version: int) -> bool:
        return self.nullable is not None and self.nullable[0] <= version <= self.nullable[1]

    def is_tagged(self, version: int, flexible: bool) -> bool:
        return flexible and self.tagged is not None and self.tagged[0] <= version <= self.tagged[1]

    def make_default(self) -> Any:
        if self.default is LIST:
            return []
        if self.default is STRUCT:
            return self.arg()
        return self.default


class Struct:
    """A struct of a Kafka message: attributes named after its fields (snake_case)."""

    __slots__ = ("_unknown_tags",)
    FIELDS: ClassVar[tuple[Field, ...]] = ()

    def __init__(self, **values: Any) -> None:
        for f in self.FIELDS:
            object.__setattr__(self, f.name, values.pop(f.name) if f.name in values else f.make_default())
        if values:
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(sorted(values))}")
        self._unknown_tags: dict[int, bytes] | None = None

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in self.FIELDS)

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self.FIELDS)
        return f"{type(self).__name__}({inner})"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (memoryview, RecordsSlice)) or isinstance(b, (memoryview, RecordsSlice)):
        return a is not None and b is not None and bytes(a) == bytes(b)
    return bool(a == b)


class Message(Struct):
    """A request, response or header, with its schema's facts."""

    __slots__ = ()
    API_KEY: ClassVar[int] = -1
    KIND: ClassVar[str] = ""
    VALID_VERSIONS: ClassVar[tuple[int, int]] = (0, 0)
    FLEXIBLE_FROM: ClassVar[int | None] = None

    @classmethod
    def is_flexible(cls, version: int) -> bool:
        return cls.FLEXIBLE_FROM is not None and version >= cls.FLEXIBLE_FROM

    def encode(self, version: int, w: Writer | None = None) -> Writer:
        w = w or Writer()
        encode_struct(self, version, self.is_flexible(version), w)
        return w

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview | Reader, version: int) -> Any:
        r = buf if isinstance(buf, Reader) else Reader(buf)
        return decode_struct(cls, version, cls.is_flexible(version), r)


# ---- encoding ----


def encode_struct(obj: Struct, version: int, flexible: bool, w: Writer) -> None:
    tagged: list[tuple[int, bytes]] = []
    for f in obj.FIELDS:
        if not f.present(version):
            continue
        value = getattr(obj, f.name)
        if f.is_tagged(version, flexible):
            if not _is_default(f, value):
                tw = Writer()
                _encode_value(f, value, version, flexible, tw)
                tagged.append((f.tag, bytes(tw.buf)))  # type: ignore[arg-type]
            continue
        field_flexible = flexible if f.flexible is None else f.flexible[0] <= version <= f.flexible[1]
        _encode_value(f, value, version, field_flexible, w)
    if flexible:
        unknown = obj._unknown_tags or {}
        entries = sorted([*tagged, *unknown.items()])
        w.uvarint(len(entries))
        for tag, data in entries:
            w.uvarint(tag)
            w.uvarint(len(data))
            w.buf += data


def _is_default(f: Field, value: Any) -> bool:
    if f.default is LIST:
        return bool(value == [])
    if f.default is STRUCT:
        return bool(value == f.arg())
    return bool(value == f.default)


def _encode_value(f: Field, value: Any, version: int, flexible: bool, w: Writer) -> None:
    if f.kind == "array":
        if value is None:
            _null(f, version, flexible, w, wide=True)
            return
        w.length(len(value), flexible, wide=True)
        if isinstance(f.arg, str):
            for item in value:
                _encode_primitive(f.arg, item, f, version, flexible, w)
        else:
            for item in value:
                encode_struct(item, version, flexible, w)
    elif f.kind == "struct":
        if value is None:
            w.fixed(INT8, -1)
            return
        if f.is_nullable(version):
            w.fixed(INT8, 1)
        encode_struct(value, version, flexible, w)
    else:
        _encode_primitive(f.kind, value, f, version, flexible, w)


def _null(f: Field, version: int, flexible: bool, w: Writer, wide: bool) -> None:
    if not f.is_nullable(version):
        raise ValueError(f"field {f.name} is not nullable in version {version}")
    w.length(-1, flexible, wide)


def _encode_primitive(kind: str, value: Any, f: Field, version: int, flexible: bool, w: Writer) -> None:
    s = FIXED.get(kind)
    if s is not None:
        w.buf += s.pack(value)
    elif kind == "bool":
        w.buf.append(1 if value else 0)
    elif kind == "string":
        if value is None:
            _null(f, version, flexible, w, wide=False)
            return
        data = value.encode()
        w.length(len(data), flexible, wide=False)
        w.buf += data
    elif kind == "uuid":
        w.buf += value.bytes
    elif kind in ("bytes", "records"):
        if value is None:
            _null(f, version, flexible, w, wide=True)
            return
        if isinstance(value, (bytes, bytearray, memoryview, RecordsSlice)):
            w.length(len(value), flexible, wide=True)
            w.buf += as_view(value)
        else:  # a file slice, sent zero-copy
            w.length(value.length, flexible, wide=True)
            w.splice(value)
    else:
        raise ValueError(f"unknown field type {kind}")


# ---- decoding ----


def decode_struct(cls: type[Struct], version: int, flexible: bool, r: Reader) -> Any:
    obj = cls.__new__(cls)
    obj._unknown_tags = None
    tagged_fields: dict[int, Field] = {}
    for f in cls.FIELDS:
        if not f.present(version):
            object.__setattr__(obj, f.name, f.make_default())
            continue
        if f.is_tagged(version, flexible):
            object.__setattr__(obj, f.name, f.make_default())
            tagged_fields[f.tag] = f  # type: ignore[index]
            continue
        field_flexible = flexible if f.flexible is None else f.flexible[0] <= version <= f.flexible[1]
        object.__setattr__(obj, f.name, _decode_value(f, version, field_flexible, r))
    if flexible:
        count = r.uvarint()
        last = -1
        for _ in range(count):
            tag = r.uvarint()
            size = r.uvarint()
            if tag <= last:
                raise DecodeError(f"tagged field {tag} out of order", r.pos)
            last = tag
            data = r.take(size)
            known = tagged_fields.get(tag)
            if known is None:
                if obj._unknown_tags is None:
                    obj._unknown_tags = {}
                obj._unknown_tags[tag] = bytes(data)
            else:
                object.__setattr__(obj, known.name, _decode_value(known, version, flexible, Reader(data)))
    return obj


def _decode_value(f: Field, version: int, flexible: bool, r: Reader) -> Any:
    if f.kind == "array":
        n = r.length(flexible, wide=True)
        if n < 0:
            return _decoded_null(f, version, r)
        if n > r.remaining():
            raise DecodeError(f"array {f.name} of {n} items is longer than the message", r.pos)
        if isinstance(f.arg, str):
            return [_decode_primitive(f.arg, f, version, flexible, r) for _ in range(n)]
        return [decode_struct(f.arg, version, flexible, r) for _ in range(n)]
    if f.kind == "struct":
        if f.is_nullable(version) and r.fixed(INT8) < 0:
            return None
        return decode_struct(f.arg, version, flexible, r)
    return _decode_primitive(f.kind, f, version, flexible, r)


def _decoded_null(f: Field, version: int, r: Reader) -> None:
    if not f.is_nullable(version):
        raise DecodeError(f"null {f.name}, which is not nullable in version {version}", r.pos)
    return None


def _decode_primitive(kind: str, f: Field, version: int, flexible: bool, r: Reader) -> Any:
    s = FIXED.get(kind)
    if s is not None:
        return r.fixed(s)
    if kind == "bool":
        return r.take(1)[0] != 0
    if kind == "string":
        n = r.length(flexible, wide=False)
        if n < 0:
            return _decoded_null(f, version, r)
        try:
            return str(r.take(n), "utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"string {f.name} is not UTF-8", r.pos) from None
    if kind == "uuid":
        return r.uuid()
    if kind in ("bytes", "records"):
        n = r.length(flexible, wide=True)
        if n < 0:
            return _decoded_null(f, version, r)
        start = r.pos
        data = r.take(n)
        if kind == "bytes":
            return bytes(data)
        return data if r.source is None else RecordsSlice(r.source, start, start + n)
    raise DecodeError(f"unknown field type {kind}", r.pos)
