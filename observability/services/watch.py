"""The post-change watch: every live deployment and executed action is watched for days.

Creation (from outbox consumers, rows only): a live deployment that finished gets one
``Watch`` per connection it changed, an executed action outside deployments its own;
each ``WatchEntity`` keeps the changed fields' values before and after. A newer watch
of an entity supersedes older active ones (restoring those would undo the newer
change). Restoring deployments are not watched themselves, so a restore never
triggers a restore of the restore.

Evaluation (``watch_evaluate``, daily from a schedule, idempotent): each complete local
day after the change (the connection's time zone; yesterday counts once the local
clock passed ``WATCH_EVALUATION_HOUR``) is compared with the **pre-change baseline**:
the same weekday in the ``baseline_weeks`` weeks before the change day, over the
watched entities together (an ad set whose campaign is watched too is not counted
twice). Thresholds come from the tenant's ``ObservabilitySettings`` (the seed's
numbers by default) and are stored on each day:
- conversions down **more than** ``conversions_drop_pct`` % for ``conversions_drop_days``
  consecutive days;
- CPA up **more than** ``cpa_rise_pct`` % for ``cpa_rise_days`` consecutive days (a day
  with spend and no conversions counts as a rise);
- the connection's circuit breaker opened **more than** ``circuit_openings_per_week``
  times within 7 days after the change.
Equal to the threshold is not a breach. A day without performance rows is ``no_data``
(evaluated again later) and a baseline under ``min_baseline_conversions`` is not judged;
both break a streak.

A trigger (``watch_restore``, outside any transaction: the preflight reads the platform)
creates a scenario back to the values before the change through ``scenario_create`` and
``scenario_preflight`` (the one safety gate), then in assist mode leaves it for a person
to deploy, in autopilot deploys it with ``deployment_create`` as the approver who
consented, and raises an alert either way. Rollback instructions expire 24 hours after
execution while a trigger fires days later: the restoring scenario is what makes a late
restore possible, and it says so.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from actions.models import Action, ActionStatus
from budgetradar.entitlements import Feature, entitlement_check_feature
from budgetradar.errors import DomainError
from observability.models import (
    AlertKind,
    CircuitOpening,
    ObservabilitySettings,
    Severity,
    Watch,
    WatchDay,
    WatchEntity,
    WatchMode,
)
from observability.services.alerts import Condition, alert_raise, alert_resolve_key, dedup_key
from observability.services.settings import settings_for, settings_for_tenants
from platforms.models import EntityPerformanceDaily
from scenarios.models import Deployment
from scenarios.services.adpush import scenario_preflight
from scenarios.services.deploy import deployment_create
from scenarios.services.imports import scenario_create
from scenarios.services.items import TARGET_FIELDS, TargetItem

logger = logging.getLogger(__name__)

APPLIED = [ActionStatus.SUCCEEDED, ActionStatus.PARTIALLY_EXECUTED]
ACTIVE = [Watch.Status.WATCHING]
CONVERSIONS_DROP, CPA_RISE, CIRCUIT = "conversions_drop", "cpa_rise", "circuit_openings"
NO_DATA_GRACE_DAYS = 3  # days past the window a watch waits for late performance rows
PCT = Decimal("0.01")
PARAM_FIELDS = {"new_budget": "daily_budget", "new_bid": "bid"}
STATUS_OF_ACTION = {"pause_campaign": "paused", "resume_campaign": "active"}


# Creation ------------------------------------------------------------------------------


def watches_for_deployment(deployment_id: int) -> list[Watch]:
    """Watch a finished live deployment's applied changes, one watch per connection."""
    deployment = Deployment.objects.select_related("tenant").filter(pk=deployment_id).first()
    if deployment is None or deployment.mode != Deployment.Mode.LIVE:
        return []
    if Watch.objects.filter(restoring_scenario_id=deployment.scenario_id).exclude(restoring_scenario=None).exists():
        return []  # a restore is not watched: it could only restore the values that triggered it
    actions = list(deployment.actions.filter(status__in=APPLIED).select_related("connection", "entity"))
    by_connection: dict[int, list[Action]] = defaultdict(list)
    for action in actions:
        by_connection[action.connection_id].append(action)
    return [w for group in by_connection.values() if (w := _watch_create(group, deployment=deployment))]


# Rows per INSERT when watching many actions (bulk_create lowers it where the database
# binds fewer parameters: SQLite), and entity ids per UPDATE: one outbox drain of 10,000
# settled actions supersedes older watches in one statement.
WATCH_BATCH = 2000
LOOKUP_BATCH = 10_000


def watches_for_actions(action_ids: list[int]) -> list[Watch]:
    """Watch actions executed outside any deployment, one watch each, in a bounded number
    of queries whatever their number (10,000 settled actions are one outbox drain).

    Redelivered events create nothing new; of several actions on one entity the latest
    finished keeps watching and the others (and older watches of that entity) are
    superseded, as ``_watch_create`` does for one.
    """
    actions = list(
        Action.objects.select_related("connection", "tenant")
        .filter(pk__in=action_ids, deployment=None, status__in=APPLIED)
        .order_by("finished_at", "pk")
    )
    if not actions:
        return []
    configs = settings_for_tenants({a.tenant_id for a in actions})
    seen = set(Watch.objects.filter(action_id__in=[a.pk for a in actions]).values_list("action_id", flat=True))
    planned: list[tuple[Action, Watch, tuple[dict, dict]]] = []
    for action in actions:
        config = configs[action.tenant_id]
        changed = None if action.pk in seen or config.watch_mode == WatchMode.OFF else changed_values(action)
        if changed:
            planned.append((action, _new_watch([action], config, action=action), changed))
    latest = {action.entity_id: watch for action, watch, _changed in planned}  # finished last wins
    for action, watch, _changed in planned:
        if latest[action.entity_id] is not watch:
            watch.status = Watch.Status.SUPERSEDED
    if not planned:
        return []
    # All or nothing; inside a caller's transaction (the outbox drain's savepoint) no
    # savepoint of its own is needed: a failure here rolls back to the caller's.
    with transaction.atomic(savepoint=False):
        entity_ids = list(latest)
        for start in range(0, len(entity_ids), LOOKUP_BATCH):
            Watch.objects.filter(
                status__in=ACTIVE, entities__entity_id__in=entity_ids[start : start + LOOKUP_BATCH]
            ).update(status=Watch.Status.SUPERSEDED)
        watches = Watch.objects.bulk_create([watch for _action, watch, _changed in planned], batch_size=WATCH_BATCH)
        WatchEntity.objects.bulk_create(
            (
                WatchEntity(watch=watch, entity_id=action.entity_id, before=before, after=after)
                for (action, _unsaved, (before, after)), watch in zip(planned, watches, strict=True)
            ),
            batch_size=WATCH_BATCH,
        )
    return watches


def watch_for_action(action_id: int) -> Watch | None:
    """Watch one action executed outside any deployment (its existing watch when it has one)."""
    created = watches_for_actions([action_id])
    return created[0] if created else Watch.objects.filter(action_id=action_id).first()


def _new_watch(actions: list[Action], config: ObservabilitySettings, *, deployment=None, action=None) -> Watch:
    """An unsaved watch of ``actions`` (of one connection) with the tenant's settings."""
    connection = actions[0].connection
    changed_at = max(a.finished_at or timezone.now() for a in actions)
    return Watch(
        tenant_id=actions[0].tenant_id,
        connection=connection,
        deployment=deployment,
        action=action,
        changed_at=changed_at,
        change_date=changed_at.astimezone(ZoneInfo(connection.time_zone)).date(),
        time_zone=connection.time_zone,
        watch_days=config.watch_days,
        baseline_weeks=config.baseline_weeks,
    )


def _watch_create(actions: list[Action], *, deployment=None, action=None) -> Watch | None:
    tenant = actions[0].tenant
    config = settings_for(tenant)
    if config.watch_mode == WatchMode.OFF:
        return None
    entities = [(a, changed) for a in actions if (changed := changed_values(a))]
    if not entities:
        return None
    connection = actions[0].connection
    with transaction.atomic():
        existing = Watch.objects.filter(deployment=deployment, action=action, connection=connection).first()
        if existing is not None:
            return existing  # a redelivered event
        watch = _new_watch(actions, config, deployment=deployment, action=action)
        watch.save()
        WatchEntity.objects.bulk_create(
            WatchEntity(watch=watch, entity_id=a.entity_id, before=before, after=after)
            for a, (before, after) in entities
        )
        Watch.objects.filter(status__in=ACTIVE, entities__entity_id__in=[a.entity_id for a, _ in entities]).exclude(
            pk=watch.pk
        ).update(status=Watch.Status.SUPERSEDED)
    return watch


def changed_values(action: Action) -> tuple[dict, dict] | None:
    """(before, after) of the fields the action changed, JSON-safe; None if it changed none."""
    before_state = action.before_state or {}
    after_state = action.after_state or {}
    fields = [
        f for f in TARGET_FIELDS if f in before_state and before_state.get(f) != after_state.get(f, before_state.get(f))
    ]
    if not fields:
        fields = [f for f in _param_fields(action) if f in before_state]
    if not fields:
        return None
    return {f: before_state.get(f) for f in fields}, {f: after_state.get(f) for f in fields}


def _param_fields(action: Action) -> list[str]:
    if action.action_type in STATUS_OF_ACTION:
        return ["status"]
    return [PARAM_FIELDS.get(k, k) for k in (action.params or {}) if PARAM_FIELDS.get(k, k) in TARGET_FIELDS]


def watch_entities_rolled_back(action_ids: list[int]) -> int:
    """Rolled-back actions no longer count; a watch with nothing left ends as rolled back.

    One update per deployment involved (plus one for actions outside deployments),
    whatever the number of actions."""
    by_deployment: dict[int | None, list[tuple[int, int]]] = defaultdict(list)
    for entity_id, deployment_id, action_id in Action.objects.filter(pk__in=action_ids).values_list(
        "entity_id", "deployment_id", "pk"
    ):
        by_deployment[deployment_id].append((entity_id, action_id))
    marked, touched = 0, set()
    for deployment_id, pairs in by_deployment.items():
        if deployment_id is None:
            rows = WatchEntity.objects.filter(watch__action_id__in=[a for _e, a in pairs], rolled_back=False)
        else:
            rows = WatchEntity.objects.filter(
                watch__deployment_id=deployment_id, entity_id__in=[e for e, _a in pairs], rolled_back=False
            )
        touched.update(rows.values_list("watch_id", flat=True))
        marked += rows.update(rolled_back=True)
    Watch.objects.filter(pk__in=touched, status__in=ACTIVE).exclude(entities__rolled_back=False).update(
        status=Watch.Status.ROLLED_BACK
    )
    return marked


# Evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    conversions_drop_pct: Decimal
    conversions_drop_days: int
    cpa_rise_pct: Decimal
    cpa_rise_days: int
    circuit_openings_per_week: int
    min_baseline_conversions: Decimal

    @classmethod
    def of(cls, config: ObservabilitySettings) -> Thresholds:
        return cls(
            conversions_drop_pct=Decimal(config.conversions_drop_pct),
            conversions_drop_days=config.conversions_drop_days,
            cpa_rise_pct=Decimal(config.cpa_rise_pct),
            cpa_rise_days=config.cpa_rise_days,
            circuit_openings_per_week=config.circuit_openings_per_week,
            min_baseline_conversions=Decimal(config.min_baseline_conversions),
        )

    def as_json(self) -> dict[str, str | int]:
        return {k: str(v) if isinstance(v, Decimal) else v for k, v in self.__dict__.items()}

    def days_for(self, code: str) -> int:
        return {CONVERSIONS_DROP: self.conversions_drop_days, CPA_RISE: self.cpa_rise_days, CIRCUIT: 1}[code]


@dataclass(frozen=True)
class Trigger:
    code: str
    days: list[WatchDay]
    reason: str


def last_complete_day(time_zone: str, now: datetime) -> date:
    """Yesterday in the account's zone once its clock passed the evaluation hour, else the day before."""
    local = now.astimezone(ZoneInfo(time_zone))
    behind = 1 if local.hour >= settings.WATCH_EVALUATION_HOUR else 2
    return local.date() - timedelta(days=behind)


def watch_evaluate(watch: Watch, *, now: datetime | None = None) -> Trigger | None:
    """Evaluate the watch's complete days not judged yet; return the trigger if one fired."""
    now = now or timezone.now()
    config = settings_for(watch.tenant)
    thresholds = Thresholds.of(config)
    end = min(last_complete_day(watch.time_zone, now), watch.change_date + timedelta(days=watch.watch_days))
    first = watch.change_date + timedelta(days=1)
    done = set(watch.days.exclude(status=WatchDay.Status.NO_DATA).values_list("date", flat=True))
    pending = [
        first + timedelta(days=n) for n in range((end - first).days + 1) if first + timedelta(days=n) not in done
    ]
    if pending:
        _evaluate_days(watch, pending, thresholds, now)
    trigger = find_trigger(list(watch.days.order_by("date")), thresholds)
    if trigger is not None:
        return trigger if _mark_triggered(watch, trigger, now) else None
    window_end = watch.change_date + timedelta(days=watch.watch_days)
    settled = not watch.days.filter(status=WatchDay.Status.NO_DATA).exists()
    if end >= window_end and (settled or end >= window_end + timedelta(days=NO_DATA_GRACE_DAYS)):
        Watch.objects.filter(pk=watch.pk, status=Watch.Status.WATCHING).update(status=Watch.Status.COMPLETED)
    return None


def _evaluate_days(watch: Watch, days: list[date], thresholds: Thresholds, now: datetime) -> None:
    ids = counted_entities(watch)
    baseline_start = watch.change_date - timedelta(weeks=watch.baseline_weeks)
    rows = (
        EntityPerformanceDaily.objects.filter(entity_id__in=ids, date__gte=baseline_start, date__lte=max(days))
        .values("date")
        .annotate(spend=Sum("spend"), conversions=Sum("conversions"))
    )
    by_date = {r["date"]: (r["spend"] or Decimal(0), r["conversions"] or Decimal(0)) for r in rows}
    openings = _openings(watch)
    for day in days:
        values = judge_day(watch, day, by_date, openings, thresholds)
        WatchDay.objects.update_or_create(watch=watch, date=day, defaults={**values, "evaluated_at": now})


def counted_entities(watch: Watch) -> list[int]:
    rows = list(watch.entities.filter(rolled_back=False).values_list("entity_id", "entity__parent_id"))
    watched = {entity_id for entity_id, _ in rows}
    return [entity_id for entity_id, parent_id in rows if parent_id not in watched]


def _openings(watch: Watch) -> list[datetime]:
    return list(
        CircuitOpening.objects.filter(connection_id=watch.connection_id, opened_at__gte=watch.changed_at).values_list(
            "opened_at", flat=True
        )
    )


def baseline_dates(watch: Watch, day: date) -> list[date]:
    """The same weekday as ``day`` in each of the ``baseline_weeks`` weeks before the change day."""
    start = watch.change_date - timedelta(weeks=watch.baseline_weeks)
    first = start + timedelta(days=(day.weekday() - start.weekday()) % 7)
    return [
        first + timedelta(weeks=n)
        for n in range(watch.baseline_weeks)
        if first + timedelta(weeks=n) < watch.change_date
    ]


def judge_day(watch: Watch, day: date, by_date: dict, openings: list[datetime], thresholds: Thresholds) -> dict:
    """The ``WatchDay`` fields of one day (see the module docstring for the rules)."""
    values = {"thresholds": thresholds.as_json(), "breaches": [], "circuit_openings_7d": 0}
    values["circuit_openings_7d"] = _openings_within_week(watch, day, openings)
    circuit = values["circuit_openings_7d"] > thresholds.circuit_openings_per_week
    if day not in by_date:
        return {**values, "status": WatchDay.Status.NO_DATA, "breaches": [CIRCUIT] if circuit else []}
    spend, conversions = by_date[day]
    base = [by_date[d] for d in baseline_dates(watch, day) if d in by_date]
    base_spend = sum((s for s, _ in base), Decimal(0))
    base_conversions = sum((c for _, c in base), Decimal(0))
    values.update(spend=spend, conversions=conversions, cpa=_ratio(spend, conversions))
    if not base:
        return {**values, "status": WatchDay.Status.LOW_BASELINE, "breaches": [CIRCUIT] if circuit else []}
    mean_conversions = base_conversions / len(base)
    base_cpa = _ratio(base_spend, base_conversions)
    values.update(baseline_conversions=_q(mean_conversions), baseline_cpa=base_cpa)
    if mean_conversions < thresholds.min_baseline_conversions or base_cpa is None:
        return {**values, "status": WatchDay.Status.LOW_BASELINE, "breaches": [CIRCUIT] if circuit else []}
    breaches = []
    conversions_change = _q((conversions - mean_conversions) / mean_conversions * 100)
    values["conversions_change_pct"] = conversions_change
    if conversions_change < -thresholds.conversions_drop_pct:
        breaches.append(CONVERSIONS_DROP)
    if values["cpa"] is not None:
        values["cpa_change_pct"] = _q((values["cpa"] - base_cpa) / base_cpa * 100)
        if values["cpa_change_pct"] > thresholds.cpa_rise_pct:
            breaches.append(CPA_RISE)
    elif spend > 0:
        breaches.append(CPA_RISE)  # money spent, nothing converted: CPA rose without bound
    if circuit:
        breaches.append(CIRCUIT)
    return {**values, "breaches": breaches, "status": WatchDay.Status.BREACH if breaches else WatchDay.Status.OK}


def _openings_within_week(watch: Watch, day: date, openings: list[datetime]) -> int:
    zone = ZoneInfo(watch.time_zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    start = datetime.combine(day - timedelta(days=6), time(0), zone)
    return sum(1 for at in openings if start <= at < end)


def _ratio(amount: Decimal, count: Decimal) -> Decimal | None:
    return (amount / count).quantize(Decimal("0.0001"), ROUND_HALF_EVEN) if count else None


def _q(value: Decimal) -> Decimal:
    return value.quantize(PCT, ROUND_HALF_EVEN)


def find_trigger(days: list[WatchDay], thresholds: Thresholds) -> Trigger | None:
    """The first rule whose breach ran on enough consecutive calendar days."""
    for code in (CONVERSIONS_DROP, CPA_RISE, CIRCUIT):
        needed = thresholds.days_for(code)
        run: list[WatchDay] = []
        for day in days:
            consecutive = run and (day.date - run[-1].date).days == 1
            if code in (day.breaches or []):
                run = [*run, day] if consecutive else [day]
                if len(run) >= needed:
                    return Trigger(code=code, days=run, reason=describe(code, run, thresholds))
            else:
                run = []
    return None


def describe(code: str, days: list[WatchDay], thresholds: Thresholds) -> str:
    span = f"{days[0].date} to {days[-1].date}" if len(days) > 1 else f"{days[0].date}"
    if code == CONVERSIONS_DROP:
        figures = ", ".join(f"{d.conversions_change_pct} %" for d in days)
        return (
            f"conversions were down more than {thresholds.conversions_drop_pct} % against the pre-change baseline "
            f"for {len(days)} consecutive days ({span}: {figures})"
        )
    if code == CPA_RISE:
        figures = ", ".join(f"{d.cpa_change_pct} %" if d.cpa_change_pct is not None else "no conversions" for d in days)
        return (
            f"CPA was up more than {thresholds.cpa_rise_pct} % against the pre-change baseline "
            f"for {len(days)} consecutive days ({span}: {figures})"
        )
    return (
        f"the connection's circuit breaker opened {days[-1].circuit_openings_7d} times within 7 days after the change "
        f"(more than {thresholds.circuit_openings_per_week})"
    )


def _mark_triggered(watch: Watch, trigger: Trigger, now: datetime) -> bool:
    return (
        Watch.objects.filter(pk=watch.pk, status=Watch.Status.WATCHING).update(
            status=Watch.Status.TRIGGERED, trigger_code=trigger.code, trigger_reason=trigger.reason, triggered_at=now
        )
        == 1
    )


# Restoring ----------------------------------------------------------------------------------


def watch_restore(watch: Watch) -> Watch:
    """Create (once) the restoring scenario of a triggered watch, preflight it, deploy it in
    autopilot, and alert. Safe to run again after a crash at any step."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("watch_restore reads the platform (preflight): call it outside transaction.atomic.")
    watch.refresh_from_db()
    if watch.status != Watch.Status.TRIGGERED:
        return watch
    config = settings_for(watch.tenant)
    if watch.restoring_scenario_id is None:
        _restoring_scenario(watch)
    scenario = watch.restoring_scenario
    mode = WatchMode.AUTOPILOT if config.watch_mode == WatchMode.AUTOPILOT else WatchMode.ASSIST
    note = ""
    try:
        scenario_preflight(scenario=scenario, actor=None, mode=mode)
    except DomainError as exc:
        note = f"The preflight of the restoring scenario failed: {exc.message} Run it again from the scenario page."
    if not note and mode == WatchMode.AUTOPILOT:
        note = _autopilot_deploy(watch, config)
    Watch.objects.filter(pk=watch.pk).update(restore_note=note, restore_attempted_at=timezone.now())
    watch.refresh_from_db()
    _alert(watch, mode, note)
    return watch


def _restoring_scenario(watch: Watch) -> None:
    items = []
    for row in watch.entities.filter(rolled_back=False).select_related("entity__connection", "entity__parent"):
        targets = {f: _target(f, v) for f, v in row.before.items() if _target(f, v) is not None}
        if targets:
            items.append(TargetItem(entity=row.entity, targets=targets))
    scenario = scenario_create(
        tenant=watch.tenant,
        actor=None,
        name=f"Restore {_subject(watch)} (post-change watch)"[:200],
        items=items,
        notes=restore_notes(watch),
        source_plan_id=f"watch-{watch.pk}",
        reason=f"post-change watch #{watch.pk} triggered",
    )
    Watch.objects.filter(pk=watch.pk, restoring_scenario=None).update(restoring_scenario=scenario)
    watch.refresh_from_db()


def _target(field: str, value) -> Decimal | str | None:
    if value in (None, ""):
        return None
    if field == "status":
        return value if value in ("active", "paused") else None  # a removed entity cannot be restored
    return Decimal(str(value))


def _subject(watch: Watch) -> str:
    return f"deployment #{watch.deployment_id}" if watch.deployment_id else f"action #{watch.action_id}"


def restore_notes(watch: Watch) -> str:
    return (
        f"The post-change watch of {_subject(watch)} on {watch.connection.name} triggered: {watch.trigger_reason}. "
        f"This scenario puts back the values from before that change. Rollback instructions expire "
        f"{settings.ROLLBACK_VALID_HOURS} hours after execution, but this trigger fired "
        f"{(watch.triggered_at.date() - watch.change_date).days} days after the change: restoring is therefore a "
        "new change, checked by a fresh preflight and the safety gate like any other."
    )


def _autopilot_deploy(watch: Watch, config: ObservabilitySettings) -> str:
    actor = config.autopilot_actor
    if actor is None:
        return "Autopilot has no approver who consented to deploy restoring scenarios; a person must deploy it."
    try:
        entitlement_check_feature(tenant=watch.tenant, feature=Feature.AUTOPILOT)
        result = deployment_create(
            scenario=watch.restoring_scenario, actor=actor, mode="live", idempotency_key=f"watch-{watch.pk}-restore"
        )
    except DomainError as exc:
        return f"Autopilot could not deploy the restoring scenario: {exc.message} A person must deploy it."
    deployment_id = result.response["id"]
    Watch.objects.filter(pk=watch.pk).update(status=Watch.Status.RESTORING, restoring_deployment_id=deployment_id)
    return f"Autopilot deployed the restoring scenario as deployment #{deployment_id} (as {actor.username})."


def _alert(watch: Watch, mode: str, note: str) -> None:
    deployed = watch.status == Watch.Status.RESTORING
    scenario_url = reverse("admin:scenarios_scenario_change", args=[watch.restoring_scenario_id])
    next_step = note or (
        f"Review and deploy the restoring scenario “{watch.restoring_scenario.name}” ({scenario_url}); "
        "it waits for approval."
    )
    message = (
        f"The post-change watch of {_subject(watch)} on {watch.connection.name} triggered: {watch.trigger_reason}. "
        f"{next_step} Rollback instructions expire after {settings.ROLLBACK_VALID_HOURS} hours; the restoring scenario "
        "is what puts the pre-change values back days later, through preflight and the safety gate."
    )
    alert_raise(
        Condition(
            kind=AlertKind.WATCH_TRIGGERED,
            severity=Severity.WARNING if deployed else Severity.CRITICAL,
            dedup_key=dedup_key(AlertKind.WATCH_TRIGGERED, watch.tenant_id, watch.pk),
            title=f"Watch triggered for {_subject(watch)} on {watch.connection.name}",
            message=message,
            tenant_id=watch.tenant_id,
            connection_id=watch.connection_id,
            deployment_id=watch.deployment_id,
            action_id=watch.action_id,
            details={
                "watch": watch.pk,
                "trigger": watch.trigger_code,
                "mode": mode,
                "restoring_scenario": watch.restoring_scenario_id,
                "restoring_deployment": watch.restoring_deployment_id,
            },
        )
    )


def watch_restore_deployed(deployment_id: int) -> int:
    """A restoring scenario was deployed (by a person in assist mode, or autopilot) and finished."""
    deployment = Deployment.objects.filter(pk=deployment_id, mode=Deployment.Mode.LIVE).first()
    if deployment is None or deployment.scenario_id is None:
        return 0
    done = 0
    for watch in Watch.objects.filter(
        restoring_scenario_id=deployment.scenario_id, status__in=[Watch.Status.TRIGGERED, Watch.Status.RESTORING]
    ):
        Watch.objects.filter(pk=watch.pk).update(status=Watch.Status.RESTORING, restoring_deployment=deployment)
        key = dedup_key(AlertKind.WATCH_TRIGGERED, watch.tenant_id, watch.pk)
        done += alert_resolve_key(key, reason=f"restoring deployment #{deployment.pk} finished ({deployment.status})")
    return done


def watches_due() -> list[Watch]:
    return list(Watch.objects.filter(status=Watch.Status.WATCHING).select_related("tenant", "connection"))


def watches_to_restore() -> list[Watch]:
    return list(Watch.objects.filter(status=Watch.Status.TRIGGERED, restore_attempted_at=None))
