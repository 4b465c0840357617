"""A small etcd v3 client over etcd's JSON gateway (``POST /v3/<service>/<method>``) with
httpx on Trio: the key-value calls, transactions, leases and watches that the cluster's
metadata needs, and nothing else. etcd answers its gRPC API as JSON there (3.4 and 3.5
alike): keys and values are base64, int64 fields come back as strings, and fields at their
default value are left out.

Every call has a deadline (``timeout``); an etcd that cannot be reached, or does not answer
in time, raises ``EtcdUnavailable``, after each endpoint given was tried in turn."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import trio

log = logging.getLogger("tidelog.cluster")


class EtcdError(Exception):
    """etcd refused a call (its gRPC error ``code`` and message)."""

    def __init__(self, message: str, code: int = -1) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint answered in time."""


class WatchCompacted(EtcdError):
    """A watch's start revision was compacted away: read again, then watch from
    ``compact_revision``'s successor."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch start revision compacted (now {compact_revision})")
        self.compact_revision = compact_revision


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range of every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


@dataclasses.dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(
            _unb64(kv.get("key")),
            _unb64(kv.get("value")),
            int(kv.get("create_revision", 0)),
            int(kv.get("mod_revision", 0)),
            int(kv.get("version", 0)),
            int(kv.get("lease", 0)),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class WatchEvent:
    """A key put (``deleted`` False) or deleted (also when its lease expired)."""

    kv: KeyValue
    deleted: bool


# ---- transaction parts: plain dicts, as the gateway takes them ----


def key_absent(key: bytes) -> dict[str, Any]:
    """Compare: ``key`` does not exist (its create revision is 0): create-if-absent."""
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def mod_revision_is(key: bytes, revision: int) -> dict[str, Any]:
    """Compare: ``key`` was last changed at ``revision`` (compare-and-swap)."""
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def put_op(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"requestPut": request}


def delete_op(key: bytes) -> dict[str, Any]:
    return {"requestDeleteRange": {"key": _b64(key)}}


def range_op(key: bytes) -> dict[str, Any]:
    return {"requestRange": {"key": _b64(key)}}


@dataclasses.dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    #: Each operation's answer as etcd gives it (``response_put``, ``response_range``, ...).
    responses: list[dict[str, Any]]

    def ranged(self, i: int) -> list[KeyValue]:
        """The keys read by the ``i``-th operation (a ``range_op``)."""
        return [KeyValue.from_json(kv) for kv in self.responses[i].get("response_range", {}).get("kvs", [])]


class Etcd:
    """A client of one etcd cluster (``endpoints``: its client URLs). Use it as
    ``async with Etcd([...]) as etcd:``."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._preferred = 0  # the endpoint that answered last

    async def __aenter__(self) -> Etcd:
        # httpx's own timeout is a backstop; every call has its Trio deadline.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, read=None))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("use the client as `async with Etcd(...) as etcd:`")
        return self._http

    def _order(self) -> list[str]:
        n = len(self.endpoints)
        return [self.endpoints[(self._preferred + i) % n] for i in range(n)]

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One unary call (``path`` such as ``/v3/kv/range``), failing over between
        endpoints; raises EtcdError for an answer with an error, EtcdUnavailable when none
        answers within ``timeout``."""
        errors = []
        with trio.move_on_after(self.timeout):
            for i, endpoint in enumerate(self._order()):
                try:
                    response = await self.http.post(endpoint + path, json=body)
                except httpx.TransportError as e:
                    errors.append(f"{endpoint}: {e!r}")
                    continue
                self._preferred = (self._preferred + i) % len(self.endpoints)
                doc: dict[str, Any] = response.json()
                if response.status_code != 200 or "error" in doc or ("code" in doc and "message" in doc):
                    raise EtcdError(
                        f"etcd {path}: {doc.get('message') or doc.get('error') or response.status_code}",
                        int(doc.get("code", -1)),
                    )
                return doc
        raise EtcdUnavailable(
            f"etcd {path}: no endpoint answered within {self.timeout}s ({'; '.join(errors)})"
        )

    # ---- key-value ----

    async def range(self, key: bytes, *, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The key (or every key under the prefix) and the store's revision at the read."""
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        doc = await self.call("/v3/kv/range", body)
        return [KeyValue.from_json(kv) for kv in doc.get("kvs", [])], int(doc["header"].get("revision", 0))

    async def get(self, key: bytes) -> KeyValue | None:
        kvs, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Writes ``key``; returns the store's revision after the write."""
        doc = await self.call("/v3/kv/put", put_op(key, value, lease)["requestPut"])
        return int(doc["header"].get("revision", 0))

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """Deletes the key (or every key under the prefix); returns how many were deleted."""
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        doc = await self.call("/v3/kv/deleterange", body)
        return int(doc.get("deleted", 0))

    async def txn(
        self,
        compare: Sequence[dict[str, Any]],
        success: Sequence[dict[str, Any]],
        failure: Sequence[dict[str, Any]] = (),
    ) -> TxnResult:
        """An atomic if (every ``compare`` holds) then ``success`` else ``failure``."""
        doc = await self.call(
            "/v3/kv/txn", {"compare": list(compare), "success": list(success), "failure": list(failure)}
        )
        return TxnResult(
            bool(doc.get("succeeded", False)), int(doc["header"].get("revision", 0)), doc.get("responses", [])
        )

    # ---- leases ----

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        doc = await self.call("/v3/lease/grant", {"TTL": ttl})
        return int(doc["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renews the lease once; its new TTL in seconds, 0 if it has expired (gone)."""
        doc = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(doc.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        """Ends the lease now: its keys are deleted at once."""
        await self.call("/v3/lease/revoke", {"ID": str(lease)})

    # ---- watches ----

    async def watch(
        self, key: bytes, *, prefix: bool = False, start_revision: int = 0
    ) -> AsyncIterator[list[WatchEvent]]:
        """The changes to the key (or the keys under the prefix) from ``start_revision``
        (0: from now), a batch per etcd revision, until cancelled. Raises WatchCompacted
        when that revision is gone, EtcdUnavailable when the stream cannot be opened or
        breaks (the caller reads again and watches from its revision + 1)."""
        request: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            request["range_end"] = _b64(prefix_end(key))
        if start_revision:
            request["start_revision"] = str(start_revision)
        body = {"create_request": request}
        endpoint = self._order()[0]
        try:
            async with self.http.stream("POST", endpoint + "/v3/watch", json=body) as response:
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result", {})
                    if int(result.get("compact_revision", 0)):
                        raise WatchCompacted(int(result["compact_revision"]))
                    if result.get("canceled"):
                        raise EtcdError(f"watch cancelled by etcd: {result.get('cancel_reason', '')}")
                    events = [
                        WatchEvent(KeyValue.from_json(e.get("kv", {})), e.get("type") == "DELETE")
                        for e in result.get("events", [])
                    ]
                    if events:
                        yield events
        except httpx.TransportError as e:
            raise EtcdUnavailable(f"etcd watch on {endpoint}: {e!r}") from e
        raise EtcdUnavailable(f"etcd watch on {endpoint}: the stream ended")
