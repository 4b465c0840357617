"""What clients may not do to the broker: write its internal topics, or hang on transactions
it does not offer; and what the broker survives: records in ``__consumer_offsets`` that it
cannot decode. Real clients and a real broker over 127.0.0.1."""

from __future__ import annotations

import logging

import pytest

import tidelog
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import start_broker
from tidelog.records import build_batch

from .kafka_clients import create_topic
from .wire import Wire

OFFSETS = "__consumer_offsets"


def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return int(c.committed([TopicPartition(topic, 0)], timeout=30)[0].offset)
    finally:
        c.close()


def test_clients_cannot_write_internal_topics(tmp_path):
    from confluent_kafka import KafkaError, Producer

    broker = start_broker(tmp_path / "b", **{"offsets.topic.num.partitions": "1"})
    try:
        create_topic("confluent-kafka", broker.bootstrap, "t", 1)
        commit(broker.bootstrap, "g", "t", 5)  # creates __consumer_offsets
        errors = []
        p = Producer({"bootstrap.servers": broker.bootstrap, "retries": 0})
        p.produce(
            OFFSETS, key=b"\x00\x07junk", value=b"junk", on_delivery=lambda err, msg: errors.append(err)
        )
        p.flush(30)
        assert [e.code() for e in errors] == [KafkaError.TOPIC_EXCEPTION]
        w = Wire(broker.bootstrap)
        P = m.ProduceRequest
        req = P(
            transactional_id=None,
            acks=1,
            timeout_ms=5000,
            topic_data=[
                P.TopicProduceData(
                    name=OFFSETS,
                    partition_data=[
                        P.TopicProduceData.PartitionProduceData(index=0, records=build_batch([(b"k", b"v")]))
                    ],
                )
            ],
        )
        part = w.request(req, 9).responses[0].partition_responses[0]
        w.close()
        assert part.error_code == ec.INVALID_TOPIC_EXCEPTION
        assert "internal topic" in part.error_message
        assert committed(broker.bootstrap, "g", "t") == 5
    finally:
        broker.stop()


@pytest.mark.parametrize("junk", [b"\x00\x02\x00\x09short", b"\x00\x01\x00", b"\x00"])
def test_undecodable_offsets_records_are_skipped_at_start(tmp_path, caplog, junk, engine):
    settings = {"offsets.topic.num.partitions": "1"}
    broker = start_broker(tmp_path / "b", engine=engine, **settings)
    try:
        create_topic("confluent-kafka", broker.bootstrap, "t", 1)
        commit(broker.bootstrap, "before", "t", 3)
    finally:
        broker.stop()
    # Damage that a rogue writer (or a bug) could have left, with a valid batch CRC.
    with tidelog.Log.open(tmp_path / "b" / f"{OFFSETS}-0", engine=engine) as log:
        log.append([(junk, b"\x00\x03not-an-offset")])
    caplog.set_level(logging.WARNING, logger="tidelog.broker.groups")
    broker = start_broker(tmp_path / "b", engine=engine, **settings)
    try:
        assert committed(broker.bootstrap, "before", "t") == 3
        commit(broker.bootstrap, "after", "t", 8)
        assert committed(broker.bootstrap, "after", "t") == 8
    finally:
        broker.stop()
    assert any("undecodable" in r.getMessage() for r in caplog.records)


def test_transactional_producers_fail_at_once_with_a_clear_error(tidelog_broker, caplog):
    from confluent_kafka import KafkaError, KafkaException, Producer

    caplog.set_level(logging.INFO, logger="tidelog.broker")
    p = Producer({"bootstrap.servers": tidelog_broker.bootstrap, "transactional.id": "tx-1"})
    with pytest.raises(KafkaException) as e:
        p.init_transactions(60)
    err = e.value.args[0]
    # Not a time-out after retrying a "coordinator not available" for a minute.
    assert err.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, err
    assert any("transactions are not supported" in r.getMessage() for r in caplog.records)


def test_kafka_python_transactions_fail_at_once(tidelog_broker):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    p = KafkaProducer(bootstrap_servers=tidelog_broker.bootstrap, transactional_id="tx-2")
    try:
        with pytest.raises(KafkaError) as e:
            p.init_transactions()
        assert "TransactionalIdAuthorizationFailed" in type(e.value).__name__ or "53" in str(e.value), e.value
    finally:
        p.close(timeout=5)


def test_concurrent_init_producer_ids_get_distinct_ids_across_restarts(tmp_path):
    """Many producers starting at once, when the reserved block of ids is used up: one
    reservation is written at a time (two used to race on the same temporary file), every
    producer gets its own id, and ids are never reused after a restart."""
    import threading

    def init_ids(bootstrap: str, n: int) -> list[tuple[int, int]]:
        wires = [Wire(bootstrap) for _ in range(n)]
        out: list[tuple[int, int]] = []
        go = threading.Barrier(n)

        def one(w: Wire) -> None:
            go.wait()
            r = w.request(m.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000), 4)
            out.append((r.error_code, r.producer_id))

        threads = [threading.Thread(target=one, args=(w,)) for w in wires]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for w in wires:
            w.close()
        return out

    broker = start_broker(tmp_path / "b")
    try:
        first = init_ids(broker.bootstrap, 24)
    finally:
        broker.stop()
    broker = start_broker(tmp_path / "b")
    try:
        second = init_ids(broker.bootstrap, 24)
    finally:
        broker.stop()
    assert {code for code, _ in first + second} == {ec.NONE}
    ids = [pid for _, pid in first + second]
    assert len(set(ids)) == 48
    assert min(pid for _, pid in second) > max(pid for _, pid in first)


def test_a_huge_request_does_not_stop_other_clients(tidelog_broker):
    """A Metadata request naming 60,000 topics is answered in full, and while the broker
    decodes, handles and encodes it, another connection keeps getting answers (before, the
    event loop did all of it and every other client waited)."""
    import threading

    from tidelog.protocol.framing import encode_request

    M = m.MetadataRequest
    names = [f"absent-{i:08d}" for i in range(60_000)]
    big = M(
        topics=[M.MetadataRequestTopic(name=n) for n in names],
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    small = M(topics=[], allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    header = m.RequestHeader(request_api_key=3, request_api_version=12, correlation_id=1, client_id="big")
    frame = encode_request(header, big, 12)
    hog, healthy = Wire(tidelog_broker.bootstrap, timeout=120), Wire(tidelog_broker.bootstrap)
    in_flight = threading.Event()
    done = threading.Event()
    answered_meanwhile = [0]

    def keep_asking() -> None:
        while not done.is_set():
            healthy.request(small, 12)
            if in_flight.is_set() and not done.is_set():
                answered_meanwhile[0] += 1

    t = threading.Thread(target=keep_asking)
    t.start()
    try:
        in_flight.set()
        hog.send_raw(frame)
        response = hog.read_frame()
        done.set()
    finally:
        done.set()
        t.join(60)
    assert response is not None
    body = m.MetadataResponse.decode(response[5:], 12)
    assert [t.name for t in body.topics] == names
    assert {t.error_code for t in body.topics} == {ec.UNKNOWN_TOPIC_OR_PARTITION}
    assert answered_meanwhile[0] >= 20, answered_meanwhile[0]
    hog.close()
    healthy.close()


def test_every_partition_naming_request_goes_through_the_authorizer(tidelog_broker):
    """The authorizer seam (allow-all until ACLs exist): with an authorizer that refuses a
    topic, produce, fetch and list offsets naming it get TOPIC_AUTHORIZATION_FAILED (delete
    records, describe producers and offset commits resolve partitions the same way), while
    other topics are served."""
    from tidelog.protocol.constants import AclOperation

    from .wire import fetch_request, produce_one

    asked: list[tuple[str, AclOperation]] = []

    class DenySecret:
        def authorize(self, principal, host, operation, resource_type, name):  # type: ignore[no-untyped-def]
            asked.append((name, operation))
            return name != "secret"

    w = Wire(tidelog_broker.bootstrap)
    try:
        assert produce_one(w, "secret", b"x")[0] == ec.NONE
        assert produce_one(w, "open", b"x")[0] == ec.NONE
        tidelog_broker.broker.authorizer = DenySecret()
        assert produce_one(w, "secret", b"y")[0] == ec.TOPIC_AUTHORIZATION_FAILED
        assert produce_one(w, "open", b"y") == (ec.NONE, 1)
        fetched = w.request(fetch_request("secret", 0, 0, 0), 11).responses[0].partitions[0]
        assert (fetched.error_code, fetched.records) == (ec.TOPIC_AUTHORIZATION_FAILED, b"")
        L = m.ListOffsetsRequest
        req = L(
            replica_id=-1,
            topics=[
                L.ListOffsetsTopic(
                    name="secret",
                    partitions=[L.ListOffsetsTopic.ListOffsetsPartition(partition_index=0, timestamp=-1)],
                )
            ],
        )
        assert w.request(req, 7).topics[0].partitions[0].error_code == ec.TOPIC_AUTHORIZATION_FAILED
        assert ("secret", AclOperation.WRITE) in asked and ("secret", AclOperation.READ) in asked
    finally:
        w.close()
