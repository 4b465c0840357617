"""A partition whose log cannot be opened at start (here: its index file replaced by a
directory, as a failed disk or an operator's mistake might leave it) goes offline alone: the
broker starts, says so once, serves every other partition, answers KAFKA_STORAGE_ERROR for
that one (no leader in Metadata), and serves it again once the cause is removed. Both
engines, a real broker process, real clients."""

from __future__ import annotations

from pathlib import Path

from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process
from tidelog.records import build_batch

from .conftest import stop_gracefully
from .kafka_clients import consume, create_topic, produce
from .wire import Wire, fetch_request, produce_one, produce_raw


def test_one_unopenable_partition_goes_offline_and_the_rest_is_served(tmp_path: Path, engine: str) -> None:
    data = tmp_path / "b"
    proc, port = serve_process(data, "--engine", engine)
    bootstrap = f"127.0.0.1:{port}"
    try:
        create_topic("confluent-kafka", bootstrap, "t", 2)
        produce(
            "confluent-kafka", bootstrap, "t", [(b"k%d" % i, b"v%d" % i) for i in range(40)], "all", "none"
        )
    finally:
        assert stop_gracefully(proc) == 0
    index = next((data / "t-1").glob("*.index"))
    index.unlink()
    index.mkdir()

    log_file = tmp_path / "broker.log"
    with open(log_file, "w") as err:
        proc, port = serve_process(data, "--engine", engine, stderr=err.fileno())
    bootstrap = f"127.0.0.1:{port}"
    try:
        w = Wire(bootstrap)
        M = m.MetadataRequest
        meta = w.request(M(topics=[M.MetadataRequestTopic(name="t")], allow_auto_topic_creation=False), 9)
        by_index = {p.partition_index: p for p in meta.topics[0].partitions}
        assert (by_index[0].error_code, by_index[0].leader_id) == (ec.NONE, 0)
        assert (by_index[1].error_code, by_index[1].leader_id) == (ec.KAFKA_STORAGE_ERROR, -1)
        fetched = w.request(fetch_request("t", 1, 0, 0), 11).responses[0].partitions[0]
        assert fetched.error_code == ec.KAFKA_STORAGE_ERROR
        assert produce_raw(w, "t", build_batch([(None, b"x")]), partition=1)[0] == ec.KAFKA_STORAGE_ERROR
        on_zero_end = w.request(fetch_request("t", 0, 0, 0), 11).responses[0].partitions[0].high_watermark
        w.close()
        on_zero = [
            (o, v) for p, o, _, v in consume("confluent-kafka", bootstrap, "t", 1, expected=on_zero_end)
        ]
        assert len(on_zero) > 0
        assert produce_one(Wire(bootstrap), "other", b"fine")[0] == ec.NONE
    finally:
        assert stop_gracefully(proc) == 0
    text = log_file.read_text()
    assert "partition t-1 is offline" in text
    assert "1 offline" in text

    index.rmdir()
    proc, port = serve_process(data, "--engine", engine)
    try:
        got = consume("confluent-kafka", f"127.0.0.1:{port}", "t", 2, expected=40)
        assert sorted(v for *_, v in got) == sorted(b"v%d" % i for i in range(40))
    finally:
        assert stop_gracefully(proc) == 0
