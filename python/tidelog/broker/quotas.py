"""Client quotas as Kafka's ``ClientQuotaManager`` keeps them: ``producer_byte_rate``,
``consumer_byte_rate`` and ``request_percentage``, set for a user, a client id, or a (user,
client id) pair, each name possibly ``<default>``; the most specific entity that has a value
applies, in Kafka's order. Each entity's usage is a rate over ``quota.window.num`` samples of
``quota.window.size.seconds``; a request that takes the rate above the bound is answered with
the time the client must wait for the rate to fall back (KIP-219), and the broker reads
nothing more from that connection for as long, so a throttled client slows only itself.

An entity is a sorted tuple of (type, name) pairs, the name None for ``<default>``:
``(("user", "alice"),)``, ``(("client-id", None), ("user", "alice"))``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

USER, CLIENT_ID = "user", "client-id"
PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
QUOTA_KEYS = (PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE)
#: The ``type`` of Kafka's quota metrics (``kafka.server:type=Produce,user=,client-id=``).
RESOURCES = {PRODUCER_BYTE_RATE: "Produce", CONSUMER_BYTE_RATE: "Fetch", REQUEST_PERCENTAGE: "Request"}

#: One quota entity: ((type, name or None for <default>), ...), sorted by type.
Entity = tuple[tuple[str, str | None], ...]


def entity_key(entity: Entity) -> str:
    """The entity as one string (its file and etcd key)."""
    return json.dumps([list(part) for part in entity])


def entity_from_key(key: str) -> Entity:
    return tuple(sorted((str(t), None if n is None else str(n)) for t, n in json.loads(key)))


def candidates(user: str, client_id: str) -> list[Entity]:
    """The entities whose quota applies to (user, client id), most specific first, in
    Kafka's order."""
    u, c = (USER, user), (CLIENT_ID, client_id)
    du, dc = (USER, None), (CLIENT_ID, None)
    return [(c, u), (dc, u), (u,), (c, du), (dc, du), (du,), (c,), (dc,)]


class Rate:
    """Kafka's ``Rate`` over sampled windows: the sum of the samples still in the window
    divided by the time they cover (at least ``samples - 1`` whole windows)."""

    def __init__(self, samples: int, window: float) -> None:
        self.samples, self.window = samples, window
        self._windows: list[list[float]] = []  # [start, total], oldest first

    def record(self, value: float, now: float) -> None:
        if not self._windows or now - self._windows[-1][0] >= self.window:
            self._windows.append([now, 0.0])
        self._windows[-1][1] += value
        oldest = now - self.samples * self.window
        while self._windows and self._windows[0][0] + self.window <= oldest:
            self._windows.pop(0)

    def window_size(self, now: float) -> float:
        """The seconds the rate is measured over (Kafka's ``Rate.windowSize``)."""
        elapsed = now - self._windows[0][0] if self._windows else 0.0
        full = int(elapsed / self.window)
        if full < self.samples - 1:
            elapsed += (self.samples - 1 - full) * self.window
        return elapsed

    def rate(self, now: float) -> float:
        oldest = now - self.samples * self.window
        total = sum(v for start, v in self._windows if start + self.window > oldest)
        return total / self.window_size(now)


class QuotaManager:
    """Usage per (quota key, entity) and the throttle times it leads to. ``quotas()`` returns
    the quotas in force (the metadata image's)."""

    def __init__(
        self, quotas: Callable[[], Mapping[Entity, Mapping[str, float]]], samples: int, window: float
    ) -> None:
        self._quotas = quotas
        self.samples, self.window = samples, window
        self._rates: dict[tuple[str, Entity], Rate] = {}
        #: Throttle time handed out, in ms, by (resource, user, client id) as Kafka tags its
        #: quota metrics: the names of the client the applied entity covers, "" for a
        #: dimension it leaves out (a client-id quota: ("Produce", "", "app")).
        self.throttled_ms: Counter[tuple[str, str, str]] = Counter()

    def bound(self, key: str, user: str, client_id: str) -> tuple[Entity, float] | None:
        """The entity whose ``key`` quota applies to (user, client id), and its value."""
        quotas = self._quotas()
        if not quotas:
            return None
        for entity in candidates(user, client_id):
            value = quotas.get(entity, {}).get(key)
            if value is not None:
                return entity, value
        return None

    def max_in_window(self, key: str, user: str, client_id: str) -> float:
        """The most that can be recorded at once without certainly being throttled (Kafka's
        ``getMaxValueInQuotaWindow``): a fetch is cut to it, else a large one would be
        refused for ever."""
        found = self.bound(key, user, client_id)
        return float("inf") if found is None else found[1] * (self.samples - 1) * self.window

    def record(self, key: str, user: str, client_id: str, value: float, now: float) -> int:
        """Records ``value`` against the applicable quota; the throttle time in ms (0 when
        within it, or without a quota)."""
        found = self.bound(key, user, client_id)
        if found is None:
            return 0
        entity, bound = found
        rate = self._rates.get((key, entity))
        if rate is None:
            rate = self._rates[(key, entity)] = Rate(self.samples, self.window)
        rate.record(value, now)
        observed = rate.rate(now)
        if observed <= bound:
            return 0
        throttle_ms = round((observed - bound) / bound * rate.window_size(now) * 1000)
        types = {t for t, _ in entity}
        tags = (RESOURCES[key], user if USER in types else "", client_id if CLIENT_ID in types else "")
        self.throttled_ms[tags] += throttle_ms
        return throttle_ms

    def unrecord(self, key: str, user: str, client_id: str, value: float, now: float) -> None:
        """Takes back a recorded value (a throttled fetch is answered empty, as Kafka does)."""
        found = self.bound(key, user, client_id)
        rate = self._rates.get((key, found[0])) if found else None
        if rate is not None:
            rate.record(-value, now)


def quota_user(principal: str) -> str:
    """The user name quotas know a principal by (``User:alice`` -> ``alice``)."""
    return principal.partition(":")[2] or principal


def docs(quotas: Mapping[Entity, Mapping[str, float]]) -> dict[str, Any]:
    """The quotas as stored in a file: {entity key: {quota key: value}}."""
    return {entity_key(e): dict(v) for e, v in quotas.items()}
