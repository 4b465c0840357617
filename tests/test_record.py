"""``Record`` behaves the same as the Rust class and as its pure-Python twin."""

from __future__ import annotations

import pickle

import pytest

from tidelog import _core
from tidelog.records import PyRecord


@pytest.fixture(params=["rust", "python"])
def cls(request):
    return _core.Record if request.param == "rust" else PyRecord


def test_fields_equality_hash_and_repr(cls):
    r = cls(3, 1000, b"k", b"v", [("h", b"x")])
    assert (r.offset, r.timestamp, r.key, r.value, r.headers) == (3, 1000, b"k", b"v", (("h", b"x"),))
    assert r == cls(3, 1000, b"k", b"v", (("h", b"x"),))
    assert r != cls(3, 1000, b"k", b"w", (("h", b"x"),))
    assert hash(r) == hash(cls(3, 1000, b"k", b"v", [("h", b"x")]))
    assert repr(r) == "Record(offset=3, timestamp=1000, key=b'k', value=b'v', headers=(('h', b'x'),))"
    assert repr(r) == repr(
        (_core.Record if cls is PyRecord else PyRecord)(3, 1000, b"k", b"v", [("h", b"x")])
    )
    assert cls(0, 0) == cls(0, 0, None, None, ())
    assert (cls(0, 0) == (0, 0, None, None, ())) is False


def test_unpacking_indexing_pickling_and_matching(cls):
    r = cls(7, 5, None, b"v")
    offset, ts, key, value, headers = r
    assert (offset, ts, key, value, headers) == (7, 5, None, b"v", ())
    assert len(r) == 5 and r[0] == 7 and r[-2] == b"v"
    assert pickle.loads(pickle.dumps(r)) == r
    match r:
        case cls(offset=7, value=b"v"):
            pass
        case _:
            pytest.fail("match on fields failed")


def test_immutable(cls):
    r = cls(1, 2)
    with pytest.raises(AttributeError):
        r.offset = 5


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 63, 64, 65, 1000, 65537])
def test_the_two_crc32c_implementations_agree_with_a_reference(size):
    import crc32c as reference

    from tidelog._crc32c import crc32c as pure

    data = bytes((i * 131 + 7) % 256 for i in range(size))
    assert _core.crc32c(data) == pure(data) == reference.crc32c(data)
