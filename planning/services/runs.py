"""Planner runs: a database queue, one running run per connection, retries and modes.

The queue is the ``PlannerRun`` table. ``planner_run_request`` adds a queued row and
enqueues its task after commit; ``planner_run_process`` claims a run by compare-and-set
(``queued`` -> ``running``). The partial unique index "one running run per connection"
makes a second concurrent claim fail in the database, so two runs of one connection
never overlap, whichever workers or machines pick them up; the loser stays queued and is
started when the running one finishes (and by the tick, which also re-queues a run whose
worker died once its lease expired).

A failed attempt is retried ``PLANNER_RETRIES`` times with exponential backoff
(``PLANNER_RETRY_BACKOFF_SECONDS`` x 1, 2, 4); then the run fails, counts towards the
planner breaker and is logged. Platform calls (preflight reads, the deploy's own work)
never happen inside a transaction.

What a run does depends on the mode it runs in (``Outcome``):
- shadow: the plan is recorded; nothing is created or changed;
- assist: a scenario with the plan's items and its preflight (mode assist) awaits a person;
- autopilot: only on an autopilot day, inside the push window, within the daily push
  cap, with entitlement and consent, and for entities not held out; the scenario's
  preflight (mode autopilot) must have no critical breach — those are never overridden
  automatically — and ``deployment_create`` deploys it live as the consenting person.
  Whatever refuses it, the plan falls back to assist with the reason.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task, schedule

from budgetradar import outbox
from budgetradar.errors import Conflict, DomainError, NotFound, ValidationFailed
from budgetradar.tenancy import get_for_user, require_perm, require_same_tenant
from planning.models import (
    AutomationSettings,
    CurveFit,
    DecisionKind,
    FallbackLevel,
    Mode,
    Outcome,
    PlannerRun,
    RunStatus,
    Trigger,
)
from planning.services import automation as auto
from planning.services.decisions import decision_append
from planning.services.planner import Plan, PlanError, PlanRequest, budget_holders, plan_build, plan_external
from platforms.models import PlatformConnection
from scenarios.models import Deployment
from scenarios.services.adpush import scenario_preflight
from scenarios.services.deploy import deployment_create
from scenarios.services.imports import scenario_create
from scenarios.services.items import TargetItem

logger = logging.getLogger(__name__)

FIT_BATCH = 1000


def local_now(connection: PlatformConnection, now: datetime | None = None) -> datetime:
    return (now or timezone.now()).astimezone(ZoneInfo(connection.time_zone))


# Requesting ----------------------------------------------------------------------------


def planner_run_request(
    *,
    connection: PlatformConnection,
    actor,
    trigger: str = Trigger.MANUAL,
    external_plan: list[dict[str, Any]] | None = None,
    external_source: str = "",
    now: datetime | None = None,
) -> PlannerRun:
    """Queue a run of ``connection`` (202 in the API); the task is enqueued after commit.

    Guarantees: a person needs ``planning.run_planner`` in the connection's tenant; at
    most ``PLANNER_QUEUE_LIMIT`` runs wait per connection (409 beyond).
    """
    if actor is not None:
        require_same_tenant(actor, connection.tenant, what="connection")
        require_perm(actor, "planning.run_planner", doing="run the planner")
    with transaction.atomic():
        list(PlatformConnection.objects.select_for_update().filter(pk=connection.pk).values_list("pk", flat=True))
        waiting = PlannerRun.objects.filter(connection=connection, status=RunStatus.QUEUED).count()
        if waiting >= settings.PLANNER_QUEUE_LIMIT:
            raise Conflict(
                f"{waiting} planner runs of {connection.name} are already waiting; wait for them to finish.",
                code="queue_full",
            )
        run = PlannerRun.objects.create(
            tenant_id=connection.tenant_id,
            connection=connection,
            trigger=trigger,
            local_date=local_now(connection, now).date(),
            requested_by=actor if getattr(actor, "is_authenticated", False) else None,
            external_plan=external_plan,
            external_source=external_source,
        )
        transaction.on_commit(lambda: enqueue(run.pk))
    return run


def planner_run_schedule(*, connection: PlatformConnection, now: datetime | None = None) -> PlannerRun | None:
    """The day's scheduled run, created once per local day (None when it already exists)."""
    try:
        with transaction.atomic():
            run = PlannerRun.objects.create(
                tenant_id=connection.tenant_id,
                connection=connection,
                trigger=Trigger.SCHEDULE,
                local_date=local_now(connection, now).date(),
            )
            transaction.on_commit(lambda: enqueue(run.pk))
            return run
    except IntegrityError:
        return None


def enqueue(run_pk: int, *, at: datetime | None = None) -> None:
    if at is None:
        async_task("planning.tasks.planner_run_task", run_pk, task_name=f"planner-run-{run_pk}", group="planning")
        return
    schedule(
        "planning.tasks.planner_run_task",
        run_pk,
        name=f"planner-run-{run_pk}-retry-{at:%Y%m%d%H%M%S}",
        schedule_type=Schedule.ONCE,
        next_run=at,
    )


# Processing ----------------------------------------------------------------------------


def claim(run_pk: int, *, now: datetime | None = None) -> PlannerRun | None:
    """Take a due queued run; None when it is not due, not queued, or its connection is busy."""
    now = now or timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    try:
        with transaction.atomic():
            claimed = PlannerRun.objects.filter(due, pk=run_pk, status=RunStatus.QUEUED).update(
                status=RunStatus.RUNNING,
                started_at=now,
                attempts=F("attempts") + 1,
                lease_expires_at=now + timedelta(seconds=settings.PLANNER_LEASE_SECONDS),
            )
    except IntegrityError:
        return None  # another run of this connection is running: this one waits in the queue
    if claimed != 1:
        return None
    return PlannerRun.objects.select_related("connection__tenant__plan", "tenant").get(pk=run_pk)


def planner_run_process(run_pk: int, *, now: datetime | None = None) -> PlannerRun | None:
    """Claim and execute one run (the task); idempotent: a run that is not queued is left alone."""
    run = claim(run_pk, now=now)
    if run is None:
        return None
    try:
        _execute(run, now=now or timezone.now())
    except Exception as exc:  # every failure is an attempt; the message is kept for people
        logger.warning("planner run %s attempt %s failed: %s", run.pk, run.attempts, exc, exc_info=True)
        _attempt_failed(run, exc, now=now or timezone.now())
    _start_next(run.connection_id, now=now)
    run.refresh_from_db()
    return run


def _attempt_failed(run: PlannerRun, exc: Exception, *, now: datetime) -> None:
    message = exc.message if isinstance(exc, DomainError) else f"{type(exc).__name__}: {exc}"
    if run.attempts <= settings.PLANNER_RETRIES:
        delay = settings.PLANNER_RETRY_BACKOFF_SECONDS * 2 ** (run.attempts - 1)
        at = now + timedelta(seconds=delay)
        updated = PlannerRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.QUEUED, next_attempt_at=at, lease_expires_at=None, error_message=message[:2000]
        )
        if updated:
            transaction.on_commit(lambda: enqueue(run.pk, at=at))
        return
    with transaction.atomic():
        updated = PlannerRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.FAILED,
            outcome=Outcome.FAILED,
            outcome_message=f"Failed after {run.attempts} attempts: {message}"[:2000],
            error_message=message[:2000],
            finished_at=now,
            lease_expires_at=None,
        )
        if updated:
            decision_append(
                connection=run.connection,
                kind=DecisionKind.RUN_FAILED,
                run=run,
                actor="planner",
                outcome={"attempts": run.attempts, "error": message},
            )
            _publish_finished(run, status=RunStatus.FAILED, fallback_level="", error=message)
    if updated:
        automation = auto.automation_for(run.connection)
        auto.breaker_record_failure(automation.pk, reason=message[:200])


def _start_next(connection_id: int, *, now: datetime | None = None) -> None:
    now = now or timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    following = (
        PlannerRun.objects.filter(due, connection_id=connection_id, status=RunStatus.QUEUED)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)
        .first()
    )
    if following is not None:
        enqueue(following)


def runs_reap(*, now: datetime | None = None) -> int:
    """Re-queue runs whose worker died (lease expired); the lost attempt still counts."""
    now = now or timezone.now()
    return PlannerRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).update(
        status=RunStatus.QUEUED, next_attempt_at=now, lease_expires_at=None, error_message="the worker stopped"
    )


def runs_pump(*, now: datetime | None = None) -> int:
    """Enqueue the oldest due queued run of every connection that has no running run."""
    now = now or timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    busy = PlannerRun.objects.filter(status=RunStatus.RUNNING).values("connection_id")
    connections = (
        PlannerRun.objects.filter(due, status=RunStatus.QUEUED)
        .exclude(connection_id__in=busy)
        .values_list("connection_id", flat=True)
        .distinct()
    )
    started = 0
    for connection_id in sorted(set(connections)):
        _start_next(connection_id, now=now)
        started += 1
    return started


# Executing -----------------------------------------------------------------------------


def effective_mode(automation: AutomationSettings, run: PlannerRun) -> str:
    """The mode a run acts in: off acts as assist for a person's or an outside plan."""
    mode = automation.mode
    if mode == Mode.OFF:
        return Mode.ASSIST
    if mode == Mode.AUTOPILOT and automation.breaker_open:
        return Mode.ASSIST
    return mode


def _execute(run: PlannerRun, *, now: datetime) -> None:
    connection = run.connection
    automation = auto.automation_for(connection)
    mode = effective_mode(automation, run)
    held = set()
    if mode == Mode.AUTOPILOT:
        held = auto.held_out(automation, [e.pk for e in budget_holders(connection)])
    request = PlanRequest.from_settings(automation, held_out=held)
    as_of = run.local_date - timedelta(days=1)
    plan = _plan(run, connection, request, as_of)
    _save_fits(run, plan)
    result = _act(run, plan, mode, automation, local_now(connection, now))
    _finish(run, plan, mode, automation, result, now=now)


def _plan(run: PlannerRun, connection, request: PlanRequest, as_of) -> Plan:
    if run.external_plan is not None:
        proposals = {
            int(row["entity_id"]): (Decimal(row["daily_budget"]), row.get("reason", "")) for row in run.external_plan
        }
        return plan_external(connection=connection, request=request, as_of=as_of, proposals=proposals)
    try:
        return plan_build(connection=connection, request=request, as_of=as_of)
    except PlanError as exc:
        raise ValidationFailed(str(exc)) from None


def _save_fits(run: PlannerRun, plan: Plan) -> None:
    CurveFit.objects.filter(run=run).delete()  # a retried attempt replaces its own fits
    rows = []
    for e in plan.entities:
        fit = e.fit
        if fit is None:
            continue
        curve = fit.curve
        spent = e.spend[e.spend > 0]
        rows.append(
            CurveFit(
                tenant_id=run.tenant_id,
                connection_id=run.connection_id,
                entity_id=e.pk,
                run=run,
                status=fit.status,
                date_from=plan.date_from,
                date_to=plan.date_to,
                days_used=fit.days,
                vmax=curve.vmax if curve else None,
                half_saturation=curve.half_saturation if curve else None,
                shape=curve.shape if curve else None,
                adstock=curve.adstock if curve else None,
                r_squared=fit.r_squared,
                confidence=fit.confidence,
                mean_spend=float(spent.mean()) if len(spent) else None,
                max_spend=float(spent.max()) if len(spent) else None,
                spend_ratio=e.ratio,
                value_per_conversion=e.value,
                message=fit.message[:300],
            )
        )
    CurveFit.objects.bulk_create(rows, batch_size=FIT_BATCH)


def _act(run: PlannerRun, plan: Plan, mode: str, automation: AutomationSettings, local: datetime) -> dict[str, Any]:
    """Do what the mode says; returns the outcome fields of the run."""
    if plan.blocked:
        return {"outcome": Outcome.BLOCKED, "message": plan.blocked}
    changes = plan.changes()
    if not changes:
        return {"outcome": Outcome.NO_CHANGE, "message": "Every entity keeps its budget."}
    if mode == Mode.SHADOW:
        return {"outcome": Outcome.SHADOW_RECORDED, "message": f"{len(changes)} changes recorded, none made."}
    if mode == Mode.ASSIST:
        return _assist(run, plan, changes, reason="")
    refusal = _autopilot_refusal(run, automation, local)
    if refusal:
        return _assist(run, plan, changes, reason=refusal)
    changes = _within_cap(run, plan, changes, automation)
    return _autopilot(run, plan, changes, automation)


def _autopilot_refusal(run: PlannerRun, automation: AutomationSettings, local: datetime) -> str:
    refusal = auto.autopilot_refusal(automation)
    if refusal:
        return refusal
    if not auto.is_autopilot_day(automation, run.local_date):
        return f"{run.local_date:%A} is not an autopilot day of the rollout"
    if not auto.in_push_window(automation, local):
        return (
            f"{local:%H:%M} is outside the push window {automation.push_window_start:%H:%M}-"
            f"{automation.push_window_end:%H:%M} ({run.connection.time_zone})"
        )
    if automation.daily_push_cap is not None and _pushed_today(run) >= automation.daily_push_cap:
        return f"today's push cap of {automation.daily_push_cap} changes is used up"
    return ""


def _pushed_today(run: PlannerRun) -> int:
    deployed = PlannerRun.objects.filter(
        connection_id=run.connection_id, local_date=run.local_date, outcome=Outcome.DEPLOYED
    ).exclude(pk=run.pk)
    return sum((r.summary or {}).get("deployed_changes", 0) for r in deployed.only("summary"))


def _within_cap(run: PlannerRun, plan: Plan, changes, automation: AutomationSettings):
    if automation.daily_push_cap is None:
        return changes
    room = automation.daily_push_cap - _pushed_today(run)
    if len(changes) <= room:
        return changes
    ranked = sorted(changes, key=lambda c: (-abs(c[1] - c[0].daily_budget), c[0].pk))
    kept = {entity.pk for entity, _ in ranked[:room]}
    for row in plan.reasoning:
        if row["entity_id"] not in kept and row["proposed_budget"] != row["current_budget"]:
            row["why"] += f" Not pushed: over today's push cap of {automation.daily_push_cap} changes."
    plan.notes.append(f"Only the {room} largest changes were pushed (daily push cap {automation.daily_push_cap}).")
    return [c for c in changes if c[0].pk in kept]


def _scenario(run: PlannerRun, plan: Plan, changes, mode: str):
    if run.scenario_id is None:
        scenario = scenario_create(
            tenant=run.connection.tenant,
            actor=None,
            name=f"Planner: {run.connection.name} {run.local_date} ({mode})",
            items=[TargetItem(entity=entity, targets={"daily_budget": budget}) for entity, budget in changes],
            notes=_notes(plan),
            source_plan_id=f"planner-run-{run.pk}",
            reason=f"proposed by planner run #{run.pk} ({FallbackLevel(plan.fallback_level).label})",
        )
        PlannerRun.objects.filter(pk=run.pk).update(scenario=scenario)
        run.scenario = scenario
    preflight = scenario_preflight(scenario=run.scenario, actor=None, mode=mode)
    PlannerRun.objects.filter(pk=run.pk).update(preflight=preflight)
    return run.scenario, preflight


def _assist(run: PlannerRun, plan: Plan, changes, *, reason: str) -> dict[str, Any]:
    scenario, preflight = _scenario(run, plan, changes, Mode.ASSIST)
    if reason:
        return {
            "outcome": Outcome.FELL_BACK_TO_ASSIST,
            "message": f"Autopilot did not deploy: {reason}. Scenario {scenario.name!r} awaits approval.",
            "scenario": scenario,
            "preflight": preflight,
        }
    return {
        "outcome": Outcome.AWAITING_APPROVAL,
        "message": f"Scenario {scenario.name!r} with {len(changes)} changes awaits approval.",
        "scenario": scenario,
        "preflight": preflight,
    }


def _autopilot(run: PlannerRun, plan: Plan, changes, automation: AutomationSettings) -> dict[str, Any]:
    scenario, preflight = _scenario(run, plan, changes, Mode.AUTOPILOT)
    base = {"scenario": scenario, "preflight": preflight}
    if preflight.has_critical:
        critical = [b for b in preflight.payload.get("breaches", []) if b["severity"] == "critical"]
        return {
            **base,
            "outcome": Outcome.FELL_BACK_TO_ASSIST,
            "message": (
                f"Autopilot did not deploy: {len(critical)} critical guardrail breaches, which are never "
                f"overridden automatically. Scenario {scenario.name!r} awaits a person."
            ),
        }
    try:
        result = deployment_create(
            scenario=scenario,
            actor=automation.consent_by,
            mode="live",
            idempotency_key=f"planner-run-{run.pk}",
        )
    except DomainError as exc:
        return {
            **base,
            "outcome": Outcome.FELL_BACK_TO_ASSIST,
            "message": f"Autopilot did not deploy: {exc.message} Scenario {scenario.name!r} awaits approval.",
        }
    deployment = Deployment.objects.get(pk=result.response["id"])
    return {
        **base,
        "outcome": Outcome.DEPLOYED,
        "deployment": deployment,
        "deployed_changes": len(changes),
        "message": f"Deployed {len(changes)} changes live as deployment #{deployment.pk} "
        f"(consent of {automation.consent_by}).",
    }


def _notes(plan: Plan) -> str:
    summary = plan.summary
    lines = [
        f"Planner ({FallbackLevel(plan.fallback_level).label}), data {plan.date_from} to {plan.date_to}.",
        f"Total daily budget {summary['total_before']} -> {summary['total_after']} {summary['currency']}; "
        f"predicted conversions a day {summary['predicted_conversions_before']} -> "
        f"{summary['predicted_conversions_after']}.",
        *plan.notes,
    ]
    return "\n".join(lines)


def _finish(run: PlannerRun, plan: Plan, mode: str, automation, result: dict[str, Any], *, now: datetime) -> None:
    summary = {**plan.summary, "deployed_changes": result.get("deployed_changes", 0)}
    with transaction.atomic():
        updated = PlannerRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.SUCCEEDED,
            mode=mode,
            outcome=result["outcome"],
            outcome_message=result["message"][:2000],
            fallback_level=plan.fallback_level,
            date_from=plan.date_from,
            date_to=plan.date_to,
            data_hash=plan.data_hash,
            summary=summary,
            reasoning=plan.reasoning,
            deployment=result.get("deployment"),
            finished_at=now,
            lease_expires_at=None,
            error_message="",
        )
        if not updated:
            return  # the lease expired and the run was taken over: the newer attempt records it
        decision_append(
            connection=run.connection,
            kind=DecisionKind.RUN_COMPLETED,
            run=run,
            actor="planner",
            mode=mode,
            fallback_level=plan.fallback_level,
            data_hash=plan.data_hash,
            inputs={
                "date_from": str(plan.date_from),
                "date_to": str(plan.date_to),
                "trigger": run.trigger,
                "request": plan.request.as_dict(),
                "settings": {name: auto._jsonable(getattr(automation, name)) for name in auto.EDITABLE},
                "external_source": run.external_source,
            },
            fits=plan.fits_document(),
            plan={"summary": summary, "changes": [[e.pk, str(b)] for e, b in plan.changes()]},
            reasoning=plan.reasoning,
            outcome={
                "outcome": result["outcome"],
                "message": result["message"],
                "scenario": result["scenario"].pk if result.get("scenario") else None,
                "preflight": result["preflight"].run_id if result.get("preflight") else None,
                "deployment": result["deployment"].pk if result.get("deployment") else None,
            },
        )
        _publish_finished(run, status=RunStatus.SUCCEEDED, fallback_level=plan.fallback_level, error="")
    auto.breaker_record_success(automation.pk)


def _publish_finished(run: PlannerRun, *, status: str, fallback_level: str, error: str) -> None:
    """``planner.run_finished`` for the alerts and metrics (in the run's closing transaction)."""
    outbox.publish(
        "planner.run_finished",
        tenant_id=run.tenant_id,
        payload={
            "run_id": run.pk,
            "connection_id": run.connection_id,
            "status": str(status),
            "fallback_level": str(fallback_level or ""),
            "error": error[:500],
        },
    )


# Selectors -----------------------------------------------------------------------------


def run_for_user(*, user, pk) -> PlannerRun:
    return get_for_user(PlannerRun.objects.select_related("connection"), user, pk)


def connection_for_user(*, user, pk) -> PlatformConnection:
    try:
        return get_for_user(PlatformConnection.objects.select_related("tenant__plan"), user, pk)
    except NotFound:
        raise NotFound(f"No connection with id {pk}.") from None
