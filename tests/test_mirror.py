"""platforms.mirror: a read of some entities refreshes exactly their mirror rows."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from platforms.mirror import mirror_refresh
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
