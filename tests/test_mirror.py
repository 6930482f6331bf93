"""platforms.mirror: a read of some entities refreshes exactly their mirror rows."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from platforms.mirror import mirror_refresh, mirror_update
from platforms.models import PlatformEntity
from platforms.types import EntityState, EntityStatus, EntityType
from tests.factories import EntityFactory

pytestmark = pytest.mark.django_db


def state(entity: PlatformEntity, **values) -> EntityState:
    fields = {"name": entity.name, "status": EntityStatus(entity.status), "daily_budget": entity.daily_budget}
    return EntityState(
        entity_type=EntityType(entity.entity_type),
        external_id=entity.external_id,
        currency="EUR",
        **{**fields, **values},
    )


def test_read_entities_get_their_values_and_synced_at_and_the_others_stay(connection_):
    old = timezone.now() - timedelta(days=1)
    changed, same, unread = (
        EntityFactory(connection=connection_, synced_at=old, daily_budget=Decimal("100.00")) for _ in range(3)
    )
    states = {
        (changed.entity_type, changed.external_id): state(changed, daily_budget=Decimal("140.00"), status="paused"),
        (same.entity_type, same.external_id): state(same),
    }
    assert mirror_refresh([changed, same, unread], states) == 2
    assert (changed.daily_budget, changed.status) == (Decimal("140.00"), "paused")  # in memory too
    rows = PlatformEntity.objects.in_bulk([changed.pk, same.pk, unread.pk])
    assert (rows[changed.pk].daily_budget, rows[changed.pk].status) == (Decimal("140.00"), "paused")
    assert rows[changed.pk].synced_at > old and rows[same.pk].synced_at > old
    assert rows[same.pk].daily_budget == Decimal("100.00")
    assert rows[unread.pk].synced_at == old


def test_read_backs_by_id_are_written_in_one_statement_and_a_deleted_entity_is_skipped(
    connection_, django_assert_num_queries
):
    old = timezone.now() - timedelta(days=1)
    read, reread, gone, unread = (
        EntityFactory(connection=connection_, synced_at=old, daily_budget=Decimal("100.00")) for _ in range(4)
    )
    states = [
        (read.pk, state(read, daily_budget=Decimal("120.00"), bid=Decimal("0.45"))),
        (reread.pk, state(reread, daily_budget=Decimal("130.00"))),
        (reread.pk, state(reread, daily_budget=Decimal("135.00"), status="paused")),  # the later read wins
        (gone.pk, state(gone, daily_budget=Decimal("150.00"))),
    ]
    gone.delete()
    with django_assert_num_queries(1):
        assert mirror_update(states) == 2
    rows = PlatformEntity.objects.in_bulk([read.pk, reread.pk, unread.pk])
    assert (rows[read.pk].daily_budget, rows[read.pk].bid, rows[read.pk].synced_at > old) == (
        Decimal("120.00"),
        Decimal("0.45"),
        True,
    )
    assert (rows[reread.pk].daily_budget, rows[reread.pk].status) == (Decimal("135.00"), "paused")
    assert (rows[unread.pk].daily_budget, rows[unread.pk].synced_at) == (Decimal("100.00"), old)
    assert not PlatformEntity.objects.filter(pk=gone.pk).exists()
