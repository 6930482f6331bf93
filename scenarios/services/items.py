"""The normalised form every input (scenario items, bundles, CSV) takes before a preflight."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from platforms.models import PlatformEntity

TARGET_FIELDS = ("daily_budget", "lifetime_budget", "status", "bid")


@dataclass(frozen=True)
class TargetItem:
    """Target values for one mirrored entity: money as Decimal, status "active"/"paused".

    Only the fields present are changed; an item never deletes anything.
    """

    entity: PlatformEntity
    targets: dict[str, Decimal | str]

    def as_input(self) -> dict[str, Any]:
        """JSON-safe form stored in ``PreflightRun.inputs``."""
        return {"entity": self.entity.pk, "targets": {k: str(v) for k, v in sorted(self.targets.items())}}


def items_from_inputs(inputs: list[dict[str, Any]], *, tenant) -> list[TargetItem]:
    """Rebuild items from ``PreflightRun.inputs`` (one query for all entities)."""
    ids = [row["entity"] for row in inputs]
    entities = PlatformEntity.objects.filter(tenant=tenant, pk__in=ids).select_related("connection", "parent")
    by_id = {e.pk: e for e in entities}
    items = []
    for row in inputs:
        targets = {k: (v if k == "status" else Decimal(v)) for k, v in row["targets"].items()}
        items.append(TargetItem(entity=by_id[row["entity"]], targets=targets))
    return items


def items_of_scenario(scenario) -> list[TargetItem]:
    rows = scenario.items.select_related("entity__connection", "entity__parent").order_by("id")
    return [TargetItem(entity=row.entity, targets=row.targets()) for row in rows]
