"""Sync mirrors a platform account in bulk: idempotent, never deletes, bounded queries."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.db import connection as db
from django.utils import timezone

from budgetradar.errors import InvalidState, NotFound, PermissionDenied
from platforms.base import no_throttle
from platforms.fakes.faults import FaultKind
from platforms.models import EntityPerformanceDaily, PlatformEntity, RateLimitBucket
from platforms.registry import get_executor
from platforms.sandbox.executor import SandboxExecutor
from platforms.sandbox.models import SandboxEntity
from platforms.services import connection_sync
from platforms.sync import BATCH_SIZE, SyncFailed, sync_connection
from platforms.tasks import sync_connection_task
from tests.factories import (
    ActionFactory,
    SandboxAccountFactory,
    SandboxAdFactory,
    SandboxAdSetFactory,
    SandboxCampaignFactory,
    SandboxFaultFactory,
    sandbox_connection,
)


@pytest.fixture
def account(db):
    return SandboxAccountFactory(account_id="sbx-sync")


@pytest.fixture
def graph(account):
    """A campaign with two ad sets and an ad."""
    campaign = SandboxCampaignFactory(account=account, external_id="sandbox-cmp-1001", daily_budget=Decimal("400.00"))
    ad_sets = [SandboxAdSetFactory(account=account, parent=campaign) for _ in range(2)]
    ad = SandboxAdFactory(account=account, parent=ad_sets[0])
    return campaign, ad_sets, ad


@pytest.fixture
def conn(tenant, account):
    return sandbox_connection(tenant, account, name="Acme Sandbox")


def mirror(conn, external_id) -> PlatformEntity:
    return PlatformEntity.objects.get(connection=conn, external_id=external_id)


def snapshot(conn) -> list[tuple]:
    entities = PlatformEntity.objects.filter(connection=conn).order_by("pk")
    values = list(entities.values_list("pk", "external_id", "parent_id", "status", "daily_budget", "bid", "name"))
    performance = list(
        EntityPerformanceDaily.objects.filter(entity__connection=conn)
        .order_by("pk")
        .values_list("pk", "entity_id", "date", "spend", "conversions", "revenue")
    )
    return values + performance


def test_sync_mirrors_entities_with_their_parents_and_daily_performance(tenant, conn, graph):
    campaign, ad_sets, ad = graph
    result = connection_sync(connection=conn, days=7)
    assert (result.entities_seen, result.entities_created, result.entities_updated) == (4, 4, 0)
    mirrored_campaign = mirror(conn, campaign.external_id)
    assert mirrored_campaign.tenant == tenant
    assert mirrored_campaign.daily_budget == Decimal("400.00")
    assert mirror(conn, ad_sets[0].external_id).parent == mirrored_campaign
    assert mirror(conn, ad.external_id).parent == mirror(conn, ad_sets[0].external_id)
    assert result.performance_rows == 7 * 3  # campaign and ad sets; ads report none
    assert EntityPerformanceDaily.objects.filter(entity__connection=conn).count() == 21
    assert (result.until - result.since).days == 6
    today_in_berlin = timezone.now().astimezone(ZoneInfo("Europe/Berlin")).date()
    assert result.until == today_in_berlin - timedelta(days=1)  # complete days, in the account's time zone
    conn.refresh_from_db()
    assert conn.last_synced_at is not None
    assert "4 entities (4 new, 0 changed, 0 marked removed); 21 performance rows" in result.message


def test_a_second_sync_changes_nothing(conn, graph):
    connection_sync(connection=conn, days=7)
    before = snapshot(conn)
    result = connection_sync(connection=conn, days=7)
    assert (result.entities_created, result.entities_updated, result.entities_removed) == (0, 0, 0)
    assert snapshot(conn) == before


def test_a_change_on_the_platform_updates_the_mirror(conn, graph):
    campaign, ad_sets, _ = graph
    connection_sync(connection=conn, days=1)
    SandboxEntity.objects.filter(pk=campaign.pk).update(daily_budget=Decimal("520.00"), status="paused")
    result = connection_sync(connection=conn, days=1)
    assert (result.entities_created, result.entities_updated) == (0, 1)
    assert mirror(conn, campaign.external_id).daily_budget == Decimal("520.00")
    assert mirror(conn, campaign.external_id).status == "paused"


def test_entities_gone_from_the_platform_are_marked_removed_never_deleted(conn, graph):
    campaign, ad_sets, ad = graph
    connection_sync(connection=conn, days=1)
    action = ActionFactory(entity=mirror(conn, ad_sets[0].external_id))
    SandboxEntity.objects.filter(pk__in=[ad_sets[0].pk, ad.pk]).update(deleted_at=timezone.now())
    result = connection_sync(connection=conn, days=1)
    assert result.entities_removed == 2
    gone = mirror(conn, ad_sets[0].external_id)
    assert gone.status == "removed"
    assert action.entity_id == gone.pk
    assert mirror(conn, campaign.external_id).status == "active"


def test_an_entity_that_comes_back_is_active_again(conn, graph):
    _, ad_sets, _ = graph
    connection_sync(connection=conn, days=1)
    SandboxEntity.objects.filter(pk=ad_sets[1].pk).update(deleted_at=timezone.now())
    connection_sync(connection=conn, days=1)
    SandboxEntity.objects.filter(pk=ad_sets[1].pk).update(deleted_at=None)
    connection_sync(connection=conn, days=1)
    assert mirror(conn, ad_sets[1].external_id).status == "active"


def _batches(model, rows: int) -> int:
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    per_batch = min(BATCH_SIZE, db.ops.bulk_batch_size(fields, [model()] * rows))
    return math.ceil(rows / per_batch)


def test_five_thousand_entities_sync_in_a_bounded_number_of_queries(
    tenant, account, conn, django_assert_max_num_queries
):
    campaigns = SandboxEntity.objects.bulk_create(
        SandboxEntity(account=account, entity_type="campaign", external_id=f"c-{i}", name=f"C {i}", daily_budget=100)
        for i in range(500)
    )
    SandboxEntity.objects.bulk_create(
        SandboxEntity(
            account=account,
            entity_type="ad_set",
            external_id=f"a-{i}",
            name=f"A {i}",
            parent=campaigns[i % 500],
            daily_budget=10,
        )
        for i in range(4500)
    )
    # Upsert batches (SQLite caps a batch at 999 parameters, PostgreSQL at BATCH_SIZE rows)
    # plus a constant: two platform requests, the throttle, the lock and the bookkeeping.
    bound = _batches(PlatformEntity, 500) + _batches(PlatformEntity, 4500) + _batches(EntityPerformanceDaily, 5000) + 40
    assert bound < 5000 / 25  # nowhere near one query per entity
    with django_assert_max_num_queries(bound):
        result = connection_sync(connection=conn, days=1)
    assert (result.entities_seen, result.entities_created, result.performance_rows) == (5000, 5000, 5000)
    assert PlatformEntity.objects.filter(connection=conn, parent__isnull=False).count() == 4500


class EntitiesOnlyExecutor(SandboxExecutor):
    def read_performance(self, since, until):
        raise NotImplementedError("no reports")


def test_a_platform_without_performance_still_gets_its_entities_mirrored(conn, graph):
    executor = EntitiesOnlyExecutor(conn.to_config())
    result = sync_connection(connection=conn, executor=executor, days=7)
    assert result.entities_seen == 4
    assert result.performance_rows == 0
    assert "performance not mirrored" in result.message
    assert not EntityPerformanceDaily.objects.filter(entity__connection=conn).exists()


def test_an_unreadable_platform_fails_with_the_reason_and_leaves_the_mirror_alone(conn, account, graph):
    connection_sync(connection=conn, days=1)
    before = snapshot(conn)
    SandboxFaultFactory(account=account, kind=FaultKind.AUTH_EXPIRED, scope="read", remaining=None)
    with pytest.raises(SyncFailed) as failed:
        connection_sync(connection=conn, days=1)
    assert "access token" in failed.value.message
    assert "Reconnect the account" in failed.value.message
    assert snapshot(conn) == before


def test_a_rate_limited_read_is_retried_after_the_platform_delay_and_holds_back_other_workers(conn, account, graph):
    SandboxFaultFactory(account=account, kind=FaultKind.RATE_LIMIT, scope="read", retry_after=2)
    slept: list[float] = []
    executor = get_executor(conn, throttle=no_throttle)
    result = sync_connection(connection=conn, executor=executor, days=1, sleep=slept.append)
    assert result.entities_seen == 4
    assert slept and slept[0] >= 2
    assert RateLimitBucket.objects.get(connection=conn).tokens < 0


def test_syncing_needs_the_sync_permission_in_the_same_tenant(conn, viewer, tenant_admin, other_admin, graph):
    with pytest.raises(PermissionDenied):
        connection_sync(connection=conn, actor=viewer, days=1)
    with pytest.raises(NotFound):
        connection_sync(connection=conn, actor=other_admin, days=1)
    assert connection_sync(connection=conn, actor=tenant_admin, days=1).entities_seen == 4


def test_an_inactive_connection_is_not_synced(conn):
    conn.is_active = False
    conn.save()
    with pytest.raises(InvalidState, match="inactive"):
        connection_sync(connection=conn, days=1)


def test_the_command_prints_one_line_per_connection(conn, graph, capsys):
    call_command("sync_platforms", "--connection", str(conn.pk), "--days", "2")
    assert f"Connection {conn.pk} (Acme Sandbox): 4 entities (4 new" in capsys.readouterr().out


def test_the_command_fails_with_a_one_line_reason(conn, account, graph):
    SandboxFaultFactory(account=account, kind=FaultKind.PERMISSION_DENIED, scope="read", remaining=None)
    with pytest.raises(CommandError, match=r"1 sync\(s\) failed; first: connection \d+: Could not read"):
        call_command("sync_platforms")
    with pytest.raises(CommandError, match="No platform connection with id 999999"):
        call_command("sync_platforms", "--connection", "999999")


def test_the_task_syncs_by_id_and_skips_a_connection_that_went_away(conn, graph):
    assert sync_connection_task(conn.pk, days=1)["entities_seen"] == 4
    assert sync_connection_task(conn.pk, days=1)["entities_created"] == 0
    assert "skipped" in sync_connection_task(999999)
