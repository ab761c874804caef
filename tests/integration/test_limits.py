"""Daily quotas hold under concurrency on every backend (one conditional upsert per take)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import RateLimitExceeded
from core.limits.quotas import OUTPUTS, TOKENS, Quotas
from tests.conftest import BACKENDS


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_fifty_concurrent_takers_get_exactly_the_limit(real_db):
    quotas = Quotas(real_db)
    granted: list[int] = []
    refused: list[RateLimitExceeded] = []
    barrier = threading.Barrier(50)

    def take() -> None:
        barrier.wait()
        try:
            granted.append(quotas.take("t1", "agt_1", OUTPUTS, 1, 10))
        except RateLimitExceeded as exc:
            refused.append(exc)

    threads = [threading.Thread(target=take) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(granted) == 10
    assert sorted(granted) == list(range(1, 11))
    assert len(refused) == 40
    assert quotas.used("t1", "agt_1", OUTPUTS) == 10


def test_a_refusal_says_when_the_limit_resets(db):
    now = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)
    quotas = Quotas(db, clock=lambda: now)
    quotas.take("t1", "agt_1", OUTPUTS, 2, 2)
    with pytest.raises(RateLimitExceeded) as info:
        quotas.take("t1", "agt_1", OUTPUTS, 1, 2)
    assert info.value.resets_at == datetime(2026, 11, 25, tzinfo=UTC)
    assert "daily limit of 2 outputs" in info.value.detail


def test_counters_are_per_utc_day_agent_and_tenant(db):
    day = datetime(2026, 11, 24, 23, 59, tzinfo=UTC)
    clock = {"now": day}
    quotas = Quotas(db, clock=lambda: clock["now"])
    quotas.take("t1", "agt_1", OUTPUTS, 1, 1)
    quotas.take("t1", "agt_2", OUTPUTS, 1, 1)
    quotas.take("t2", "agt_1", OUTPUTS, 1, 1)
    with pytest.raises(RateLimitExceeded):
        quotas.take("t1", "agt_1", OUTPUTS, 1, 1)
    clock["now"] = day + timedelta(minutes=2)
    assert quotas.take("t1", "agt_1", OUTPUTS, 1, 1) == 1


def test_release_gives_back_a_take(db):
    quotas = Quotas(db)
    quotas.take("t1", "agt_1", OUTPUTS, 1, 1)
    quotas.release("t1", "agt_1", OUTPUTS, 1)
    assert quotas.take("t1", "agt_1", OUTPUTS, 1, 1) == 1


def test_token_headroom_is_refused_once_the_budget_is_spent(db):
    quotas = Quotas(db)
    quotas.add("t1", "agt_1", TOKENS, 999)
    quotas.require_headroom("t1", "agt_1", TOKENS, 1000)
    quotas.add("t1", "agt_1", TOKENS, 1)
    with pytest.raises(RateLimitExceeded):
        quotas.require_headroom("t1", "agt_1", TOKENS, 1000)
