"""Request handlers, one per Kafka API, and the table of what the broker advertises."""

from __future__ import annotations

import contextvars
import logging
import os
import re
import shutil
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from tidelog.broker.partition import OfflinePartition, Partition
from tidelog.buffers import as_view
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import CorruptRecordError, OffsetOutOfRangeError, TidelogError
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AlterConfigOp, ConfigResourceType, ConfigSource, OffsetSpec
from tidelog.records import iter_batches
from tidelog.storage.api import wall_clock_ms

if TYPE_CHECKING:
    from tidelog.broker.server import Broker

log = logging.getLogger("tidelog.broker")
Handler = Callable[["Broker", Any, Any, int], Awaitable[Any]]

#: api key -> (min, max) advertised. Floors stay low where clients require them (see
#: PROTOCOL-NOTES): Produce 0-2 are advertised but answered with UNSUPPORTED_VERSION.
ADVERTISED: dict[int, tuple[int, int]] = {
    0: (0, 9),  # Produce
    1: (4, 12),  # Fetch
    2: (1, 9),  # ListOffsets
    3: (0, 12),  # Metadata
    18: (0, 4),  # ApiVersions
    19: (2, 7),  # CreateTopics
    20: (1, 6),  # DeleteTopics
    21: (0, 2),  # DeleteRecords
    22: (0, 4),  # InitProducerId
    32: (0, 4),  # DescribeConfigs
    33: (0, 2),  # AlterConfigs
    35: (1, 4),  # DescribeLogDirs
    37: (0, 3),  # CreatePartitions
    44: (0, 1),  # IncrementalAlterConfigs
    60: (0, 1),  # DescribeCluster
    61: (0, 0),  # DescribeProducers
}
SOFTWARE_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")
HANDLERS: dict[int, Handler] = {}
TRANSACTIONS_UNSUPPORTED = "transactions are not supported by tidelog"
#: The client address of the connection whose request is being handled (one task each).
CURRENT_PEER: contextvars.ContextVar[str] = contextvars.ContextVar("peer", default="")
ZERO_UUID = uuid.UUID(int=0)


def handles(api_key: int) -> Callable[[Handler], Handler]:
    def register(f: Handler) -> Handler:
        HANDLERS[api_key] = f
        return f

    return register


def error_code_of(e: BaseException) -> int:
    return e.error_code if isinstance(e, TidelogError) else ec.UNKNOWN_SERVER_ERROR


@handles(18)
async def api_versions(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.ApiVersionsResponse
    if version >= 3 and not (
        SOFTWARE_NAME.fullmatch(req.client_software_name or "")
        and SOFTWARE_NAME.fullmatch(req.client_software_version or "")
    ):
        return R(error_code=ec.INVALID_REQUEST)
    keys = [
        R.ApiVersion(api_key=k, min_version=lo, max_version=hi) for k, (lo, hi) in sorted(ADVERTISED.items())
    ]
    return R(error_code=ec.NONE, api_keys=keys)


def _broker_entry(broker: Broker, cls: Any) -> Any:
    """This broker as a Metadata or DescribeCluster broker entry (node_id / broker_id)."""
    id_field = "node_id" if "node_id" in cls.__slots__ else "broker_id"
    entry = cls(host=broker.advertised_host, port=broker.advertised_port, rack=None)
    setattr(entry, id_field, broker.config.node_id)
    return entry


@handles(3)
async def metadata(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.MetadataResponse
    tm = broker.topics
    # v10+: a topic given with a (non-zero) id is looked up by it, whatever its name says
    # (the Java client sends "" or null), and never auto-created.
    wanted: list[tuple[str | None, uuid.UUID | None]]
    if req.topics is None or (version == 0 and not req.topics):
        wanted = [(name, None) for name in sorted(tm.topics)]
    else:
        wanted = [
            (None, t.topic_id) if version >= 10 and t.topic_id != ZERO_UUID else (t.name, None)
            for t in req.topics
            if t.name is not None or (version >= 10 and t.topic_id != ZERO_UUID)
        ]
    auto = broker.config.auto_create_topics_enable and (version < 4 or req.allow_auto_topic_creation)
    topics = []
    for i, (name, topic_id) in enumerate(wanted):
        if i % 1000 == 999:  # a request naming many topics lets other connections in
            await trio.lowlevel.checkpoint()
        if name is None:
            topic = tm.by_id.get(topic_id)  # type: ignore[arg-type]
            if topic is None:
                topics.append(
                    R.MetadataResponseTopic(error_code=ec.UNKNOWN_TOPIC_ID, name=None, topic_id=topic_id)
                )
                continue
            name = topic.name
        topic = tm.topics.get(name)
        code: int = ec.UNKNOWN_TOPIC_OR_PARTITION
        if topic is None and auto:
            topic, code = await _auto_create(broker, name)
        if topic is None:
            topics.append(R.MetadataResponseTopic(error_code=code, name=name))
            continue
        parts = [_partition_metadata(broker, p) for p in topic.partitions]
        topics.append(
            R.MetadataResponseTopic(
                error_code=ec.NONE,
                name=name,
                topic_id=topic.topic_id,
                is_internal=topic.internal,
                partitions=parts,
            )
        )
    return R(
        brokers=[_broker_entry(broker, R.MetadataResponseBroker)],
        cluster_id=broker.cluster_id,
        controller_id=broker.config.node_id,
        topics=topics,
    )


def _partition_metadata(broker: Broker, p: Partition | OfflinePartition) -> Any:
    """One partition in a Metadata response; an offline one has no leader, as in Kafka."""
    me = broker.config.node_id
    offline = isinstance(p, OfflinePartition)
    return m.MetadataResponse.MetadataResponseTopic.MetadataResponsePartition(
        error_code=ec.KAFKA_STORAGE_ERROR if offline else ec.NONE,
        partition_index=p.index,
        leader_id=-1 if offline else me,
        leader_epoch=p.leader_epoch,
        replica_nodes=[me],
        isr_nodes=[] if offline else [me],
        offline_replicas=[me] if offline else [],
    )


async def _auto_create(broker: Broker, name: str) -> tuple[Any, int]:
    """Creates a topic on first use (auto.create.topics.enable): (topic, NONE) or (None, code)."""
    from tidelog.broker.topics import TopicError

    try:
        return await broker.topics.create_async(name, -1, -1, {}), ec.NONE
    except TopicError as e:
        log.info("auto-create of %r refused: %s", name, e)
        # Being created or deleted by another request: the client retries.
        return None, ec.LEADER_NOT_AVAILABLE if e.code == ec.TOPIC_ALREADY_EXISTS else e.code


@handles(0)
async def produce(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.ProduceResponse
    if version < 3:
        code: int = ec.UNSUPPORTED_VERSION
        return R(
            responses=[
                R.TopicProduceResponse(
                    name=t.name,
                    partition_responses=[
                        R.TopicProduceResponse.PartitionProduceResponse(
                            index=p.index, error_code=code, base_offset=-1
                        )
                        for p in t.partition_data
                    ],
                )
                for t in req.topic_data
            ]
        )
    if req.transactional_id is not None:
        log.info("refused transactional produce from %s", header.client_id)
    acks = req.acks
    out = []
    to_flush = []
    for t in req.topic_data:
        parts = []
        for p in t.partition_data:
            PR = R.TopicProduceResponse.PartitionProduceResponse
            res = PR(
                index=p.index, error_code=ec.NONE, base_offset=-1, log_append_time_ms=-1, log_start_offset=-1
            )
            parts.append(res)
            part = broker.topics.partition(t.name, p.index)
            code = broker.topics.missing_code(t.name, p.index)
            if (
                part is None
                and broker.config.auto_create_topics_enable
                and t.name not in broker.topics.topics
            ):
                topic, code = await _auto_create(broker, t.name)
                part = broker.topics.partition(t.name, p.index) if topic else None
            if part is None:
                res.error_code = code
                continue
            if acks not in (0, 1, -1):
                res.error_code = ec.INVALID_REQUIRED_ACKS
                continue
            if broker.topics.topics[t.name].internal:
                # As Kafka's ReplicaManager: only the broker itself writes internal topics.
                res.error_code = ec.INVALID_TOPIC_EXCEPTION
                res.error_message = f"cannot append to internal topic {t.name}" if version >= 8 else None
                continue
            if req.transactional_id is not None:
                res.error_code = ec.INVALID_REQUEST
                continue
            try:
                res.base_offset, res.log_append_time_ms, count = await part.append_records(_append, p.records)
                res.log_start_offset = part.log_start_offset
                if count and part.appended(count):
                    to_flush.append(part)
            except OutOfOrder as e:
                res.error_code = e.code
            except TidelogError as e:
                res.error_code = e.error_code
                res.error_message = str(e) if version >= 8 else None
                log.info("produce to %s-%d refused: %s", t.name, p.index, e)
        out.append(R.TopicProduceResponse(name=t.name, partition_responses=parts))
    for part in to_flush:
        await part.flush()
    if acks == 0:
        failed = [(t.name, p.index, p.error_code) for t in out for p in t.partition_responses if p.error_code]
        if failed:
            # No response exists to carry the error: Kafka closes the connection instead.
            raise RefusedWithoutResponse(f"acks=0 produce failed: {failed[:3]}")
        return None
    return R(responses=out, throttle_time_ms=0)


class RefusedWithoutResponse(Exception):
    """A request that failed but gets no response (acks=0): the connection is closed."""


class OutOfOrder(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _append(part: Any, records: Any) -> tuple[int, int, int]:
    """Appends a produce request's batches to a partition: (base offset, log append time,
    records appended). Idempotent batches are sequence-checked; a retried duplicate is
    acknowledged with its original offset and not appended again."""
    if records is None or len(records) == 0:
        raise CorruptRecordError("produce request without records", reason="no records")
    headers = [h for h, _ in iter_batches(as_view(records))]
    idempotent = [h for h in headers if h.producer_id >= 0]
    for h in idempotent:
        verdict, value = part.producer_state.check_sequence(h)
        if verdict == "duplicate":
            return value, -1, 0
        if verdict == "error":
            raise OutOfOrder(value)
    res = part.log.append_batches(records)
    offset = res.first_offset
    now = wall_clock_ms()
    for h in headers:
        if h.producer_id >= 0:
            part.producer_state.record_batch(h, offset, now)
        offset += h.last_offset_delta + 1
    return res.first_offset, res.log_append_time, res.record_count


@handles(1)
async def fetch(broker: Broker, req: Any, header: Any, version: int) -> Any:
    deadline = trio.current_time() + max(0, req.max_wait_ms) / 1000
    while True:
        resp, total, parts = _fetch_once(broker, req, version)
        if (
            total >= max(1, req.min_bytes)
            or req.max_wait_ms <= 0
            or trio.current_time() >= deadline
            or not parts
        ):
            return resp
        with trio.move_on_at(deadline):
            async with trio.open_nursery() as nursery:

                async def wake(ev: trio.Event) -> None:
                    await ev.wait()
                    nursery.cancel_scope.cancel()

                for p in parts:
                    nursery.start_soon(wake, p.wait_for_data())


def _fetch_once(broker: Broker, req: Any, version: int) -> tuple[Any, int, list[Any]]:
    R = m.FetchResponse
    budget = req.max_bytes if version >= 3 else 1 << 31
    total = 0
    responses = []
    waiting = []
    for t in req.topics:
        name = t.topic
        parts = []
        for p in t.partitions:
            PD = R.FetchableTopicResponse.PartitionData
            res = PD(
                partition_index=p.partition,
                error_code=ec.NONE,
                high_watermark=-1,
                last_stable_offset=-1,
                log_start_offset=-1,
                aborted_transactions=[] if version >= 4 else None,
                preferred_read_replica=-1,
                records=b"",
            )
            parts.append(res)
            part = broker.topics.partition(name, p.partition)
            if part is None:
                res.error_code = broker.topics.missing_code(name, p.partition)
                continue
            hw = part.high_watermark
            res.high_watermark = res.last_stable_offset = hw
            res.log_start_offset = part.log_start_offset
            offset = p.fetch_offset
            if offset < part.log_start_offset or offset > hw:
                res.error_code = ec.OFFSET_OUT_OF_RANGE
                continue
            waiting.append(part)
            if offset == hw:
                continue
            limit = min(p.partition_max_bytes, budget - total)
            if limit <= 0 and total > 0:
                continue
            try:
                if part.unverified(offset):
                    checked = _checked_read(part, offset, max(limit, 1))
                    res.records, total = checked, total + len(checked)
                    continue
                sl = part.log.slice(offset, max(limit, 1))
            except OffsetOutOfRangeError:
                res.error_code = ec.OFFSET_OUT_OF_RANGE
                continue
            except TidelogError as e:
                res.error_code = error_code_of(e)
                log.warning("fetch from %s-%d failed: %s", name, p.partition, e)
                continue
            if sl is not None:
                res.records = sl
                total += sl.length
        responses.append(R.FetchableTopicResponse(topic=name, partitions=parts))
    return R(throttle_time_ms=0, error_code=ec.NONE, session_id=0, responses=responses), total, waiting


def _checked_read(part: Partition, offset: int, max_bytes: int) -> bytes:
    """Whole batches from ``offset``, each CRC-checked (the valid ones before a damaged one;
    CorruptRecordError if the first is damaged), for data this process did not check."""
    raw = part.log.read_raw(offset, max_bytes)
    headers = [h for h, _ in iter_batches(raw)]
    if headers:
        part.verified(offset, headers[-1].next_offset)
    return raw


@handles(2)
async def list_offsets(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.ListOffsetsResponse
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            LP = R.ListOffsetsTopicResponse.ListOffsetsPartitionResponse
            res = LP(
                partition_index=p.partition_index,
                error_code=ec.NONE,
                timestamp=-1,
                offset=-1,
                leader_epoch=-1,
            )
            parts.append(res)
            part = broker.topics.partition(t.name, p.partition_index)
            if part is None:
                res.error_code = broker.topics.missing_code(t.name, p.partition_index)
                continue
            res.leader_epoch = part.leader_epoch
            ts = p.timestamp
            if ts in (OffsetSpec.EARLIEST, OffsetSpec.EARLIEST_LOCAL):  # all of the log is local
                res.offset = part.log_start_offset
            elif ts == OffsetSpec.LATEST_TIERED:  # nothing is tiered
                res.offset = -1
            elif ts == OffsetSpec.LATEST:
                res.offset = part.high_watermark
            elif ts == OffsetSpec.MAX_TIMESTAMP:
                best = _max_timestamp(part)
                if best is not None:
                    res.offset, res.timestamp = best
            else:
                found = part.log.offset_for_time(ts)
                if found is not None:
                    res.offset, res.timestamp = found
        topics.append(R.ListOffsetsTopicResponse(name=t.name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)


def _max_timestamp(part: Any) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record with the largest timestamp: the segments know
    their largest timestamps, and the time index finds the record."""
    ts = part.log.max_timestamp
    return None if ts < 0 else part.log.offset_for_time(ts)


@handles(19)
async def create_topics(broker: Broker, req: Any, header: Any, version: int) -> Any:
    from tidelog.broker.topics import TopicError

    R = m.CreateTopicsResponse
    results = []
    for t in req.topics:
        res = R.CreatableTopicResult(
            name=t.name, error_code=ec.NONE, num_partitions=-1, replication_factor=-1
        )
        results.append(res)
        configs = {c.name: c.value for c in t.configs}
        try:
            if t.assignments:
                raise TopicError(ec.INVALID_REQUEST, "manual replica assignment is not supported")
            topic = await broker.topics.create_async(
                t.name, t.num_partitions, t.replication_factor, configs, req.validate_only
            )
            res.topic_id = topic.topic_id
            res.num_partitions = len(topic.partitions)
            res.replication_factor = 1
            res.configs = [
                R.CreatableTopicResult.CreatableTopicConfigs(
                    name=k,
                    value=str(v),
                    read_only=False,
                    config_source=ConfigSource.DEFAULT_CONFIG,
                    is_sensitive=False,
                )
                for k, v in sorted(broker.topics.effective_configs(topic).items())
            ]
        except TopicError as e:
            res.error_code = e.code
            res.error_message = str(e)
    return R(throttle_time_ms=0, topics=results)


@handles(20)
async def delete_topics(broker: Broker, req: Any, header: Any, version: int) -> Any:
    from tidelog.broker.topics import TopicError

    R = m.DeleteTopicsResponse
    names = list(req.topic_names) if version < 6 else []
    results = []
    for t in req.topics if version >= 6 else []:
        if t.topic_id == ZERO_UUID and t.name is not None:
            names.append(t.name)
            continue
        topic = broker.topics.by_id.get(t.topic_id)
        if topic is not None:
            names.append(topic.name)
            continue
        results.append(
            R.DeletableTopicResult(
                name=None,
                topic_id=t.topic_id,
                error_code=ec.UNKNOWN_TOPIC_ID,
                error_message=f"no topic has id {t.topic_id}",
            )
        )
    for name in names:
        res = R.DeletableTopicResult(name=name, error_code=ec.NONE)
        try:
            topic = await broker.topics.delete(name)
            res.topic_id = topic.topic_id
        except TopicError as e:
            res.error_code = e.code
            res.error_message = str(e)
        results.append(res)
    return R(throttle_time_ms=0, responses=results)


@handles(37)
async def create_partitions(broker: Broker, req: Any, header: Any, version: int) -> Any:
    from tidelog.broker.topics import TopicError

    R = m.CreatePartitionsResponse
    results = []
    for t in req.topics:
        res = R.CreatePartitionsTopicResult(name=t.name, error_code=ec.NONE)
        try:
            await broker.topics.add_partitions(t.name, t.count, req.validate_only)
        except TopicError as e:
            res.error_code = e.code
            res.error_message = str(e)
        results.append(res)
    return R(throttle_time_ms=0, results=results)


@handles(22)
async def init_producer_id(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.InitProducerIdResponse
    if req.transactional_id is not None:
        log.info(
            "refused InitProducerId for transactional id %r: transactions are not supported",
            req.transactional_id,
        )
        return R(error_code=ec.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, producer_id=-1, producer_epoch=-1)
    if version >= 3 and req.producer_id >= 0:
        return R(
            error_code=ec.NONE, producer_id=req.producer_id, producer_epoch=(req.producer_epoch + 1) & 0x7FFF
        )
    return R(error_code=ec.NONE, producer_id=await broker.next_producer_id(), producer_epoch=0)


@handles(32)
async def describe_configs(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.DescribeConfigsResponse
    results = []
    for res in req.resources:
        out = R.DescribeConfigsResult(
            error_code=ec.NONE, resource_type=res.resource_type, resource_name=res.resource_name, configs=[]
        )
        results.append(out)
        if res.resource_type == ConfigResourceType.TOPIC:
            topic = broker.topics.topics.get(res.resource_name)
            if topic is None:
                out.error_code = ec.UNKNOWN_TOPIC_OR_PARTITION
                continue
            values = broker.topics.effective_configs(topic)
            topic_set, default = ConfigSource.DYNAMIC_TOPIC_CONFIG, ConfigSource.DEFAULT_CONFIG
            sources = {name: topic_set if name in topic.configs else default for name in values}
            read_only = False
        elif res.resource_type == ConfigResourceType.BROKER:  # every setting, configured or default
            described = broker.config.described(broker.port)
            values = {name: value for name, (value, _) in described.items()}
            static, default = ConfigSource.STATIC_BROKER_CONFIG, ConfigSource.DEFAULT_CONFIG
            sources = {name: static if configured else default for name, (_, configured) in described.items()}
            read_only = True  # no dynamic broker configs: they change with a restart
        else:
            out.error_code = ec.INVALID_REQUEST
            continue
        for name, value in sorted(values.items()):
            if res.configuration_keys is not None and name not in res.configuration_keys:
                continue
            out.configs.append(
                R.DescribeConfigsResult.DescribeConfigsResourceResult(
                    name=name,
                    value=None if value is None else str(value),
                    read_only=read_only,
                    config_source=sources[name],
                    is_sensitive=False,
                    synonyms=[],
                )
            )
    return R(throttle_time_ms=0, results=results)


@handles(44)
async def incremental_alter_configs(broker: Broker, req: Any, header: Any, version: int) -> Any:
    from tidelog.broker.topics import TopicError

    R = m.IncrementalAlterConfigsResponse
    responses = []
    for res in req.resources:
        out = R.AlterConfigsResourceResponse(
            error_code=ec.NONE, resource_type=res.resource_type, resource_name=res.resource_name
        )
        responses.append(out)
        if res.resource_type != ConfigResourceType.TOPIC:
            out.error_code = ec.INVALID_REQUEST
            out.error_message = "only topic configs can be altered"
            continue
        changes: dict[str, str | None] = {}
        for c in res.configs:
            if c.config_operation == AlterConfigOp.SET:
                changes[c.name] = c.value
            elif c.config_operation == AlterConfigOp.DELETE:
                changes[c.name] = None
            else:
                out.error_code = ec.INVALID_REQUEST
                out.error_message = "APPEND and SUBTRACT apply to list configs, which topics here do not have"
        if out.error_code:
            continue
        try:
            await broker.topics.alter_configs(res.resource_name, changes, req.validate_only)
        except TopicError as e:
            out.error_code = e.code
            out.error_message = str(e)
    return R(throttle_time_ms=0, responses=responses)


@handles(33)
async def alter_configs(broker: Broker, req: Any, header: Any, version: int) -> Any:
    """The non-incremental AlterConfigs: each resource's configs are replaced by those given
    (one not given returns to its default), as Kafka's legacy API does."""
    from tidelog.broker.topics import TopicError

    R = m.AlterConfigsResponse
    responses = []
    for res in req.resources:
        out = R.AlterConfigsResourceResponse(
            error_code=ec.NONE, resource_type=res.resource_type, resource_name=res.resource_name
        )
        responses.append(out)
        if res.resource_type != ConfigResourceType.TOPIC:
            out.error_code = ec.INVALID_REQUEST
            out.error_message = "only topic configs can be altered"
            continue
        topic = broker.topics.topics.get(res.resource_name)
        changes: dict[str, str | None] = dict.fromkeys(topic.configs) if topic else {}
        changes.update({c.name: c.value for c in res.configs})
        try:
            await broker.topics.alter_configs(res.resource_name, changes, req.validate_only)
        except TopicError as e:
            out.error_code = e.code
            out.error_message = str(e)
    return R(throttle_time_ms=0, responses=responses)


@handles(35)
async def describe_log_dirs(broker: Broker, req: Any, header: Any, version: int) -> Any:
    """The one log directory, its partitions' sizes and the disk's space; topics null means all."""
    R = m.DescribeLogDirsResponse
    D = R.DescribeLogDirsResult
    tm = broker.topics
    if req.topics is None:
        wanted = [(name, [p.index for p in t.partitions]) for name, t in sorted(tm.topics.items())]
    else:
        wanted = [(t.topic, list(t.partitions)) for t in req.topics]
    topics = []
    for name, indexes in wanted:
        parts = [
            D.DescribeLogDirsTopic.DescribeLogDirsPartition(
                partition_index=i, partition_size=part.log.size_bytes, offset_lag=0, is_future_key=False
            )
            for i in indexes
            if (part := tm.partition(name, i)) is not None
        ]
        if parts:
            topics.append(D.DescribeLogDirsTopic(name=name, partitions=parts))
    usage = await trio.to_thread.run_sync(shutil.disk_usage, broker.config.data_dir)
    result = D(
        error_code=ec.NONE,
        log_dir=os.path.abspath(broker.config.data_dir),
        topics=topics,
        total_bytes=usage.total,
        usable_bytes=usage.free,
    )
    return R(throttle_time_ms=0, error_code=ec.NONE, results=[result])


@handles(61)
async def describe_producers(broker: Broker, req: Any, header: Any, version: int) -> Any:
    """The idempotent producers each partition remembers (none is transactional here)."""
    R = m.DescribeProducersResponse
    T = R.TopicResponse
    topics = []
    for t in req.topics:
        parts = []
        for i in t.partition_indexes:
            res = T.PartitionResponse(partition_index=i, error_code=ec.NONE, active_producers=[])
            parts.append(res)
            part = broker.topics.partition(t.name, i)
            if part is None:
                res.error_code = broker.topics.missing_code(t.name, i)
                continue
            res.active_producers = [
                T.PartitionResponse.ProducerState(
                    producer_id=pid,
                    producer_epoch=entry.epoch,
                    last_sequence=entry.last_sequence,
                    last_timestamp=entry.last_timestamp,
                    coordinator_epoch=-1,
                    current_txn_start_offset=-1,
                )
                for pid, entry in sorted(part.producer_state.producers.items())
            ]
        topics.append(T(name=t.name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)


@handles(60)
async def describe_cluster(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.DescribeClusterResponse
    return R(
        throttle_time_ms=0,
        error_code=ec.NONE,
        cluster_id=broker.cluster_id,
        controller_id=broker.config.node_id,
        brokers=[_broker_entry(broker, R.DescribeClusterBroker)],
    )


@handles(21)
async def delete_records(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.DeleteRecordsResponse
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            res = R.DeleteRecordsTopicResult.DeleteRecordsPartitionResult(
                partition_index=p.partition_index, low_watermark=-1, error_code=ec.NONE
            )
            parts.append(res)
            part = broker.topics.partition(t.name, p.partition_index)
            if part is None:
                res.error_code = broker.topics.missing_code(t.name, p.partition_index)
                continue
            target = part.high_watermark if p.offset == -1 else p.offset  # -1: all there is
            try:
                await trio.to_thread.run_sync(part.log.delete_records_before, target)
                res.low_watermark = part.log_start_offset
            except TidelogError as e:
                res.error_code = error_code_of(e)
        topics.append(R.DeleteRecordsTopicResult(name=t.name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)


# ---- consumer groups ----

GROUP_APIS: dict[int, tuple[int, int]] = {
    8: (2, 8),  # OffsetCommit
    9: (1, 7),  # OffsetFetch
    10: (0, 4),  # FindCoordinator
    11: (0, 7),  # JoinGroup
    12: (0, 4),  # Heartbeat
    13: (0, 4),  # LeaveGroup
    14: (0, 5),  # SyncGroup
    15: (0, 5),  # DescribeGroups
    16: (0, 4),  # ListGroups
    42: (0, 2),  # DeleteGroups
    47: (0, 0),  # OffsetDelete
}
ADVERTISED.update(GROUP_APIS)


@handles(10)
async def find_coordinator(broker: Broker, req: Any, header: Any, version: int) -> Any:
    await broker.groups.store.ensure_topic()
    R = m.FindCoordinatorResponse
    keys = req.coordinator_keys if version >= 4 else [req.key]

    def answer(key: str) -> tuple[int, str | None]:
        if req.key_type != 0:
            # Not COORDINATOR_NOT_AVAILABLE: clients retry that until they time out. This
            # error is fatal in every client, so a transactional producer fails at once.
            log.info("refused a transaction coordinator for %r: transactions are not supported", key)
            return ec.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, TRANSACTIONS_UNSUPPORTED
        return ec.NONE, None

    if version < 4:
        code, message = answer(req.key)
        return R(
            error_code=code,
            error_message=message,
            node_id=broker.config.node_id,
            host=broker.advertised_host,
            port=broker.advertised_port,
        )
    coordinators = []
    for key in keys:
        code, message = answer(key)
        coordinators.append(
            R.Coordinator(
                key=key,
                node_id=broker.config.node_id,
                host=broker.advertised_host,
                port=broker.advertised_port,
                error_code=code,
                error_message=message,
            )
        )
    return R(coordinators=coordinators)


@handles(11)
async def join_group(broker: Broker, req: Any, header: Any, version: int) -> Any:
    await broker.groups.store.ensure_topic()
    return await broker.groups.join(req, version, header.client_id or "", CURRENT_PEER.get())


@handles(14)
async def sync_group(broker: Broker, req: Any, header: Any, version: int) -> Any:
    await broker.groups.store.ensure_topic()
    return await broker.groups.sync(req, version)


@handles(12)
async def heartbeat(broker: Broker, req: Any, header: Any, version: int) -> Any:
    return m.HeartbeatResponse(error_code=broker.groups.heartbeat(req))


@handles(13)
async def leave_group(broker: Broker, req: Any, header: Any, version: int) -> Any:
    await broker.groups.store.ensure_topic()
    R = m.LeaveGroupResponse
    if version < 3:
        (code,) = broker.groups.leave(req.group_id, [(req.member_id, None)])
        return R(error_code=code)
    members = [(mi.member_id, mi.group_instance_id) for mi in req.members]
    codes = broker.groups.leave(req.group_id, members)
    return R(
        error_code=ec.NONE,
        members=[
            R.MemberResponse(member_id=mid, group_instance_id=inst, error_code=code)
            for (mid, inst), code in zip(members, codes, strict=True)
        ],
    )


@handles(8)
async def offset_commit(broker: Broker, req: Any, header: Any, version: int) -> Any:
    await broker.groups.store.ensure_topic()
    from tidelog.broker.groups.store import OffsetEntry

    R = m.OffsetCommitResponse
    code = broker.groups.commit_check(req, version)
    now = wall_clock_ms()
    entries = []
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            pcode = code
            if not pcode and broker.topics.partition(t.name, p.partition_index) is None:
                pcode = ec.UNKNOWN_TOPIC_OR_PARTITION
            if not pcode:
                entries.append(
                    (
                        t.name,
                        p.partition_index,
                        OffsetEntry(p.committed_offset, p.committed_leader_epoch, p.committed_metadata, now),
                    )
                )
            parts.append(
                R.OffsetCommitResponseTopic.OffsetCommitResponsePartition(
                    partition_index=p.partition_index, error_code=pcode
                )
            )
        topics.append(R.OffsetCommitResponseTopic(name=t.name, partitions=parts))
    if entries:
        try:
            await broker.groups.commit(req.group_id, entries)
        except TidelogError as e:
            for rt in topics:
                for rp in rt.partitions:
                    rp.error_code = rp.error_code or e.error_code
    return R(throttle_time_ms=0, topics=topics)


@handles(9)
async def offset_fetch(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.OffsetFetchResponse
    offsets = broker.groups.fetch(req.group_id)
    if req.topics is None:
        wanted: dict[str, list[int]] = {}
        for topic, partition in sorted(offsets):
            wanted.setdefault(topic, []).append(partition)
    else:
        wanted = {t.name: list(t.partition_indexes) for t in req.topics}
    topics = []
    for name, partitions in wanted.items():
        parts = []
        for p in partitions:
            e = offsets.get((name, p))
            parts.append(
                R.OffsetFetchResponseTopic.OffsetFetchResponsePartition(
                    partition_index=p,
                    committed_offset=e.offset if e else -1,
                    committed_leader_epoch=e.leader_epoch if e else -1,
                    metadata=e.metadata if e else "",
                    error_code=ec.NONE,
                )
            )
        topics.append(R.OffsetFetchResponseTopic(name=name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics, error_code=ec.NONE)


@handles(15)
async def describe_groups(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.DescribeGroupsResponse
    out = []
    for group_id in req.groups:
        g = broker.groups.groups.get(group_id)
        if g is None:
            out.append(
                R.DescribedGroup(
                    error_code=ec.NONE,
                    group_id=group_id,
                    group_state="Dead",
                    protocol_type="",
                    protocol_data="",
                    members=[],
                )
            )
            continue
        members = [
            R.DescribedGroup.DescribedGroupMember(
                member_id=mb.member_id,
                group_instance_id=mb.group_instance_id,
                client_id=mb.client_id,
                client_host=mb.client_host,
                member_metadata=mb.metadata_for(g.protocol_name),
                member_assignment=mb.assignment,
            )
            for mb in g.members.values()
        ]
        out.append(
            R.DescribedGroup(
                error_code=ec.NONE,
                group_id=group_id,
                group_state=g.state,
                protocol_type=g.protocol_type or "",
                protocol_data=g.protocol_name or "",
                members=members,
            )
        )
    return R(throttle_time_ms=0, groups=out)


@handles(16)
async def list_groups(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.ListGroupsResponse
    states = set(req.states_filter) if version >= 4 and req.states_filter else None
    return R(
        error_code=ec.NONE,
        groups=[
            R.ListedGroup(group_id=g.group_id, protocol_type=g.protocol_type or "", group_state=g.state)
            for g in broker.groups.groups.values()
            if states is None or g.state in states
        ],
    )


@handles(42)
async def delete_groups(broker: Broker, req: Any, header: Any, version: int) -> Any:
    await broker.groups.store.ensure_topic()
    R = m.DeleteGroupsResponse
    return R(
        throttle_time_ms=0,
        results=[
            R.DeletableGroupResult(group_id=g, error_code=broker.groups.delete_group(g))
            for g in req.groups_names
        ],
    )


@handles(47)
async def offset_delete(broker: Broker, req: Any, header: Any, version: int) -> Any:
    await broker.groups.store.ensure_topic()
    R = m.OffsetDeleteResponse
    g = broker.groups.groups.get(req.group_id)
    if g is None:
        return R(error_code=ec.GROUP_ID_NOT_FOUND, topics=[])
    subscribed = broker.groups.subscribed_topics(g)
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            code = ec.GROUP_SUBSCRIBED_TO_TOPIC if t.name in subscribed else ec.NONE
            if not code and (t.name, p.partition_index) in g.offsets:
                del g.offsets[(t.name, p.partition_index)]
                broker.groups.store.append_nowait(
                    g.group_id,
                    [(broker.groups.store.offset_key(g.group_id, t.name, p.partition_index), None)],
                )
            parts.append(
                R.OffsetDeleteResponseTopic.OffsetDeleteResponsePartition(
                    partition_index=p.partition_index, error_code=code
                )
            )
        topics.append(R.OffsetDeleteResponseTopic(name=t.name, partitions=parts))
    return R(error_code=ec.NONE, throttle_time_ms=0, topics=topics)
