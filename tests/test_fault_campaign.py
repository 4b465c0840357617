"""A short run of the fault campaign (benches/fault_campaign.py) on each engine: idempotent
acks=all producers, the broker SIGKILLed and restarted while segments roll and its
``/metrics`` is scraped; every acknowledged record must be there exactly once."""

from __future__ import annotations

import sys

import pytest
from benches.fault_campaign import run


@pytest.mark.campaign
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX-only")
def test_sigkills_under_idempotent_producers_lose_and_duplicate_nothing(engine):
    outcome = run(engine, kills=4, producers=2, seed=8)
    assert outcome.acknowledged > 1000
    assert outcome.segments > 3, "segments did not roll"
    assert outcome.scrapes > 10, "the metrics were not served through the campaign"
    assert (outcome.lost, outcome.duplicated, outcome.delivery_errors) == (0, 0, 0), outcome
    assert outcome.stored == outcome.acknowledged
