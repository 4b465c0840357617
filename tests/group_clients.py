"""Group members of the real clients, each polling on its own thread, exposing the
partitions currently assigned to them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

GROUP_CLIENTS = ["confluent-range", "confluent-cooperative-sticky", "kafka-python", "aiokafka"]


#: Notified whenever a member's (or a watched process's) state changes.
CHANGED = threading.Condition()


def notify() -> None:
    with CHANGED:
        CHANGED.notify_all()


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Waits until `cond` holds, re-checking on every state change; returns the seconds it took."""
    start = time.monotonic()
    with CHANGED:
        if not CHANGED.wait_for(cond, timeout):
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return time.monotonic() - start


class Member:
    def __init__(
        self,
        client: str,
        bootstrap: str,
        group: str,
        topic: str,
        instance_id: str | None = None,
        session_timeout_ms: int = 10000,
    ) -> None:
        self.client, self.bootstrap, self.group, self.topic = client, bootstrap, group, topic
        self.instance_id, self.session_timeout_ms = instance_id, session_timeout_ms
        self._assigned: frozenset[int] = frozenset()
        self._consumed: list[tuple[int, int, bytes]] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def assignment(self) -> frozenset[int]:
        if self._error:
            raise self._error
        return self._assigned

    @property
    def consumed(self) -> list[tuple[int, int, bytes]]:
        """(partition, offset, value) of every message consumed so far."""
        if self._error:
            raise self._error
        return self._consumed

    def close(self) -> None:
        """A clean close: the member leaves the group."""
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            if self.client.startswith("confluent"):
                self._confluent()
            elif self.client == "kafka-python":
                self._kafka_python()
            else:
                asyncio.run(self._aiokafka())
        except BaseException as e:
            self._error = e
            notify()

    def _confluent(self) -> None:
        from confluent_kafka import Consumer

        strategy = self.client.removeprefix("confluent-")
        conf = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": 300,
            "partition.assignment.strategy": strategy,
            "topic.metadata.refresh.interval.ms": 1000,
        }
        if self.instance_id:
            conf["group.instance.id"] = self.instance_id
        c = Consumer(conf)
        c.subscribe([self.topic])
        try:
            while not self._stop.is_set():
                msg = c.poll(0.05)
                if msg is not None and not msg.error():
                    self._consumed.append((msg.partition(), msg.offset(), msg.value()))
                self._assigned = frozenset(tp.partition for tp in c.assignment())
                notify()
        finally:
            c.close()

    def _kafka_python(self) -> None:
        from kafka import KafkaConsumer

        c = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=300,
            group_instance_id=self.instance_id,
        )
        # Learn the topic's partitions before joining: kafka-python 3.0.12, leading a group
        # before it has them, assigns nothing, rejoins, and (rarely) stalls before SyncGroup.
        c.partitions_for_topic(self.topic)
        c.subscribe([self.topic])
        try:
            while not self._stop.is_set():
                for tp, msgs in c.poll(50).items():
                    self._consumed += [(tp.partition, m.offset, m.value) for m in msgs]
                self._assigned = frozenset(tp.partition for tp in c.assignment())
                notify()
        finally:
            c.close()

    async def _aiokafka(self) -> None:
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=300,
        )
        await c.start()
        try:
            while not self._stop.is_set():
                batches = await c.getmany(timeout_ms=50)
                for tp, msgs in batches.items():
                    self._consumed += [(tp.partition, m.offset, m.value) for m in msgs]
                self._assigned = frozenset(tp.partition for tp in c.assignment())
                notify()
        finally:
            await c.stop()
