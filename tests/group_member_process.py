"""A consumer-group member process for the crash test: consumes with librdkafka, commits
synchronously every few messages, and reports on stdout:

    M <partition> <offset>        a message was consumed
    C <partition> <next offset>   an offset was committed (as the commit reported it)
    A <partitions...>             its assignment changed

Usage: python group_member_process.py BOOTSTRAP GROUP TOPIC
"""

from __future__ import annotations

import sys

from confluent_kafka import Consumer, KafkaException


def main() -> None:
    bootstrap, group, topic = sys.argv[1:4]
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    c.subscribe([topic])
    out = sys.stdout
    assigned: list[int] = []
    uncommitted = []
    while True:
        msg = c.poll(0.1)
        now = sorted(tp.partition for tp in c.assignment())
        if now != assigned:
            assigned = now
            out.write("A " + " ".join(map(str, now)) + "\n")
            out.flush()
        if msg is None or msg.error():
            continue
        out.write(f"M {msg.partition()} {msg.offset()}\n")
        uncommitted.append(msg)
        if len(uncommitted) >= 10:
            try:
                done = c.commit(asynchronous=False)
            except KafkaException:
                pass  # e.g. a rebalance: these are read again by the next owner (at least once)
            else:
                # What was committed: every assigned partition's position, as the broker took it.
                for tp in done or []:
                    if tp.offset >= 0:
                        out.write(f"C {tp.partition} {tp.offset}\n")
            uncommitted.clear()
        out.flush()


if __name__ == "__main__":
    main()
