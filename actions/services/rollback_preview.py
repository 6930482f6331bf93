"""What rolling an action back would do, judged from the platform's live value.

The live value comes from the action's rollback preflight (``safety.gate.actions_preflight``
with ``rollback=True`` reads the platform outside any transaction, and the confirmation
page runs it before it shows anything). Nothing here calls a platform or writes: the
admin's confirmation page and the API can both present these previews.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from actions.models import Action, ActionStatus
from actions.services.verification import same_value
from budgetradar.timefmt import EMPTY, format_time
from budgetradar.words import format_money
from platforms.types import MONEY_FIELDS, Field
from scenarios.models import PreflightRun
from scenarios.services.preflight import preflight_entities

FIELD_LABELS = {
    Field.DAILY_BUDGET: "Daily budget",
    Field.LIFETIME_BUDGET: "Lifetime budget",
    Field.STATUS: "Status",
    Field.BID: "Bid",
    Field.TARGETING: "Targeting",
    Field.SCHEDULE: "Schedule",
}


def show_value(field: Field, value: Any, currency: str) -> str:
    """A field's value as a person reads it: money with its currency, a dash when empty."""
    if value is None or value == "":
        return EMPTY
    if field in MONEY_FIELDS:
        return format_money(value, currency)
    if field in (Field.TARGETING, Field.SCHEDULE):
        return "set"
    return str(value)


def rollback_fields(action: Action) -> list[tuple[Field, Any]]:
    """(field, before-value) pairs of the action's rollback instructions; malformed ones are skipped."""
    pairs = []
    for change in (action.rollback_params or {}).get("changes", []):
        try:
            pairs.append((Field(change["field"]), change.get("value")))
        except (KeyError, TypeError, ValueError):
            continue
    return pairs


@dataclass(frozen=True)
class FieldPreview:
    """One field a rollback restores: the live value (None when unknown), the value
    BudgetRadar set and read back, and the value the rollback writes."""

    field: Field
    live: Any
    set_by_budgetradar: Any
    restore: Any
    drifted: bool


@dataclass(frozen=True)
class RollbackPreview:
    """What a rollback of ``action`` would do; ``live_read_at`` is None when no live read
    after the execution is available (the values are then the last known ones)."""

    action: Action
    fields: list[FieldPreview]
    live_read_at: datetime | None
    live_found: bool

    @property
    def drifted(self) -> bool:
        return any(f.drifted for f in self.fields)

    def change_text(self) -> str:
        """``Daily budget: live now 450.00 EUR → will restore 70.00 EUR`` per field."""
        if not self.fields:
            return "No rollback instructions: nothing was applied."
        currency = self.action.connection.currency
        now = "live now" if self.live_read_at is not None else "last known"
        return "; ".join(
            f"{FIELD_LABELS[f.field]}: {now} {show_value(f.field, f.live, currency)} → will restore "
            f"{show_value(f.field, f.restore, currency)}"
            for f in self.fields
        )

    def drift_warning(self) -> str:
        """Why the rollback will be refused for drift; "" when the live value is still the one BudgetRadar set."""
        entity, currency = self.action.entity, self.action.connection.currency
        zone = self.action.connection.time_zone
        if self.live_read_at is not None and not self.live_found:
            return (
                f"{entity.name} was not found on the platform ({format_time(self.live_read_at, zone)}): "
                "removed entities cannot be rolled back."
            )
        if not self.drifted:
            return ""
        drift = "; ".join(
            f"{FIELD_LABELS[f.field].lower()} is {show_value(f.field, f.live, currency)} but BudgetRadar set "
            f"{show_value(f.field, f.set_by_budgetradar, currency)}"
            for f in self.fields
            if f.drifted
        )
        source = (
            f"the platform (read {format_time(self.live_read_at, zone)})"
            if self.live_read_at is not None
            else f"the mirror of {entity.name} (synced {format_time(entity.synced_at, zone)})"
        )
        return (
            f"Drift: {source} shows that {drift}. Someone may have changed it since; the rollback will be "
            "refused rather than overwrite that change, unless drift is overridden."
        )


def _live_values(action: Action, run: PreflightRun | None) -> tuple[dict[str, Any] | None, datetime | None, bool]:
    """The live values a succeeded rollback preflight read after the execution, when it read the
    same fields this rollback restores: (values, read at, entity found); (None, None, True) otherwise."""
    if run is None or run.status != PreflightRun.Status.SUCCEEDED or not run.inputs:
        return None, None, True
    read_at = run.reads_finished_at or run.finished_at or run.created_at
    if action.finished_at is not None and read_at < action.finished_at:
        return None, None, True
    targets = run.inputs[0].get("targets", {})
    restores = {f.value: v for f, v in rollback_fields(action)}
    if set(targets) != {name for name in restores if name in targets} or not all(
        same_value(Field(name), targets[name], restores[name]) for name in targets
    ):
        return None, None, True
    entity = next((e for e in preflight_entities(run) if e.get("entity_id") == action.entity_id), None)
    if entity is None:
        return None, None, True
    return entity.get("before") or {}, read_at, bool(entity.get("live_found"))


def rollback_preview(action: Action, run: PreflightRun | None) -> RollbackPreview:
    """The preview of ``action``'s rollback given its latest preflight ``run``.

    The live value is the one ``run`` read when it is a succeeded preflight of this
    rollback read after the execution; otherwise the mirror's value when it was synced
    after the execution, else the value read back after execution. A field is drifted
    when that value differs from the one BudgetRadar set.
    """
    live, read_at, found = _live_values(action, run)
    after = action.after_state or {}
    entity = action.entity
    mirror_fresh = (
        entity.synced_at is not None and action.finished_at is not None and entity.synced_at > action.finished_at
    )
    fields = []
    for field, before in rollback_fields(action):
        if live is not None:
            current = live.get(field.value) if found else None
        elif mirror_fresh:
            current = getattr(entity, field.value, None)
        else:
            current = after.get(field.value, getattr(entity, field.value, None))
        known = live is not None or mirror_fresh
        drifted = (
            known
            and found
            and field.value in after
            and not same_value(field, _plain(current), _plain(after[field.value]))
        )
        fields.append(FieldPreview(field, current, after.get(field.value), before, drifted))
    return RollbackPreview(action=action, fields=fields, live_read_at=read_at, live_found=found)


def _plain(value: Any) -> Any:
    """A stored value in the form ``same_value`` compares (money as Decimal strings unchanged)."""
    return str(value) if isinstance(value, Decimal) else value


def rollback_deadline_text(action: Action, *, now: datetime | None = None) -> str:
    """Whether the action can still be rolled back: ``Until 2026-05-02 16:00:00 CEST (in 23 hours)``
    (the account's zone), ``Expired at …``, or, once a rollback ran or runs, what became of it."""
    zone = action.connection.time_zone
    if action.status == ActionStatus.ROLLED_BACK:
        return f"Rolled back at {format_time(action.rolled_back_at, zone)}: there is nothing left to roll back."
    if action.status == ActionStatus.ROLLING_BACK:
        return "A rollback is under way."
    deadline = action.rollback_deadline
    if deadline is None:
        return "No rollback instructions (nothing was applied)."
    left = deadline - (now or timezone.now())
    if left.total_seconds() <= 0:
        return f"Expired at {format_time(deadline, zone)}: this action can no longer be rolled back."
    hours = int(left.total_seconds() // 3600)
    remaining = f"{hours} hour{'s' if hours != 1 else ''}" if hours else f"{int(left.total_seconds() // 60)} minutes"
    return f"Until {format_time(deadline, zone)} (in {remaining})."
