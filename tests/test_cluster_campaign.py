"""A short fault campaign on a three-broker cluster (benches/cluster_campaign.py; issue 11):
at least 20 faults at random moments (SIGKILL of a leader or of the controller, a leader
paused past its session, a cut link between a leader and a follower, every broker killed at
once, etcd restarted) under an idempotent acks=all producer and a committing consumer group,
on a cluster mixing both engines. Nothing acknowledged is lost or duplicated, every replica
ends equal to its leader byte for byte, the group's commits never go backwards and a new
member resumes at them, and the cluster recovers from every fault (within the campaign's
bound, 90 s)."""

from __future__ import annotations

import pytest
from benches.cluster_campaign import FAULTS, run

from .cluster import needs_etcd


@pytest.mark.campaign
@pytest.mark.timeout(600)
@needs_etcd
def test_twenty_faults_lose_nothing_acknowledged(tmp_path):
    outcome = run(tmp_path, faults=20, seed=11)
    summary = outcome.summary()
    assert len(outcome.recovery_s) == 20
    assert set(outcome.faults) == set(FAULTS), outcome.faults
    assert outcome.acknowledged > 1000, summary
    assert outcome.commits > 0, summary
    assert (outcome.lost, outcome.duplicated, outcome.out_of_order) == (0, 0, 0), summary
    assert outcome.replicas_differ == 0, summary
    assert outcome.scrapes > 20, "the brokers' metrics were not served through the faults"
    group = (outcome.commits_backwards, outcome.committed_behind, outcome.resumed_elsewhere)
    assert group == (0, 0, 0), summary
    assert (outcome.unflushed, outcome.delivery_errors) == (0, 0), summary
