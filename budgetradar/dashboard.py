"""What the admin home shows: what needs a person, what is running, how each account performs.

The rules live here and the admin view (``budgetradar.views.admin_dashboard``) only
renders them:

- **Needs a person**: actions pending approval (oldest first, with their age), override
  requests nobody approved yet, actions that failed, partly executed or failed to roll
  back in the last ``FAILED_LOOKBACK``, actions stuck or awaiting reconciliation (the
  rules of ``actions.selectors.actions_needing_attention``), approved actions parked until
  a later time, connections whose circuit is not closed, and rollbacks that expire within
  ``ROLLBACK_EXPIRY_WARNING``.
- **Running**: queued and running action jobs and deployments with their progress, and
  planner runs in the queue.
- **Performance**: per connection, campaign-level spend, conversions, CPA and ROAS for
  each of the last ``CHART_DAYS`` local days of the account (today included, so the last
  point may be partial), with a marker on each day BudgetRadar changed something there
  (a deployment, or a single action executed or rolled back), linking to it.

Everything is scoped to the user's tenant (platform staff see every tenant) and each
section only to models the user may view. A section counts all its rows and lists the
first ``ROWS``; the whole dashboard takes a fixed number of queries whatever the number
of rows, days or connections. Moments are formatted with ``budgetradar.timefmt`` in the
zone of the row's account.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import Count, Max, Q, QuerySet, Sum
from django.urls import reverse
from django.utils import timezone

from actions.models import ACTIVE_JOB_STATUSES, Action, ActionJob, ActionStatus
from actions.selectors import action_wait_state, actions_needing_attention
from budgetradar.admin_base import AMBER, BLUE, GREY, RED, format_money
from budgetradar.tenancy import scope_to_user
from budgetradar.timefmt import format_duration, format_time
from planning.models import PlannerRun, RunStatus
from platforms.models import CircuitState, EntityPerformanceDaily, PlatformConnection, PlatformEntity
from scenarios.models import Deployment, GuardrailOverride

S = ActionStatus
ROWS = 10
CHART_DAYS = 60
FAILED_LOOKBACK = timedelta(days=7)
ROLLBACK_EXPIRY_WARNING = timedelta(hours=6)
FAILED_STATUSES = [S.FAILED, S.PARTIALLY_EXECUTED, S.ROLLBACK_FAILED]
CHANGED_STATUSES = [S.SUCCEEDED, S.PARTIALLY_EXECUTED, S.ROLLED_BACK, S.ROLLBACK_FAILED, S.ROLLING_BACK]
ACTIVE_DEPLOYMENT_STATUSES = [Deployment.Status.QUEUED, Deployment.Status.RUNNING]
MARKERS_PER_CONNECTION = 200


@dataclass(frozen=True)
class Row:
    """One line of a section: what it is (a link), what a person needs to know, a tone."""

    label: str
    url: str
    detail: str
    tone: str = GREY
    progress: int | None = None  # percent settled, for running work


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    count: int
    rows: list[Row]
    more_url: str = ""
    empty: str = "Nothing."


@dataclass(frozen=True)
class Day:
    date: date
    spend: Decimal | None
    conversions: Decimal | None
    revenue: Decimal | None

    @property
    def cpa(self) -> Decimal | None:
        return self.spend / self.conversions if self.spend is not None and self.conversions else None

    @property
    def roas(self) -> Decimal | None:
        return self.revenue / self.spend if self.revenue is not None and self.spend else None


@dataclass(frozen=True)
class Marker:
    date: date
    label: str
    url: str


@dataclass
class ConnectionPerformance:
    """Daily totals of a connection's campaigns (or of one entity) and BudgetRadar's changes."""

    connection: PlatformConnection
    days: list[Day]
    markers: list[Marker] = field(default_factory=list)
    entity: PlatformEntity | None = None

    @property
    def total_spend(self) -> Decimal:
        return sum((d.spend for d in self.days if d.spend is not None), Decimal(0))

    @property
    def total_conversions(self) -> Decimal:
        return sum((d.conversions for d in self.days if d.conversions is not None), Decimal(0))

    @property
    def total_revenue(self) -> Decimal:
        return sum((d.revenue for d in self.days if d.revenue is not None), Decimal(0))

    @property
    def totals(self) -> Day:
        return Day(
            date=self.days[-1].date,
            spend=self.total_spend,
            conversions=self.total_conversions,
            revenue=self.total_revenue,
        )

    @property
    def today(self) -> Day:
        """The account's today so far (platforms report the current day with a delay)."""
        return self.days[-1]

    @property
    def yesterday(self) -> Day:
        return self.days[-2]

    @property
    def summary_rows(self) -> list[tuple[str, Day]]:
        return [("Today so far", self.today), ("Yesterday", self.yesterday), ("Last 60 days", self.totals)]

    def money(self, amount: Decimal | None) -> str:
        return format_money(amount, self.connection.currency)

    def chart_data(self) -> dict:
        """What the chart script draws (numbers as floats: drawing only; tables show exact money)."""

        def number(value: Decimal | None) -> float | None:
            return None if value is None else round(float(value), 4)

        spend_on = {d.date: d.spend for d in self.days}
        return {
            "connection": self.connection.name,
            "currency": self.connection.currency,
            "labels": [d.date.isoformat() for d in self.days],
            "spend": [number(d.spend) for d in self.days],
            "conversions": [number(d.conversions) for d in self.days],
            "cpa": [number(d.cpa) for d in self.days],
            "roas": [number(d.roas) for d in self.days],
            "markers": [
                {"x": m.date.isoformat(), "y": number(spend_on.get(m.date)) or 0, "label": m.label, "url": m.url}
                for m in self.markers
            ],
        }


@dataclass(frozen=True)
class Dashboard:
    needs_person: list[Section]
    running: list[Section]
    performance: list[ConnectionPerformance]

    @property
    def needs_person_count(self) -> int:
        return sum(s.count for s in self.needs_person)


def _url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def _changelist(model, query: str = "") -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return f"{url}?{query}" if query else url


def _can_view(user, model) -> bool:
    return user.has_perm(f"{model._meta.app_label}.view_{model._meta.model_name}")


def _person(user, fallback: str = "someone no longer in the tenant") -> str:
    return (user.get_full_name() or user.username) if user is not None else fallback


def _section(key: str, title: str, queryset: QuerySet, row, *, more_url: str = "", empty: str = "Nothing.") -> Section:
    rows = [row(obj) for obj in queryset[:ROWS]]
    count = len(rows) if len(rows) < ROWS else queryset.count()
    return Section(key=key, title=title, count=count, rows=rows, more_url=more_url, empty=empty)


def _action_label(action: Action) -> str:
    return f"#{action.pk} {action.get_action_type_display()} on {action.entity.name}"


def _actions(user) -> QuerySet[Action]:
    return scope_to_user(Action.objects.select_related("entity", "connection", "proposed_by"), user)


def needs_person(user, now: datetime) -> list[Section]:
    sections: list[Section] = []
    if _can_view(user, Action):
        actions = _actions(user)

        def pending(a: Action) -> Row:
            by = f" · proposed by {_person(a.proposed_by, 'BudgetRadar')}"
            return Row(_action_label(a), _url(a), f"waiting {format_duration(now - a.created_at)}{by}", AMBER)

        sections.append(
            _section(
                "pending-approvals",
                "Pending approvals",
                actions.filter(status=S.PENDING_APPROVAL).order_by("created_at", "id"),
                pending,
                more_url=_changelist(Action, f"status__exact={S.PENDING_APPROVAL}"),
                empty="No action waits for approval.",
            )
        )
    if _can_view(user, GuardrailOverride):
        overrides = scope_to_user(
            GuardrailOverride.objects.filter(approved_at__isnull=True).select_related(
                "requested_by", "preflight__action__entity", "preflight__scenario"
            ),
            user,
        ).order_by("created_at", "id")

        def override(o: GuardrailOverride) -> Row:
            preflight = o.preflight
            subject = (
                _action_label(preflight.action)
                if preflight.action_id
                else (f"scenario {preflight.scenario.name}" if preflight.scenario_id else preflight.run_id)
            )
            detail = (
                f"requested by {_person(o.requested_by)} {format_duration(now - o.created_at)} ago: {o.reason} "
                "· a second person with the override permission approves it"
            )
            return Row(f"Override for {subject}", _url(o), detail, AMBER)

        sections.append(
            _section(
                "overrides-waiting",
                "Overrides waiting for a second person",
                overrides,
                override,
                more_url=_changelist(GuardrailOverride),
                empty="No override request waits.",
            )
        )
    if _can_view(user, Action):
        actions = _actions(user)

        def failed(a: Action) -> Row:
            when = format_time(a.finished_at or a.updated_at, a.connection.time_zone)
            why = a.error_message or a.error_hint or "no error recorded"
            return Row(_action_label(a), _url(a), f"{a.get_status_display()} at {when}: {why}", RED)

        sections.append(
            _section(
                "failed-actions",
                "Failed, partly executed or not rolled back (last 7 days)",
                actions.filter(status__in=FAILED_STATUSES, updated_at__gte=now - FAILED_LOOKBACK).order_by(
                    "-updated_at", "-id"
                ),
                failed,
                more_url=_changelist(Action, "status__in=" + ",".join(FAILED_STATUSES)),
                empty="No action failed in the last 7 days.",
            )
        )

        def attention(a: Action) -> Row:
            return Row(_action_label(a), _url(a), f"{a.get_status_display()}: {action_wait_state(a, now=now)}", RED)

        stuck = actions_needing_attention(actions, "stuck", now=now) | actions_needing_attention(
            actions, "reconciling", now=now
        )
        sections.append(
            _section(
                "stuck-actions",
                "Stuck or awaiting reconciliation",
                stuck.distinct().order_by("updated_at", "id"),
                attention,
                empty="No action is stuck.",
            )
        )

        def parked(a: Action) -> Row:
            return Row(_action_label(a), _url(a), action_wait_state(a, now=now), BLUE)

        sections.append(
            _section(
                "parked-actions",
                "Parked until a later time",
                actions_needing_attention(actions, "parked", now=now).order_by("next_attempt_at", "id"),
                parked,
                empty="No action is parked.",
            )
        )

        def expiring(a: Action) -> Row:
            zone = a.connection.time_zone
            left = format_duration(a.rollback_deadline - now)
            return Row(
                _action_label(a),
                _url(a),
                f"rollback possible until {format_time(a.rollback_deadline, zone)} (in {left})",
                AMBER,
            )

        sections.append(
            _section(
                "expiring-rollbacks",
                "Rollbacks expiring within 6 hours",
                actions.filter(
                    status__in=[S.SUCCEEDED, S.PARTIALLY_EXECUTED],
                    rollback_params__isnull=False,
                    rollback_deadline__gt=now,
                    rollback_deadline__lte=now + ROLLBACK_EXPIRY_WARNING,
                ).order_by("rollback_deadline", "id"),
                expiring,
                empty="No rollback expires soon.",
            )
        )
    if _can_view(user, PlatformConnection):

        def circuit(c: PlatformConnection) -> Row:
            since = f" since {format_time(c.circuit_opened_at, c.time_zone)}" if c.circuit_opened_at else ""
            why = f": {c.circuit_reason}" if c.circuit_reason else ""
            return Row(c.name, _url(c), f"{c.get_circuit_state_display()}{since}{why}", RED)

        sections.append(
            _section(
                "open-circuits",
                "Open circuits",
                scope_to_user(PlatformConnection.objects.exclude(circuit_state=CircuitState.CLOSED), user).order_by(
                    "name", "id"
                ),
                circuit,
                empty="Every connection's circuit is closed.",
            )
        )
    return sections


def running(user, now: datetime) -> list[Section]:
    sections: list[Section] = []
    if _can_view(user, ActionJob):

        def job(j: ActionJob) -> Row:
            settled = j.succeeded + j.failed
            progress = round(100 * settled / j.total) if j.total else 0
            started = (
                f"running for {format_duration(now - j.started_at)}"
                if j.started_at
                else f"queued {format_duration(now - j.created_at)} ago"
            )
            detail = f"{settled} of {j.total} settled ({j.succeeded} succeeded, {j.failed} failed) · {started}"
            return Row(f"{j.get_kind_display()} job #{j.pk} on {j.connection.name}", _url(j), detail, BLUE, progress)

        jobs = scope_to_user(
            ActionJob.objects.filter(status__in=ACTIVE_JOB_STATUSES).select_related("connection"), user
        )
        sections.append(
            _section(
                "running-jobs",
                "Action jobs",
                jobs.order_by("created_at", "id"),
                job,
                more_url=_changelist(ActionJob),
                empty="No job is queued or running.",
            )
        )
    if _can_view(user, Deployment):

        def deployment(d: Deployment) -> Row:
            settled = d.total - d.pending
            progress = round(100 * settled / d.total) if d.total else 0
            tone = RED if d.failed else BLUE
            name = f" of {d.scenario.name}" if d.scenario_id else ""
            counts = f"{d.succeeded} succeeded, {d.failed} failed"
            detail = f"{settled} of {d.total} settled ({counts}) · {d.get_status_display()}"
            return Row(f"{d.get_mode_display()} deployment #{d.pk}{name}", _url(d), detail, tone, progress)

        deployments = scope_to_user(
            Deployment.objects.filter(status__in=ACTIVE_DEPLOYMENT_STATUSES).select_related("scenario"), user
        )
        sections.append(
            _section(
                "running-deployments",
                "Deployments",
                deployments.order_by("created_at", "id"),
                deployment,
                more_url=_changelist(Deployment),
                empty="No deployment is queued or running.",
            )
        )
    if _can_view(user, PlannerRun):

        def run(r: PlannerRun) -> Row:
            detail = f"{r.get_status_display()} · for {r.local_date:%Y-%m-%d} · {r.get_trigger_display()}" + (
                f" · started {format_time(r.started_at, r.connection.time_zone)}" if r.started_at else ""
            )
            return Row(f"Planner run #{r.pk} on {r.connection.name}", _url(r), detail, BLUE)

        runs = scope_to_user(
            PlannerRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).select_related("connection"),
            user,
        )
        sections.append(
            _section(
                "running-planner",
                "Planner runs",
                runs.order_by("id"),
                run,
                more_url=_changelist(PlannerRun),
                empty="No planner run is queued or running.",
            )
        )
    return sections


def _local_days(connection: PlatformConnection, now: datetime) -> list[date]:
    today = now.astimezone(ZoneInfo(connection.time_zone)).date()
    return [today - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]


def performance(user, now: datetime) -> list[ConnectionPerformance]:
    """Per active connection: the last CHART_DAYS local days and BudgetRadar's changes (three queries)."""
    if not _can_view(user, PlatformConnection):
        return []
    connections = list(scope_to_user(PlatformConnection.objects.filter(is_active=True), user).order_by("name", "id"))
    if not connections:
        return []
    days_of = {c.pk: _local_days(c, now) for c in connections}
    first = min(days[0] for days in days_of.values())
    rows = (
        EntityPerformanceDaily.objects.filter(
            entity__connection__in=connections, entity__entity_type="campaign", date__gte=first
        )
        .values("entity__connection_id", "date")
        .annotate(spend=Sum("spend"), conversions=Sum("conversions"), revenue=Sum("revenue"))
    )
    totals = {(r["entity__connection_id"], r["date"]): r for r in rows}
    result = {}
    for c in connections:
        days = []
        for day in days_of[c.pk]:
            r = totals.get((c.pk, day))
            days.append(
                Day(day, *(r[k] for k in ("spend", "conversions", "revenue"))) if r else Day(day, None, None, None)
            )
        result[c.pk] = ConnectionPerformance(connection=c, days=days)
    _add_markers(result, now, datetime.combine(first, datetime.min.time(), tzinfo=ZoneInfo("UTC")) - timedelta(days=1))
    return list(result.values())


def _add_markers(result: dict[int, ConnectionPerformance], now: datetime, since: datetime) -> None:
    """Deployments (one marker per deployment) and single actions executed or rolled back."""
    zone = {pk: ZoneInfo(p.connection.time_zone) for pk, p in result.items()}
    changed = Action.objects.filter(connection_id__in=list(result), status__in=CHANGED_STATUSES)
    per_deployment = (
        changed.filter(deployment__isnull=False, finished_at__gte=since)
        .values("connection_id", "deployment_id")
        .annotate(at=Max("finished_at"), changes=Count("id"))
        .order_by("-at")
    )
    found: dict[int, list[Marker]] = defaultdict(list)
    for r in per_deployment:
        n = r["changes"]
        label = f"Deployment #{r['deployment_id']}: {n} change{'s' if n != 1 else ''}"
        url = reverse("admin:scenarios_deployment_change", args=[r["deployment_id"]])
        found[r["connection_id"]].append(Marker(r["at"].astimezone(zone[r["connection_id"]]).date(), label, url))
    singles = (
        changed.filter(deployment__isnull=True)
        .filter(Q(finished_at__gte=since) | Q(rolled_back_at__gte=since))
        .select_related("entity")
        .order_by("-finished_at")[: MARKERS_PER_CONNECTION * len(result)]
    )
    for a in singles:
        tz = zone[a.connection_id]
        if a.finished_at and a.finished_at >= since:
            found[a.connection_id].append(Marker(a.finished_at.astimezone(tz).date(), _action_label(a), _url(a)))
        if a.rolled_back_at and a.rolled_back_at >= since:
            label = f"Rolled back: {_action_label(a)}"
            found[a.connection_id].append(Marker(a.rolled_back_at.astimezone(tz).date(), label, _url(a)))
    for pk, markers in found.items():
        shown = {d.date for d in result[pk].days}
        result[pk].markers = sorted((m for m in markers if m.date in shown), key=lambda m: (m.date, m.label))[
            :MARKERS_PER_CONNECTION
        ]


def entity_performance(entity: PlatformEntity, *, now: datetime | None = None) -> ConnectionPerformance:
    """One entity's last CHART_DAYS local days and the actions that changed it (two queries)."""
    now = now or timezone.now()
    connection = entity.connection
    local_days = _local_days(connection, now)
    rows = {r.date: r for r in EntityPerformanceDaily.objects.filter(entity=entity, date__gte=local_days[0])}
    days = [
        Day(d, rows[d].spend, rows[d].conversions, rows[d].revenue) if d in rows else Day(d, None, None, None)
        for d in local_days
    ]
    since = datetime.combine(local_days[0], datetime.min.time(), tzinfo=ZoneInfo("UTC")) - timedelta(days=1)
    tz = ZoneInfo(connection.time_zone)
    markers = []
    changed = (
        Action.objects.filter(entity=entity, status__in=CHANGED_STATUSES)
        .filter(Q(finished_at__gte=since) | Q(rolled_back_at__gte=since))
        .select_related("entity")
        .order_by("-finished_at")[:MARKERS_PER_CONNECTION]
    )
    for a in changed:
        part = f" (deployment #{a.deployment_id})" if a.deployment_id else ""
        if a.finished_at and a.finished_at >= since:
            markers.append(Marker(a.finished_at.astimezone(tz).date(), _action_label(a) + part, _url(a)))
        if a.rolled_back_at and a.rolled_back_at >= since:
            markers.append(Marker(a.rolled_back_at.astimezone(tz).date(), f"Rolled back: {_action_label(a)}", _url(a)))
    shown = set(local_days)
    markers = sorted((m for m in markers if m.date in shown), key=lambda m: (m.date, m.label))
    return ConnectionPerformance(connection=connection, days=days, markers=markers, entity=entity)


def dashboard_for(user, *, now: datetime | None = None) -> Dashboard:
    """The admin home of ``user``: what needs a person, what runs, how each account performs."""
    now = now or timezone.now()
    return Dashboard(
        needs_person=needs_person(user, now), running=running(user, now), performance=performance(user, now)
    )
