"""The per-connection token bucket is shared through the database and never over-grants."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection as db_connection

from platforms.models import RateLimitBucket
from platforms.ratelimit import ConnectionThrottle, RateLimit, bucket_take, rate_limit_backoff, rate_limit_for
from tests.factories import ConnectionFactory


class FakeClock:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def small_limit(settings):
    settings.PLATFORM_RATE_LIMITS = {"sandbox": {"capacity": 3, "refill_per_second": 2}}


def throttle_for(connection, clock) -> ConnectionThrottle:
    return ConnectionThrottle(connection, clock=clock, sleep=clock.sleep)


def test_requests_within_capacity_go_at_once_and_the_next_one_waits_for_a_refill(connection_, clock, small_limit):
    throttle = throttle_for(connection_, clock)
    for _ in range(3):
        throttle(1)
    assert clock.slept == []
    throttle(1)
    assert clock.slept == [pytest.approx(0.5)]  # one token at 2 tokens a second


def test_workers_share_one_bucket_per_connection(connection_, clock, small_limit):
    first, second = throttle_for(connection_, clock), throttle_for(connection_, clock)
    first(1)
    first(1)
    first(1)
    second(1)
    assert second.waited == pytest.approx(0.5)
    assert RateLimitBucket.objects.filter(connection=connection_).count() == 1


def test_connections_have_independent_buckets(tenant, clock, small_limit):
    one, two = ConnectionFactory(tenant=tenant), ConnectionFactory(tenant=tenant)
    for _ in range(3):
        throttle_for(one, clock)(1)
    throttle_for(two, clock)(1)
    assert clock.slept == []


def test_an_idle_bucket_refills_only_up_to_capacity(connection_, clock, small_limit):
    throttle = throttle_for(connection_, clock)
    throttle(1)
    clock.now += timedelta(hours=1)
    for _ in range(3):
        throttle(1)
    assert clock.slept == []
    throttle(1)
    assert clock.slept == [pytest.approx(0.5)]


def test_a_clock_running_behind_adds_no_tokens(connection_, clock):
    limit = RateLimit(capacity=2, refill_per_second=1)
    assert bucket_take(connection_id=connection_.pk, operations=1, limit=limit, now=clock()) == 0
    assert bucket_take(connection_id=connection_.pk, operations=1, limit=limit, now=clock()) == 0
    earlier = clock() - timedelta(seconds=30)
    assert bucket_take(connection_id=connection_.pk, operations=1, limit=limit, now=earlier) == pytest.approx(1.0)


def test_per_operation_limits_charge_each_operation_and_never_more_than_a_full_bucket(connection_, clock):
    limit = RateLimit(capacity=100, refill_per_second=10, per_operation=True)
    assert bucket_take(connection_id=connection_.pk, operations=50, limit=limit, now=clock()) == 0
    assert bucket_take(connection_id=connection_.pk, operations=50, limit=limit, now=clock()) == 0
    assert bucket_take(connection_id=connection_.pk, operations=50, limit=limit, now=clock()) == pytest.approx(5.0)
    assert limit.cost(5000) == 100  # a huge batch waits for a full bucket instead of forever


def test_a_platform_retry_after_holds_back_every_worker_for_at_least_that_long(connection_, clock, small_limit):
    throttle = throttle_for(connection_, clock)
    throttle(1)
    rate_limit_backoff(connection=connection_, seconds=30, now=clock())
    throttle_for(connection_, clock)(1)
    assert sum(clock.slept) >= 30


def test_defaults_exist_per_platform_and_settings_override_them(settings):
    assert rate_limit_for("meta").per_operation is True
    assert rate_limit_for("google_ads").per_operation is False
    settings.PLATFORM_RATE_LIMITS = {"google_ads": {"capacity": 50}}
    assert rate_limit_for("google_ads").capacity == 50


@pytest.mark.parametrize("override", [{"capacity": 0}, {"refill_per_second": -1}, {"burst": 3}])
def test_a_nonsense_setting_fails_loudly(settings, override):
    settings.PLATFORM_RATE_LIMITS = {"sandbox": override}
    with pytest.raises(ImproperlyConfigured, match="PLATFORM_RATE_LIMITS"):
        rate_limit_for("sandbox")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_never_take_more_tokens_than_the_bucket_holds():
    connection = ConnectionFactory()
    limit = RateLimit(capacity=10, refill_per_second=0.001)
    now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    bucket_take(connection_id=connection.pk, operations=0, limit=limit, now=now)  # create the row: 9 tokens left
    granted: list[bool] = []
    barrier = threading.Barrier(20)

    def worker() -> None:
        try:
            barrier.wait()
            granted.append(bucket_take(connection_id=connection.pk, operations=1, limit=limit, now=now) == 0)
        finally:
            db_connection.close()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 9


def test_a_busy_worker_reserves_a_few_requests_per_database_round_trip(connection_, clock, settings):
    settings.PLATFORM_RATE_LIMITS = {"sandbox": {"capacity": 1000, "refill_per_second": 100}}
    throttle = throttle_for(connection_, clock)
    from django.test.utils import CaptureQueriesContext

    throttle(1)  # creates the bucket row and reserves ten requests' worth (nine left)
    with CaptureQueriesContext(db_connection) as queries:
        for _ in range(20):
            throttle(1)
    bucket_updates = [q for q in queries if 'UPDATE "platforms_ratelimitbucket"' in q["sql"]]
    assert len(bucket_updates) == 2  # ten requests' worth of tokens each time
    assert RateLimitBucket.objects.get(connection=connection_).tokens == pytest.approx(970)


def test_a_take_from_an_existing_bucket_is_one_statement_on_postgresql(connection_, clock):
    """Refill, take and store in one round trip (a locking CTE), with the same arithmetic."""
    from django.test.utils import CaptureQueriesContext

    if db_connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite takes tokens with the ORM (a SELECT and an UPDATE)")
    limit = RateLimit(capacity=3, refill_per_second=2)
    for _ in range(3):  # the first creates the row; three empty a bucket of three
        assert bucket_take(connection_id=connection_.pk, operations=1, limit=limit, now=clock.now) == 0.0
    with CaptureQueriesContext(db_connection) as queries:
        wait = bucket_take(connection_id=connection_.pk, operations=1, limit=limit, now=clock.now)
        later = bucket_take(
            connection_id=connection_.pk, operations=1, limit=limit, now=clock.now + timedelta(seconds=0.5)
        )
    assert wait == pytest.approx(0.5) and later == 0.0  # one token refills in half a second
    assert len(queries) == 2
    assert RateLimitBucket.objects.get(connection=connection_).tokens == pytest.approx(0)


def test_reserved_tokens_expire_so_they_cannot_be_saved_for_a_burst(connection_, clock, settings):
    settings.PLATFORM_RATE_LIMITS = {"sandbox": {"capacity": 1000, "refill_per_second": 100}}
    throttle = throttle_for(connection_, clock)
    throttle(1)  # reserves 10, spends 1
    clock.now += timedelta(seconds=2)
    assert not throttle._spend_reserved(1)


class BoundedClock(FakeClock):
    """A FakeClock that fails the test instead of letting a throttle loop for ever."""

    def sleep(self, seconds: float) -> None:
        assert len(self.slept) < 10_000, "the throttle kept asking to sleep without the clock moving"
        super().sleep(seconds)


def test_a_clock_counting_whole_microseconds_is_never_asked_to_wait_less_than_it_can_move(tenant):
    """Meta's refill is a float of points per second: a bucket could be short by 2e-7 points,
    the throttle asked for a 0.2 microsecond sleep, a datetime clock cannot move by that, and
    the worker looped for ever (found by bench/execute_actions.py with the default limits)."""
    meta = ConnectionFactory(tenant=tenant, platform="meta")
    clock = BoundedClock()
    throttle = throttle_for(meta, clock)
    for _ in range(300):  # 50-item batch writes, far beyond one bucket
        throttle(150)
    assert clock.slept and all(seconds >= 0.001 for seconds in clock.slept)
