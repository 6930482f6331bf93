"""Changes that cannot both be applied: two values for one shared Google Ads budget.

A Google Ads campaign budget with ``explicitly_shared`` moves every campaign on it
(https://developers.google.com/google-ads/api/docs/campaigns/budgets/create-budgets), so
two changes that set one shared budget's amount to different values contradict each
other: applying both would leave whichever went last. Such pairs are refused, each
change naming the others; changes with the same value are not a conflict.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from platforms.types import Change, EntityType, Field

BUDGET_FIELDS = frozenset({Field.DAILY_BUDGET, Field.LIFETIME_BUDGET})


@dataclass(frozen=True)
class BudgetConflict:
    """Changes (by position) that set one budget field of one budget to different values."""

    budget_id: str
    field: Field
    positions: tuple[int, ...]

    def message_for(self, changes: Sequence[Change], position: int) -> str:
        others = [changes[p] for p in self.positions if p != position]
        named = ", ".join(
            f"campaign {c.ref.external_id} to {c.value}" + (f" ({c.key})" if c.key else "") for c in others
        )
        return (
            f"{self.field} of campaign {changes[position].ref.external_id} is on shared budget {self.budget_id}, "
            f"which another change in the same batch sets to a different value ({named}); a shared budget has one "
            "amount, so neither was sent. Give both campaigns the same value, or one of them its own budget."
        )


def shared_budget_conflicts(
    changes: Sequence[Change], budget_ids: Sequence[str | None] | None = None
) -> list[BudgetConflict]:
    """Conflicts among ``changes`` (campaign budget changes whose budget id is known:
    ``budget_ids[i]`` when given, else the change's ``ref.budget_id``), in first-seen order."""
    groups: dict[tuple[str, Field], list[int]] = defaultdict(list)
    for position, change in enumerate(changes):
        budget_id = budget_ids[position] if budget_ids is not None else change.ref.budget_id
        if change.ref.entity_type == EntityType.CAMPAIGN and change.field in BUDGET_FIELDS and budget_id:
            groups[(budget_id, change.field)].append(position)
    return [
        BudgetConflict(budget_id, field, tuple(positions))
        for (budget_id, field), positions in groups.items()
        if len({changes[p].value for p in positions}) > 1
    ]
