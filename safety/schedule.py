"""The execution policy: when an approved change runs, and the sentence that says so.

Per tenant (``Tenant.execution_mode``), overridden per connection
(``PlatformConnection.execution_mode``, empty: the tenant's):
- ``on_approval``: due at once; the dispatcher's next sweep starts it;
- ``change_window``: due when the next change window of the connection's guardrail
  policy opens, in the account's time zone, skipping blackout dates (at once when the
  window is open now, or when the policy has no window);
- ``manual``: never due by itself; it waits for someone to press Execute.

It is applied by writing ``Action.next_attempt_at`` (empty: waits for Execute) and
``Action.wait_reason`` when an action is approved, and when a live deploy creates its
approved actions; the dispatcher runs approved actions whose ``next_attempt_at`` has come.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from actions.models import Action, ActionStatus
from actions.schedules import DISPATCH_SWEEP, SCHEDULES
from budgetradar.models import ExecutionMode
from platforms.models import PlatformConnection
from scenarios.models import GuardrailPolicy
from scenarios.services.guardrails import describe_window, in_change_window

# How far ahead the next change window is looked for (a year and a day: every weekday
# and every blackout date of a year).
WINDOW_HORIZON_DAYS = 367


def dispatch_minutes() -> int:
    """How often the scheduled sweep dispatches due actions (``actions.schedules``)."""
    return next(minutes for name, _func, _args, minutes in SCHEDULES if name == DISPATCH_SWEEP)


def dispatch_delay() -> str:
    """``a minute`` / ``5 minutes``: how long a due action waits for the sweep at most."""
    minutes = dispatch_minutes()
    return "a minute" if minutes == 1 else f"{minutes} minutes"


@dataclass(frozen=True)
class ExecutionPlan:
    """What the execution policy decides for a change approved at ``decided_at``.

    ``run_at`` None: it waits for someone to press Execute.
    """

    mode: str
    source: str
    run_at: datetime | None
    wait_reason: str
    time_zone: str
    decided_at: datetime

    @property
    def runs_now(self) -> bool:
        """Whether the change is sent as soon as the dispatcher sees it (no waiting)."""
        return self.run_at is not None and self.run_at <= self.decided_at

    def fields(self) -> dict[str, object]:
        """The action fields that carry the plan."""
        return {"next_attempt_at": self.run_at, "wait_reason": self.wait_reason[:500]}

    def sentence(self) -> str:
        """What will happen and when, for a person: ``will run at 14:00 Europe/Berlin …``."""
        if self.run_at is None:
            return f"Waits for someone to press Execute ({self.source}: {_label(self.mode)})."
        if self.runs_now:
            return (
                f"Runs at once: the dispatcher starts it within {dispatch_delay()} "
                f"({self.source}: {_label(self.mode)})."
            )
        return f"Will run at {local_time(self.run_at, self.time_zone, self.decided_at)}. {self.wait_reason}"


def execution_mode_of(connection: PlatformConnection) -> tuple[str, str]:
    """The connection's execution mode and where it comes from (connection or tenant)."""
    if connection.execution_mode:
        return connection.execution_mode, f"execution policy of connection {connection.name}"
    return connection.tenant.execution_mode, f"execution policy of tenant {connection.tenant.name}"


def execution_plan(*, connection: PlatformConnection, policy: GuardrailPolicy, now: datetime) -> ExecutionPlan:
    """The plan for a change on ``connection`` approved ``now`` (``policy``: its guardrails)."""
    mode, source = execution_mode_of(connection)
    zone = connection.time_zone

    def plan(run_at: datetime | None, reason: str) -> ExecutionPlan:
        return ExecutionPlan(mode, source, run_at, reason, zone, now)

    if mode == ExecutionMode.MANUAL:
        return plan(None, f"The {source} is manual execute only: it waits for someone to press Execute.")
    if mode == ExecutionMode.ON_APPROVAL or not has_change_window(policy):
        return plan(now, "")
    opens = next_change_window(policy, after=now, time_zone=zone)
    window = f"{describe_window(policy)} ({zone}), guardrail policy “{policy.name}”"
    if opens is None:
        return plan(
            None,
            f"No change window ({window}) opens outside blackout dates in the next {WINDOW_HORIZON_DAYS} days: "
            "it waits for someone to press Execute.",
        )
    if opens <= now:
        return plan(now, "")
    return plan(opens, f"It waits for the next change window: {window}.")


def has_change_window(policy: GuardrailPolicy) -> bool:
    return bool(policy.change_window_days) or not (
        policy.change_window_start is None and policy.change_window_end is None
    )


def next_change_window(policy: GuardrailPolicy, *, after: datetime, time_zone: str) -> datetime | None:
    """The first moment at or after ``after`` inside the change window and not on a
    blackout date (both judged in ``time_zone``), as aware UTC; None within the horizon."""
    zone = ZoneInfo(time_zone)
    local = after.astimezone(zone)
    blackout = {str(d) for d in policy.blackout_dates or []}
    if in_change_window(policy, local) and local.date().isoformat() not in blackout:
        return after
    start = policy.change_window_start or time(0, 0)
    for offset in range(WINDOW_HORIZON_DAYS):
        day = local.date() + timedelta(days=offset)
        # Through UTC and back, so a start inside a daylight-saving gap becomes a real instant.
        candidate = datetime.combine(day, start, tzinfo=zone).astimezone(UTC).astimezone(zone)
        if candidate <= local or candidate.date().isoformat() in blackout:
            continue
        if in_change_window(policy, candidate):
            return candidate.astimezone(UTC)
    return None


def local_time(moment: datetime, time_zone: str, now: datetime) -> str:
    """``14:00 Europe/Berlin`` today, else ``14:00 Europe/Berlin on Tuesday 2026-12-08``."""
    zone = ZoneInfo(time_zone)
    local = moment.astimezone(zone)
    text = f"{local:%H:%M} {time_zone}"
    if local.date() != now.astimezone(zone).date():
        text += f" on {local:%A %Y-%m-%d}"
    return text


def when_it_runs(action: Action, *, policy: GuardrailPolicy, now: datetime) -> str:
    """What will happen to ``action`` and when, as its page and the API say it.

    Pending: what the execution policy will decide on approval. Approved: what its
    ``next_attempt_at`` says. In flight or finished: where it is.
    """
    status = action.status
    if status == ActionStatus.PENDING_APPROVAL:
        plan = execution_plan(connection=action.connection, policy=policy, now=now)
        return f"When approved: {plan.sentence()[0].lower()}{plan.sentence()[1:]}"
    if status == ActionStatus.APPROVED:
        return approved_sentence(action, now=now)
    if status in (ActionStatus.QUEUED, ActionStatus.EXECUTING):
        return "Running: a worker has it (queued or executing)."
    if status == ActionStatus.ROLLING_BACK:
        return "Rolling back: a worker restores the before-values."
    return ""


def approved_sentence(action: Action, *, now: datetime) -> str:
    """An approved action's ``next_attempt_at`` and ``wait_reason`` for a person."""
    zone = action.connection.time_zone
    if action.next_attempt_at is None:
        reason = f" {action.wait_reason}" if action.wait_reason else ""
        return f"Waits for someone to press Execute.{reason}"
    if action.next_attempt_at <= now:
        return f"Due: the dispatcher starts it within {dispatch_delay()}."
    reason = f" {action.wait_reason}" if action.wait_reason else ""
    return f"Will run at {local_time(action.next_attempt_at, zone, now)}.{reason}"


def _label(mode: str) -> str:
    return ExecutionMode(mode).label.lower()
