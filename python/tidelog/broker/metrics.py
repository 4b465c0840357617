"""The broker's metrics, named as Kafka's MBeans come out of the Prometheus JMX exporter's
usual rules (``kafka.server<type=BrokerTopicMetrics, name=MessagesInPerSec, topic=t>`` ->
``kafka_server_brokertopicmetrics_messagesin_total{topic="t"}``), so dashboards and alerts
written for Kafka read tidelog. The README lists each with the MBean it mirrors.

The hot path only adds to plain integers (``BrokerMetrics``); everything else (partitions,
lag, groups, log sizes) is read from the broker's state when Prometheus scrapes. A scrape is
served by ``prometheus_client``'s HTTP server on its own thread, which asks the broker's
event loop for the figures (``trio.from_thread``), so the state is read where it is changed
and the event loop never waits on HTTP."""

from __future__ import annotations

import bisect
import dataclasses
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import trio

from tidelog.error_codes import ErrorCode

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.core import Metric

    from tidelog.broker.server import Broker

log = logging.getLogger("tidelog.broker")
#: Histogram bucket bounds, in ms, of request times and log flushes.
BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Histogram:
    """Counts per bucket (cumulative only when exported), their sum and count."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_MS) + 1)
        self.sum = 0.0

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_MS, ms)] += 1
        self.sum += ms

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum

    def samples(self, name: str, labels: dict[str, str]) -> Iterator[tuple[str, dict[str, str], float]]:
        total = 0
        for bound, count in zip([*map(str, BUCKETS_MS), "+Inf"], self.counts, strict=True):
            total += count
            yield f"{name}_bucket", {**labels, "le": bound}, total
        yield f"{name}_count", labels, total
        yield f"{name}_sum", labels, self.sum


@dataclasses.dataclass(slots=True)
class TopicCounters:
    messages_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bytes_rejected: int = 0
    failed_produce_requests: int = 0
    failed_fetch_requests: int = 0


#: The time parts of a request, as Kafka's RequestMetrics splits them: reading and decoding
#: it (``requestqueuetimems``), handling it (``localtimems``), waiting for replication or
#: data (``remotetimems``), the quota's mute (``throttletimems``), sending the answer
#: (``responsesendtimems``), and all of it (``totaltimems``).
TIME_PARTS = ("requestqueue", "local", "remote", "throttle", "responsesend", "total")


class LoopIdle(trio.abc.Instrument):
    """The share of time the broker's event loop waits for I/O with nothing to run. Kafka
    reports its request handler threads' and network threads' idleness; here one event loop
    does both jobs, so its idle share stands for both. Measured over the last minute (since
    it started, during its first): the idle seconds at each scrape are kept for a minute."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self.idle = 0.0
        self._wait_started = 0.0
        now = time.perf_counter()
        #: (time, idle seconds then), oldest first; the first is at least ``WINDOW`` old
        #: once the loop has run that long.
        self._history = [(now, 0.0)]

    def before_io_wait(self, timeout: float) -> None:
        self._wait_started = time.perf_counter()

    def after_io_wait(self, timeout: float) -> None:
        self.idle += time.perf_counter() - self._wait_started

    def share(self) -> float:
        """Idle seconds per second over the last minute, 0 to 1."""
        now = time.perf_counter()
        history = self._history
        if now - history[-1][0] >= 1.0:  # one a second at most, however often it is scraped
            history.append((now, self.idle))
        while len(history) > 2 and history[1][0] <= now - self.WINDOW:
            history.pop(0)
        start, idle = history[0]
        return min(1.0, (self.idle - idle) / (now - start)) if now > start else 1.0


class BrokerMetrics:
    """What the hot path counts. Plain integers in dicts: a produce or fetch adds a few."""

    def __init__(self) -> None:
        #: Whether ``/metrics`` is served: the per-request figures (error codes, times), the
        #: costliest to count, are only counted then.
        self.served = False
        self.topics: defaultdict[str, TopicCounters] = defaultdict(TopicCounters)
        self.requests: Counter[tuple[str, int]] = Counter()  # (api, version)
        self.errors: Counter[tuple[str, str]] = Counter()  # (api, error name)
        #: api -> a histogram per part of ``TIME_PARTS``.
        self.times: defaultdict[str, list[Histogram]] = defaultdict(lambda: [Histogram() for _ in TIME_PARTS])
        self.connections_created: Counter[str] = Counter()  # by listener
        self.connections_closed: Counter[str] = Counter()
        self.authentication_failures: Counter[str] = Counter()
        self.authentication_successes: Counter[str] = Counter()
        self.isr_shrinks = 0
        self.isr_expands = 0
        #: Installed on the event loop while ``/metrics`` is served.
        self.loop_idle: LoopIdle | None = None

    def produced(self, topic: str, messages: int, size: int) -> None:
        t = self.topics[topic]
        t.messages_in += messages
        t.bytes_in += size

    def produce_failed(self, topic: str, size: int) -> None:
        t = self.topics[topic]
        t.failed_produce_requests += 1
        t.bytes_rejected += size

    def answered(self, api: str, version: int, error_codes: Iterable[int], times_ms: Iterable[float]) -> None:
        """One request answered: its API, the error codes in its answer, its times (in the
        order of ``TIME_PARTS``)."""
        self.requests[(api, version)] += 1
        errors = self.errors
        for code in error_codes:
            errors[(api, ERROR_NAMES.get(code) or f"UNKNOWN_{code}")] += 1
        for histogram, ms in zip(self.times[api], times_ms, strict=True):
            histogram.observe(ms)


ERROR_NAMES = {int(c): c.name for c in ErrorCode}


def _metric(name: str, doc: str, kind: str, samples: Iterable[tuple[str, dict[str, str], float]]) -> Metric:
    from prometheus_client.core import Metric  # imported when first served: 80 ms at start otherwise

    m = Metric(name, doc, kind)
    for sample_name, labels, value in samples:
        m.add_sample(sample_name, labels, value)
    return m


def _topic_metrics(metrics: BrokerMetrics) -> Iterator[Metric]:
    fields = (
        ("messagesin", "messages_in", "Messages appended as leader"),
        ("bytesin", "bytes_in", "Bytes of record batches appended as leader"),
        ("bytesout", "bytes_out", "Bytes of records sent to consumers"),
        ("bytesrejected", "bytes_rejected", "Bytes of record batches refused"),
        ("failedproducerequests", "failed_produce_requests", "Partitions of produce requests that failed"),
        ("failedfetchrequests", "failed_fetch_requests", "Partitions of fetch requests that failed"),
    )
    for short, attr, doc in fields:
        name = f"kafka_server_brokertopicmetrics_{short}"
        per_topic = [
            (name + "_total", {"topic": t}, float(getattr(c, attr))) for t, c in metrics.topics.items()
        ]
        total = sum(v for _, _, v in per_topic)
        yield _metric(
            name, doc + " (BrokerTopicMetrics)", "counter", [(name + "_total", {}, total), *per_topic]
        )


def _request_metrics(metrics: BrokerMetrics) -> Iterator[Metric]:
    name = "kafka_network_requestmetrics_requests"
    yield _metric(
        name,
        "Requests answered, by API and version (RequestMetrics RequestsPerSec)",
        "counter",
        (
            (name + "_total", {"request": api, "version": str(v)}, float(n))
            for (api, v), n in metrics.requests.items()
        ),
    )
    name = "kafka_network_requestmetrics_errors"
    yield _metric(
        name,
        "Error codes in answers, by API and error (RequestMetrics ErrorsPerSec)",
        "counter",
        ((name + "_total", {"request": api, "error": e}, float(n)) for (api, e), n in metrics.errors.items()),
    )
    for i, part in enumerate(TIME_PARTS):
        name = f"kafka_network_requestmetrics_{part}timems"
        samples = [s for api, hs in metrics.times.items() for s in hs[i].samples(name, {"request": api})]
        yield _metric(name, f"Request {part} time in ms (RequestMetrics {part}TimeMs)", "histogram", samples)


def _gauge(name: str, doc: str, samples: Iterable[tuple[dict[str, str], float]]) -> Metric:
    return _metric(name, doc, "gauge", ((name, labels, value) for labels, value in samples))


def _counter(name: str, doc: str, samples: Iterable[tuple[dict[str, str], float]]) -> Metric:
    return _metric(name, doc, "counter", ((name + "_total", labels, value) for labels, value in samples))


def snapshot(broker: Broker) -> list[Metric]:
    """Every metric, read from the broker's state (call it on the broker's event loop)."""
    metrics = broker.metrics
    me, image = broker.config.node_id, broker.image
    leaders = under_replicated = under_min_isr = offline = count = 0
    sizes: list[tuple[dict[str, str], float]] = []
    ends: list[tuple[dict[str, str], float]] = []
    for topic in image.topics.values():
        for p in topic.partitions:
            if me not in p.replicas:
                continue
            count += 1
            part = broker.replicas.partition(topic.name, p.index)
            if p.leader < 0 or part is None:
                offline += p.leader < 0 or p.leader == me
                continue
            labels = {"topic": topic.name, "partition": str(p.index)}
            sizes.append((labels, float(part.log.size_bytes)))
            ends.append((labels, float(part.log.end_offset)))
            if p.leader == me and not broker.fenced:
                leaders += 1
                under_replicated += len(part.isr) < len(p.replicas)
                under_min_isr += len(part.isr) < part.min_insync_replicas
    flushes = Histogram()
    for part in broker.replicas.all_online():
        flushes.add(part.flush_times)
    listeners = sorted({e.name for e in broker.endpoints})
    open_now = metrics.connections_created - metrics.connections_closed

    def by_listener(counts: Counter[str]) -> list[tuple[dict[str, str], float]]:
        return [({"listener": n}, float(counts[n])) for n in listeners]

    rm, sm = "kafka_server_replicamanager_", "kafka_server_socketservermetrics_"
    controller = "kafka_controller_kafkacontroller_"
    flush = "kafka_log_logflushstats_logflushrateandtimems"
    return [
        *_topic_metrics(metrics),
        *_request_metrics(metrics),
        _gauge(rm + "partitioncount", "Partitions with a replica here", [({}, count)]),
        _gauge(rm + "leadercount", "Partitions led here", [({}, leaders)]),
        _gauge(
            rm + "underreplicatedpartitions",
            "Partitions led here whose ISR is smaller than their replicas",
            [({}, under_replicated)],
        ),
        _gauge(
            rm + "underminisrpartitioncount",
            "Partitions led here whose ISR is below min.insync.replicas",
            [({}, under_min_isr)],
        ),
        _counter(rm + "isrshrinks", "ISR shrinks made by this broker as leader", [({}, metrics.isr_shrinks)]),
        _counter(
            rm + "isrexpands", "ISR expansions made by this broker as leader", [({}, metrics.isr_expands)]
        ),
        _gauge(
            controller + "offlinepartitionscount", "Partitions here without a live leader", [({}, offline)]
        ),
        _metric(
            "kafka_controller_controllerstats_leaderelectionrateandtimems",
            "Leaders moved by this broker as controller (ControllerStats LeaderElectionRateAndTimeMs count)",
            "unknown",
            [
                (
                    "kafka_controller_controllerstats_leaderelectionrateandtimems_count",
                    {},
                    broker.controller.elections,
                )
            ],
        ),
        _gauge(
            controller + "activecontrollercount",
            "1 on the broker that is the controller",
            [({}, float(image.controller_id == me))],
        ),
        _gauge("kafka_log_log_size", "Bytes of a partition's log here", sizes),
        _gauge("kafka_log_log_logendoffset", "A partition's log end offset here", ends),
        _metric(flush, "Log flushes (fsync) and their time in ms", "histogram", flushes.samples(flush, {})),
        _gauge(sm + "connection_count", "Open connections by listener", by_listener(open_now)),
        _counter(
            sm + "connection_creation", "Connections accepted", by_listener(metrics.connections_created)
        ),
        _counter(sm + "connection_close", "Connections closed", by_listener(metrics.connections_closed)),
        _counter(
            sm + "successful_authentication",
            "SASL logins that succeeded",
            by_listener(metrics.authentication_successes),
        ),
        _counter(
            sm + "failed_authentication", "SASL logins refused", by_listener(metrics.authentication_failures)
        ),
        _counter(
            "kafka_server_quota_throttle_time",
            "Throttle time given, in ms, by quota (Produce, Fetch, Request) and the entity that set it",
            [
                ({"resource": resource, "user": user, "client_id": client}, float(ms))
                for (resource, user, client), ms in broker.quotas.throttled_ms.items()
            ],
        ),
        *_idle_metrics(metrics),
        *_group_metrics(broker),
    ]


def _idle_metrics(metrics: BrokerMetrics) -> Iterator[Metric]:
    if metrics.loop_idle is None:
        return
    share = metrics.loop_idle.share()
    for name, kafka in (
        ("kafka_server_kafkarequesthandlerpool_requesthandleravgidle", "RequestHandlerAvgIdlePercent"),
        ("kafka_network_socketserver_networkprocessoravgidle", "NetworkProcessorAvgIdlePercent"),
    ):
        doc = f"The event loop's idle share over the last minute, 0 to 1 ({kafka})"
        yield _gauge(name + "_percent", doc, [({}, share)])


def _group_metrics(broker: Broker) -> Iterator[Metric]:
    """Groups by state, rebalances, commits, and each committed partition's lag (high
    watermark minus committed offset), as the coordinator knows them."""
    coordinator = broker.groups
    states = Counter(g.state for g in coordinator.groups.values())
    gm = "kafka_coordinator_group_groupmetadatamanager_"
    yield _gauge(
        gm + "numgroups", "Groups coordinated here, by state", [({"state": s}, n) for s, n in states.items()]
    )
    yield _counter(
        gm + "offsetcommits", "Offsets committed to groups here", [({}, coordinator.offset_commits)]
    )
    yield _counter(gm + "rebalances", "Rebalances completed by groups here", [({}, coordinator.rebalances)])
    lag: list[tuple[dict[str, str], float]] = []
    for group_id, g in coordinator.groups.items():
        for (topic, index), entry in g.offsets.items():
            part = broker.replicas.partition(topic, index)
            if part is None or not part.is_leader:
                continue  # its high watermark is known to its leader
            labels = {"group": group_id, "topic": topic, "partition": str(index)}
            lag.append((labels, float(max(0, part.high_watermark - entry.offset))))
    yield _gauge(
        "kafka_consumergroup_lag", "High watermark minus the committed offset, per partition led here", lag
    )


class BrokerCollector:
    """A ``prometheus_client`` collector: asks the broker's event loop for a ``snapshot``
    at each scrape."""

    def __init__(self, broker: Broker, token: trio.lowlevel.TrioToken) -> None:
        self.broker = broker
        self.token = token

    def collect(self) -> Iterable[Metric]:
        try:
            return trio.from_thread.run_sync(snapshot, self.broker, trio_token=self.token)
        except trio.RunFinishedError:
            return []


def serve_metrics(broker: Broker, host: str, port: int) -> WSGIServer:
    """Serves ``/metrics`` on ``host:port`` (0: a free port) from a thread of its own, and
    starts measuring the event loop's idleness; the caller shuts the server down
    (``stop_metrics``)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(BrokerCollector(broker, trio.lowlevel.current_trio_token()))
    server, _thread = start_http_server(port, host, registry)
    broker.metrics.served = True
    broker.metrics.loop_idle = LoopIdle()
    trio.lowlevel.add_instrument(broker.metrics.loop_idle)
    log.info("metrics served on http://%s:%d/metrics", host, server.server_port)
    return server


async def stop_metrics(broker: Broker, server: WSGIServer) -> None:
    """Stops what ``serve_metrics`` started."""
    if broker.metrics.loop_idle is not None:
        trio.lowlevel.remove_instrument(broker.metrics.loop_idle)
        broker.metrics.loop_idle = None
    broker.metrics.served = False
    await trio.to_thread.run_sync(server.shutdown)
    server.server_close()
