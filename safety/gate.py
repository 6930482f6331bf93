"""The doors of the one safety gate: each change passes here, whatever asked for it.

- ``gate_recommendation`` (proposing an action): value sanity; guardrails are judged on
  approval;
- ``gate_approval`` (approving, re-approving): four-eyes, value sanity, the one-entity
  preflight and the critical-breach rule; the execution policy sets ``next_attempt_at``;
- ``gate_execute`` (Execute now): value sanity, preflight, critical-breach rule;
- ``gate_rollback`` (rolling an action back): the same for the values it restores;
- ``gate_deployment_rollback`` (rolling a deployment back): ``gate_rollback`` for all of
  its actions at once (value sanity, one preflight read per connection, the
  critical-breach rule; nothing is rolled back when one action is refused);
- ``gate_deploy_live`` (a live deploy, a retry of its failed entities): four-eyes and
  value sanity; the deploy judges its scenario preflight with ``deploy_override`` and
  schedules its actions with ``schedule_deployment_actions``;
- ``gate_override_approval`` (the second person on an override): four-eyes;
- ``gate_autopilot`` (the planner's deploy): value sanity and a fresh preflight without
  any critical breach (autopilot never overrides).

A single action gets a one-entity preflight (``scenarios.services.preflight``: the same
document, rules and guardrails as a scenario's), stored as a ``PreflightRun`` linked to
the action. A fresh one (its reads finished within its platform's limit,
``PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM``; same targets, the
mirror still showing its before-values, the policy unchanged since, and the same verdict
of the time rules now) is reused; otherwise the platform is read again, outside any
transaction.

The critical-breach rule is the live deploys' rule: a critical breach refuses the change
(``CriticalBreaches``, HTTP 409) unless an approved override covers it; an override is
requested with a reason by someone with the override permission and approved by a
second person (``safety.overrides``). An
override covers the breaches (code, entity, field) of the preflight it was requested on,
and later preflights of the same action with the same targets whose critical breaches
are among them; a deployment's approved override also covers its own actions.

An entity missing on the platform is not a breach to override: approving or executing a
change to it is refused (``InvalidState``), and a rollback of it goes to the worker, which
records why a removed entity cannot be rolled back.

Judging without writing: ``gate_approval``, ``gate_execute`` and ``gate_rollback`` take
``previews``, the unsaved one-entity preflights of ``actions_preflight_preview`` by action
id. With them the gate judges those runs (or, for an action without one, reads a new
unsaved one) and stores nothing, so a confirmation page's verdicts are the gate's own
rules applied to what the page shows; without them it stores the preflight it judges.

The time rules (change window, blackout date) are judged for the moment the change is
sent: at once for "execute on approval" and Execute now; an approval whose execution
policy schedules it into the next change window, or leaves it for Execute, defers them
to that moment (the schedule avoids them, or Execute judges them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Prefetch
from django.utils import timezone

from actions.changes import ParamsError, target_values
from actions.models import Action, ActionStatus, ActionType
from budgetradar.entitlements import Feature, entitlement_check_feature
from budgetradar.errors import DomainError, InvalidState, ValidationFailed
from budgetradar.tenancy import require_perm, require_same_tenant
from platforms.models import PlatformConnection, PlatformEntity
from platforms.money import quantize
from platforms.types import Field
from safety.four_eyes import action_authors, four_eyes_check, four_eyes_refusal, override_authors, scenario_authors
from safety.schedule import ExecutionPlan, execution_plan
from safety.values import ValueRefused, check_money
from scenarios.models import GuardrailOverride, GuardrailPolicy, PreflightRun, Scenario
from scenarios.selectors import override_state
from scenarios.services import guardrails as g
from scenarios.services.items import TARGET_FIELDS, TargetItem, items_of_scenario
from scenarios.services.preflight import (
    PreflightFailed,
    new_run_id,
    preflight_age_rule,
    preflight_breaches,
    preflight_each,
    preflight_each_preview,
    preflight_entities,
    preflight_is_fresh,
)

Breach = dict[str, Any]
TIME_RULES = frozenset({"change_window", "blackout_date"})
MONEY_TARGETS = ("daily_budget", "lifetime_budget", "bid")
MIRROR_FIELDS = ("status", "daily_budget", "lifetime_budget", "bid")
# The param that carries each target, per action type (for errors that name the field).
PARAM_OF = {
    ActionType.ADJUST_BUDGET: {"daily_budget": "new_budget", "lifetime_budget": "new_budget"},
    ActionType.ADJUST_BID: {"bid": "new_bid"},
}


class CriticalBreaches(DomainError):
    """Critical guardrail breaches stand and no approved override covers them (HTTP 409)."""

    code = "critical_breaches"
    http_status = 409


# Verdicts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the guardrails said about one change at one door."""

    preflight: PreflightRun
    blocking: list[Breach]
    deferred: list[Breach]
    override: GuardrailOverride | None

    def note(self) -> str:
        """A sentence for the audit trail: the override used and the rules deferred."""
        parts = []
        if self.override is not None:
            override = self.override
            parts.append(
                f"{len(self.blocking)} critical guardrail breach{'es' if len(self.blocking) != 1 else ''} "
                f"overridden by override #{override.pk} (“{override.reason}”, requested by "
                f"{override.requested_by}, approved by {override.approved_by})."
            )
        if self.deferred:
            codes = ", ".join(sorted({b["code"] for b in self.deferred}))
            parts.append(f"Time rules ({codes}) are judged when it runs.")
        return " ".join(parts)


@dataclass(frozen=True)
class Approval:
    """The gate's decision on an approval: the guardrail verdict and the execution plan."""

    verdict: Verdict
    plan: ExecutionPlan
    entity: PlatformEntity = field(repr=False)

    def approve_args(self) -> dict:
        """The approval's facts for ``Action.approve``: the baseline the preflight saw, and
        when it runs (the execution policy's next attempt and its reason)."""
        return {
            "baseline_state": baseline_of(self.verdict.preflight, self.entity),
            "next_attempt_at": self.plan.run_at,
            "wait_reason": self.plan.wait_reason[:500],
        }

    def message(self, base: str) -> str:
        """``base`` followed by what the gate decided (for the execution log)."""
        return " ".join(part for part in (base, self.verdict.note(), self.plan.sentence()) if part)


# Doors -----------------------------------------------------------------------------------


def gate_recommendation(*, entity: PlatformEntity, action_type: str, params: dict[str, Any]) -> None:
    """Value sanity of a proposed action; ``ParamsError`` naming ``params.<name>``.

    Guardrails are judged on approval, against the platform as it is then.
    """
    try:
        _check_targets(entity, _targets(action_type, params), lambda name: _param_field(action_type, name))
    except ValueRefused as exc:
        raise ParamsError(exc.field, exc.message) from None


def gate_approval(
    *, action: Action, actor, now: datetime | None = None, previews: dict[int, PreflightRun] | None = None
) -> Approval:
    """Four-eyes, value sanity, the one-entity preflight and the critical-breach rule.

    Refuses with ``PermissionDenied`` (four-eyes), ``ValidationFailed`` (a value no
    change may set), ``PreflightFailed`` (the platform could not be read) or
    ``CriticalBreaches``. Call it outside any transaction, before approving; apply the
    returned decision to the action in the approving transaction. With ``previews`` it
    writes nothing (see the module docstring).
    """
    now = now or timezone.now()
    four_eyes_check(
        tenant=action.tenant,
        actor=actor,
        authors=action_authors(action),
        what=f"action #{action.pk}",
        doing="approve it",
    )
    policy = g.policy_for(action.tenant, action.connection)
    plan = execution_plan(connection=action.connection, policy=policy, now=now)
    targets = action_targets(action)
    verdict, entity = _verdict(action, targets, actor, policy, runs_now=plan.runs_now, now=now, previews=previews)
    return Approval(verdict=verdict, plan=plan, entity=entity)


def gate_execute(
    *, action: Action, actor, now: datetime | None = None, previews: dict[int, PreflightRun] | None = None
) -> Verdict:
    """Execute now: value sanity, the one-entity preflight and the critical-breach rule for
    a change sent at once (with ``previews``, writing nothing)."""
    now = now or timezone.now()
    policy = g.policy_for(action.tenant, action.connection)
    targets = action_targets(action)
    verdict, _entity = _verdict(action, targets, actor, policy, runs_now=True, now=now, previews=previews)
    return verdict


def gate_rollback(
    *, action: Action, actor, now: datetime | None = None, previews: dict[int, PreflightRun] | None = None
) -> Verdict:
    """Rolling back is a change too: value sanity of the values it restores, a one-entity
    preflight of going back to them, and the critical-breach rule (with ``previews``,
    writing nothing)."""
    now = now or timezone.now()
    policy = g.policy_for(action.tenant, action.connection)
    targets = rollback_targets(action)
    verdict, _entity = _verdict(
        action, targets, actor, policy, runs_now=True, now=now, rollback=True, previews=previews
    )
    return verdict


def gate_deployment_rollback(*, actions: Sequence[Action], actor, now: datetime | None = None) -> list[Verdict]:
    """``gate_rollback`` for many actions (a deployment's): every restored value sane, one
    batch of one-entity preflights (each connection read once), and for each action the
    critical-breach rule with its own or its deployment's approved override.

    All or nothing: when any action is refused, the refusal names it (and how many more)
    and nothing is rolled back.
    """
    now = now or timezone.now()
    actions = list(actions)
    if not actions:
        return []
    entities = _loaded_entities(actions)
    errors: dict[str, str] = {}
    for action in actions:
        try:
            _check_targets(entities[action.entity_id], rollback_targets(action), lambda n, a=action: f"{a.pk}.{n}")
        except ValueRefused as exc:
            errors[exc.field] = f"Action #{action.pk}: {exc.message}"
    if errors:
        raise ValidationFailed(
            f"{len(errors)} restored value{'s' if len(errors) != 1 else ''} no change may set, so nothing was "
            f"rolled back: {next(iter(errors.values()))}",
            details=errors,
        )
    runs = _preflights([(a, rollback_targets(a)) for a in actions], actor, now=now, reuse=True, entities=entities)
    failed = [run for run in runs if run.status != PreflightRun.Status.SUCCEEDED]
    if failed:
        raise PreflightFailed(
            f"The guardrails of {len(failed)} rollback{'s' if len(failed) != 1 else ''} could not be checked, "
            f"because preflight {failed[0].run_id} failed: {failed[0].error_message} Nothing was rolled back; "
            "try again once the platform answers.",
            details={"preflights": [run.run_id for run in failed]},
        )
    verdicts, refused = [], []
    for action, run in zip(actions, runs, strict=True):
        blocking = [b for b in critical_breaches(run) if b["code"] != "entity_missing"]
        override = _covering_override(action, run, blocking) if blocking else None
        if blocking and override is None:
            refused.append((action, run, blocking))
        verdicts.append(Verdict(preflight=run, blocking=blocking, deferred=[], override=override))
    if refused:
        action, run, blocking = refused[0]
        more = f" ({len(refused) - 1} more action{'s' if len(refused) != 2 else ''} refused likewise)"
        raise _refusal(
            f"Rolling back action #{action.pk} on {entities[action.entity_id].name}{more if len(refused) > 1 else ''}",
            run,
            blocking,
            advice=f"Nothing was rolled back. Request an override of preflight {run.run_id} with a reason (a second "
            "person with the override permission approves it), or roll the other actions back one by one.",
        )
    return verdicts


def gate_deploy_live(*, scenario: Scenario, actor) -> None:
    """A live deploy (or a retry of its failed entities): four-eyes on the scenario's
    authors and value sanity of every item; the scenario's preflight and its critical
    breaches are judged by the deploy itself with ``deploy_override``."""
    refused = deploy_four_eyes_refusal(scenario=scenario, actor=actor)
    if refused is not None:
        raise refused
    _check_scenario_values(scenario, doing="deployed")


def deploy_four_eyes_refusal(*, scenario: Scenario, actor) -> DomainError | None:
    """Four-eyes on deploying ``scenario`` live: the refusal, or None (reads nothing else),
    for the deploy itself and for its confirmation page to say before anyone clicks."""
    return four_eyes_refusal(
        tenant=scenario.tenant,
        actor=actor,
        authors=scenario_authors(scenario),
        what=f"scenario {scenario.name}",
        doing="deploy it live",
    )


def gate_override_approval(*, override: GuardrailOverride, actor) -> None:
    """Four-eyes on the second approver of an override: not an author of what it lets through."""
    preflight = override.preflight
    what = f"action #{preflight.action_id}" if preflight.action_id else f"scenario {preflight.scenario}"
    four_eyes_check(
        tenant=override.tenant,
        actor=actor,
        authors=override_authors(override),
        what=what,
        doing="approve an override of its guardrail breaches",
    )


def gate_autopilot(*, scenario: Scenario, preflight: PreflightRun) -> None:
    """The planner's door, before it deploys a plan without a person.

    Guarantees: the plan includes autopilot (402 otherwise); every value is sane; the
    preflight is the scenario's own, succeeded and fresh (``preflight_is_fresh``: its
    reads finished within its platforms' limit); and it has no critical breach at all — autopilot never
    overrides, so a refusal (``CriticalBreaches``) means the plan falls back to assist.
    """
    entitlement_check_feature(tenant=scenario.tenant, feature=Feature.AUTOPILOT)
    _check_scenario_values(scenario, doing="deployed by autopilot")
    if (
        preflight.scenario_id != scenario.pk
        or not preflight_is_fresh(preflight)
        or scenario.updated_at > preflight.created_at
    ):
        raise InvalidState(
            f"Autopilot needs a succeeded preflight of scenario {scenario.name} newer than its last change and at "
            f"most {preflight_age_rule(preflight)} old; {preflight.run_id} is not.",
            code="preflight_stale",
        )
    blocking = critical_breaches(preflight)
    if blocking:
        raise _refusal(
            f"Autopilot cannot deploy scenario {scenario.name}",
            preflight,
            blocking,
            advice="Autopilot never overrides guardrails: the plan falls back to assist, where a person decides.",
        )


def deploy_override(*, preflight: PreflightRun, override_id: int | None) -> GuardrailOverride | None:
    """The live deploy's critical-breach rule: the approved override of ``preflight`` that
    covers its blocking critical breaches (None when none block), else ``CriticalBreaches``."""
    blocking = deploy_blocking(preflight)
    if not blocking:
        return None
    override = preflight.overrides.filter(pk=override_id).first() if override_id else None
    if override is None or not override.approved:
        raise _refusal("The deploy", preflight, blocking, pending=override is not None)
    return override


def deploy_blocking(preflight: PreflightRun, *, now: datetime | None = None) -> list[Breach]:
    """The critical breaches of a scenario's preflight that block deploying it live now.

    The time rules (change window, blackout date) block only when some changed
    connection's execution policy sends its changes at once; when every one of them waits
    (for the next change window, or for Execute) they are judged then.
    """
    criticals = critical_breaches(preflight)
    if not any(b["code"] in TIME_RULES for b in criticals):
        return criticals
    if any(plan.runs_now for _connection, plan in deploy_plans(preflight, now=now)):
        return criticals
    return [b for b in criticals if b["code"] not in TIME_RULES]


def deploy_plans(preflight: PreflightRun, *, now: datetime | None = None) -> list[tuple[str, ExecutionPlan]]:
    """What each connection with changes in a scenario's preflight would do with them if
    deployed ``now``: (connection name, execution plan), by name."""
    now = now or timezone.now()
    changed = {c["connection_id"] for c in (preflight.payload or {}).get("connections", []) if c.get("changed")}
    connections = list(PlatformConnection.objects.filter(pk__in=changed).select_related("tenant").order_by("name"))
    policies = g.policies_for(tenant=preflight.tenant, connections=connections)
    return [(c.name, execution_plan(connection=c, policy=policies[c.pk], now=now)) for c in connections]


def schedule_deployment_actions(actions: Sequence[Action], *, now: datetime) -> None:
    """Set ``next_attempt_at`` and ``wait_reason`` of a live deploy's new (unsaved) actions
    from each connection's execution policy: one policy query for the deployment."""
    if not actions:
        return
    tenant = actions[0].tenant
    connections = PlatformConnection.objects.select_related("tenant").in_bulk({a.connection_id for a in actions})
    policies = g.policies_for(tenant=tenant, connections=connections.values())
    plans = {pk: execution_plan(connection=c, policy=policies[pk], now=now) for pk, c in connections.items()}
    for action in actions:
        for name, value in plans[action.connection_id].fields().items():
            setattr(action, name, value)


# The one-entity preflight of actions ---------------------------------------------------------


def action_targets(action: Action) -> dict[str, Decimal | str]:
    """The preflight targets of an action (targeting and schedule changes have none)."""
    try:
        values = target_values(action.action_type, action.params or {})
    except (KeyError, TypeError, ValueError, ArithmeticError):
        raise ValidationFailed(
            f"Action #{action.pk} has params its type cannot read; propose it again.",
            details={"params": f"not valid for {action.action_type}"},
        ) from None
    return {str(f): (str(v) if f == Field.STATUS else v) for f, v in values.items() if str(f) in TARGET_FIELDS}


def rollback_targets(action: Action) -> dict[str, Decimal | str]:
    """The values a rollback restores, as preflight targets."""
    targets: dict[str, Decimal | str] = {}
    for change in (action.rollback_params or {}).get("changes", []):
        name, value = change.get("field"), change.get("value")
        if name in TARGET_FIELDS and value is not None:
            targets[name] = str(value) if name == "status" else Decimal(str(value))
    return targets


def actions_preflight(
    *, actions: Iterable[Action], actor, rollback: bool = False, reuse: bool = True, now: datetime | None = None
) -> dict[int, PreflightRun]:
    """The one-entity preflight of each action (of its rollback with ``rollback``): a
    fresh stored one when ``reuse`` allows, else new ones, reading each connection once.

    For pages that show the preflight before a person confirms (so confirming reuses
    what they saw) and for the API's "preflight this action". Failed reads are stored
    as failed runs, never raised.
    """
    now = now or timezone.now()
    actions = list(actions)
    wanted = [(a, rollback_targets(a) if rollback else action_targets(a)) for a in actions]
    return {run.action_id: run for run in _preflights(wanted, actor, now=now, reuse=reuse)}


def actions_preflight_preview(
    *, actions: Iterable[Action], actor, rollback: bool = False, now: datetime | None = None
) -> dict[int, PreflightRun]:
    """What ``actions_preflight`` would give each action, writing nothing: a fresh stored
    run when there is one, else an unsaved run of a live read (``preflight_each_preview``:
    no run stored, the mirror left as it is). For confirmation pages, which read the live
    value before a person confirms but must not write on a GET; confirming runs the gate,
    which stores the preflight it judges. Failed reads are failed unsaved runs, never raised.
    """
    now = now or timezone.now()
    actions = list(actions)
    wanted = [(a, rollback_targets(a) if rollback else action_targets(a)) for a in actions]
    return {run.action_id: run for run in _preflights(wanted, actor, now=now, reuse=True, store=False)}


def action_preflight_request(*, action: Action, actor) -> PreflightRun:
    """A new one-entity preflight of the action now (the "Preflight" button and API)."""
    require_same_tenant(actor, action.tenant, what="action")
    require_perm(actor, "scenarios.run_preflight", doing="run preflights")
    rollback = action.status in (ActionStatus.SUCCEEDED, ActionStatus.PARTIALLY_EXECUTED)
    return actions_preflight(actions=[action], actor=actor, rollback=rollback, reuse=False)[action.pk]


def preflights_prefetch() -> Prefetch:
    """What a page or a response of many actions prefetches so ``latest_preflight`` and
    ``preflight_summary`` cost no query per action."""
    overrides = GuardrailOverride.objects.select_related("requested_by", "approved_by", "rejected_by")
    runs = PreflightRun.objects.prefetch_related(Prefetch("overrides", overrides), "entity_documents")
    return Prefetch("preflights", queryset=runs)


def latest_preflight(action: Action) -> PreflightRun | None:
    """The action's newest one-entity preflight (from a prefetch of ``preflights`` when there is one)."""
    runs = list(action.preflights.all())
    return max(runs, key=lambda r: (r.created_at, r.pk), default=None)


def preflight_summary(run: PreflightRun | None) -> dict[str, Any] | None:
    """An action's one-entity preflight as the API and the action page show it: before,
    after, the changed fields with delta and forecast, every breach, and its overrides
    with their state (``override_summary``; ``run.overrides`` prefetched with their people)."""
    if run is None:
        return None
    document = run.payload or {}
    entity = next(iter(preflight_entities(run)), {})
    overrides = run.overrides.all() if run.pk is not None else []  # an unsaved preview has none
    changes = [change for section in entity.get("sections", {}).values() for change in section if change["changed"]]
    shown = ("field", "label", "before", "after", "delta", "percent_delta", "unit", "forecast_delta", "breaches")
    return {
        "run_id": run.run_id,
        "status": run.status,
        "error": run.error_message or None,
        "generated_at": document.get("generated_at"),
        "targets": run.inputs[0]["targets"] if run.inputs else {},
        "change_type": entity.get("change_type"),
        "live_found": entity.get("live_found"),
        "before": entity.get("before"),
        "after": entity.get("after"),
        "changes": [{name: change.get(name) for name in shown} for change in changes],
        "forecast": entity.get("forecast"),
        "forecast_status": entity.get("forecast_status"),
        "breaches": preflight_breaches(run),
        "has_critical": run.has_critical,
        "overrides": [override_summary(o) for o in sorted(overrides, key=lambda o: o.pk)],
    }


def override_summary(override: GuardrailOverride) -> dict[str, Any]:
    """An override as the API and the action page show it: its state
    (``scenarios.selectors.override_state``: pending, approved or rejected), who asked
    and why, and who decided and when."""
    return {
        "id": override.pk,
        "state": override_state(override),
        "reason": override.reason,
        "requested_by": override.requested_by.username,
        "requested_at": override.created_at.isoformat(),
        "approved_by": override.approved_by.username if override.approved_by_id else None,
        "approved_at": override.approved_at.isoformat() if override.approved_at else None,
        "rejected_by": override.rejected_by.username if override.rejected_by_id else None,
        "rejected_at": override.rejected_at.isoformat() if override.rejected_at else None,
    }


def baseline_of(preflight: PreflightRun, entity: PlatformEntity) -> dict[str, Any]:
    """The live values the preflight read (and wrote to the mirror): the drift baseline."""
    before = preflight_entities(preflight)[0]["before"] if preflight.payload else {}
    baseline = {name: before.get(name) for name in MIRROR_FIELDS}
    baseline["synced_at"] = entity.synced_at.isoformat() if entity.synced_at else None
    return baseline


def critical_breaches(preflight: PreflightRun) -> list[Breach]:
    return preflight_breaches(preflight, severity=g.CRITICAL)


def _verdict(
    action: Action,
    targets: dict[str, Decimal | str],
    actor,
    policy: GuardrailPolicy,
    *,
    runs_now: bool,
    now: datetime,
    rollback: bool = False,
    previews: dict[int, PreflightRun] | None = None,
) -> tuple[Verdict, PlatformEntity]:
    entity = _loaded_entities([action])[action.entity_id]
    what = f"Action #{action.pk} on {entity.name}"
    try:
        _check_targets(entity, targets, lambda name: _param_field(action.action_type, name))
    except ValueRefused as exc:
        raise ValidationFailed(f"{what}: {exc.message}", details={exc.field: exc.message}) from None
    run = previews.get(action.pk) if previews is not None else None
    if run is None or _inputs_key(run.inputs) != _inputs_key([TargetItem(entity=entity, targets=targets).as_input()]):
        stored = previews is None  # judging previews stores nothing: a missing one is read unsaved
        [run] = _preflights([(action, targets)], actor, now=now, reuse=True, entities={entity.pk: entity}, store=stored)
    if run.status != PreflightRun.Status.SUCCEEDED:
        raise PreflightFailed(
            f"{what}: the guardrails could not be checked, because the one-entity preflight {run.run_id} failed: "
            f"{run.error_message} Nothing was changed; try again once the platform answers.",
            details={"preflight": run.run_id},
        )
    action.entity = entity  # the refreshed mirror row the preflight wrote
    criticals = critical_breaches(run)
    missing = [b for b in criticals if b["code"] == "entity_missing"]
    if missing and not rollback:  # a fact, not a judgement: nothing to override
        raise InvalidState(f"{what}: {missing[0]['message']}", code="entity_missing", details={"preflight": run.run_id})
    criticals = [b for b in criticals if b["code"] != "entity_missing"]  # a rollback's worker says why it cannot
    deferred = [] if runs_now else [b for b in criticals if b["code"] in TIME_RULES]
    blocking = [b for b in criticals if b not in deferred]
    override = None
    if blocking:
        override = _covering_override(action, run, blocking)
        if override is None:
            pending = run.pk is not None and (  # an unsaved preview has no overrides
                run.overrides.filter(approved_at__isnull=True, rejected_at__isnull=True).exists()
            )
            raise _refusal(what, run, blocking, pending=pending)
    return Verdict(preflight=run, blocking=blocking, deferred=deferred, override=override), entity


def _preflights(
    wanted: Sequence[tuple[Action, dict[str, Decimal | str]]],
    actor,
    *,
    now: datetime,
    reuse: bool,
    entities: dict[int, PlatformEntity] | None = None,
    store: bool = True,
) -> list[PreflightRun]:
    """One run per (action, targets): reused when fresh, else run in one batch per tenant
    (stored, or with ``store=False`` unsaved previews)."""
    if not wanted:
        return []
    entities = entities or _loaded_entities([a for a, _targets in wanted])
    tenant = wanted[0][0].tenant
    connections = {entities[a.entity_id].connection for a, _targets in wanted}
    policies = g.policies_for(tenant=tenant, connections=connections)
    fresh = _fresh_runs(wanted, entities, policies, now) if reuse else {}
    runs: list[PreflightRun] = []
    todo: list[tuple[PreflightRun, TargetItem]] = []
    for action, targets in wanted:
        item = TargetItem(entity=entities[action.entity_id], targets=targets)
        found = fresh.get((action.pk, _inputs_key([item.as_input()])))
        if found is not None:
            runs.append(found)
            continue
        run = PreflightRun(
            tenant=action.tenant,
            run_id=new_run_id(),
            action=action,
            mode=PreflightRun.Mode.MANUAL,
            status=PreflightRun.Status.QUEUED,
            notes=_notes(action),
            inputs=[item.as_input()],
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        runs.append(run)
        todo.append((run, item))
    if todo and store:
        PreflightRun.objects.bulk_create([run for run, _item in todo])
        preflight_each(tenant=tenant, runs=todo, now=now)
    elif todo:
        preflight_each_preview(tenant=tenant, runs=todo, now=now)
    return runs


def _fresh_runs(
    wanted: Sequence[tuple[Action, dict[str, Decimal | str]]],
    entities: dict[int, PlatformEntity],
    policies: dict[int | None, GuardrailPolicy],
    now: datetime,
) -> dict[tuple[int, str], PreflightRun]:
    """Stored runs that still tell the truth, by (action id, inputs): see the module docstring."""
    longest = max([settings.PREFLIGHT_MAX_AGE_MINUTES, *settings.PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM.values()])
    since = now - timedelta(minutes=longest)
    candidates = (
        PreflightRun.objects.filter(
            action_id__in=[a.pk for a, _targets in wanted],
            status=PreflightRun.Status.SUCCEEDED,
            reads_finished_at__gte=since,
        )
        .order_by("-created_at", "-id")
        .prefetch_related("entity_documents")
    )
    found: dict[tuple[int, str], PreflightRun] = {}
    for run in candidates:
        key = (run.action_id, _inputs_key(run.inputs))
        if key in found or not preflight_is_fresh(run, now=now):
            continue
        entity = entities.get(run.inputs[0]["entity"]) if run.inputs else None
        if entity is not None and _still_true(run, entity, policies[entity.connection_id], now):
            found[key] = run
    return found


def _still_true(run: PreflightRun, entity: PlatformEntity, policy: GuardrailPolicy, now: datetime) -> bool:
    doc = preflight_entities(run)[0]
    if not doc["live_found"] or _mirror_values(entity) != {name: doc["before"][name] for name in MIRROR_FIELDS}:
        return False
    if policy.pk is not None and policy.updated_at > run.created_at:
        return False
    if doc["change_type"] == "noop":
        return True
    connection = entity.connection
    account = str(connection)
    judged_now = {
        b["code"]
        for b in (
            g.evaluate_change_window(policy, account=account, now=now, time_zone=connection.time_zone),
            g.evaluate_blackout_date(policy, account=account, now=now, time_zone=connection.time_zone),
        )
        if b is not None
    }
    return judged_now == {b["code"] for b in preflight_breaches(run) if b["code"] in TIME_RULES}


def _covering_override(action: Action, run: PreflightRun, blocking: list[Breach]) -> GuardrailOverride | None:
    """An approved override of this action (or of its deployment) that covers ``blocking``."""
    overrides = list(
        GuardrailOverride.objects.filter(preflight__action=action, approved_at__isnull=False)
        .select_related("preflight", "requested_by", "approved_by")
        .order_by("-approved_at", "-id")
    )
    for override in overrides:
        same_change = override.preflight_id == run.pk or _inputs_key(override.preflight.inputs) == _inputs_key(
            run.inputs
        )
        if same_change and _covers(override.preflight, blocking):
            return override
    deployment = action.deployment if action.deployment_id else None
    if deployment is not None and deployment.override_id is not None:
        override = deployment.override
        if override.approved and _covers(override.preflight, blocking):
            return override
    return None


def _covers(preflight: PreflightRun, blocking: list[Breach]) -> bool:
    covered = {_identity(b) for b in critical_breaches(preflight)}
    return all(_identity(b) in covered for b in blocking)


def _identity(breach: Breach) -> tuple:
    return (breach["code"], breach.get("key"), breach.get("field"))


def _refusal(
    subject: str, preflight: PreflightRun, blocking: list[Breach], *, pending: bool = False, advice: str = ""
) -> CriticalBreaches:
    count = len(blocking)
    state = "an override was requested but is not approved yet" if pending else "no approved override was given"
    shown = " ".join(b["message"] for b in blocking[:3])
    more = f" (and {count - 3} more)" if count > 3 else ""
    advice = advice or (
        f"Request an override of preflight {preflight.run_id} with a reason; a second person with the override "
        "permission must approve it."
    )
    return CriticalBreaches(
        f"{subject}: {count} critical guardrail breach{'es' if count != 1 else ''} "
        f"stand{'s' if count == 1 else ''} and {state}: {shown}{more} {advice}",
        details={"preflight": preflight.run_id, "breaches": blocking},
    )


# Values -----------------------------------------------------------------------------------------


def _targets(action_type: str, params: dict[str, Any]) -> dict[str, Any]:
    """Money targets of normalised params by target field (for value sanity)."""
    out: dict[str, Any] = {}
    if action_type == ActionType.ADJUST_BUDGET:
        field_name = "lifetime_budget" if params.get("budget_type") == "lifetime" else "daily_budget"
        out[field_name] = params.get("new_budget")
    elif action_type == ActionType.ADJUST_BID:
        out["bid"] = params.get("new_bid")
    elif action_type == ActionType.SET_VALUES:
        out.update({name: params[name] for name in MONEY_TARGETS if name in params})
    return out


def _param_field(action_type: str, target: str) -> str:
    return f"params.{PARAM_OF.get(action_type, {}).get(target, target)}"


def _check_targets(entity: PlatformEntity, targets: dict[str, Any], field_name) -> None:
    connection = entity.connection
    for name in MONEY_TARGETS:
        if name in targets and targets[name] is not None:
            check_money(
                targets[name],
                field=field_name(name),
                currency=connection.currency,
                platform=connection.platform,
                subject=f"{entity.name} ({entity.entity_type} {entity.external_id})",
                billable_unit_micros=connection.billable_unit_micros,
            )


def _check_scenario_values(scenario: Scenario, *, doing: str) -> None:
    errors: dict[str, str] = {}
    for index, item in enumerate(items_of_scenario(scenario)):
        try:
            _check_targets(item.entity, item.targets, lambda name, index=index: f"items[{index}].{name}")
        except ValueRefused as exc:
            errors[exc.field] = exc.message
    if errors:
        first = next(iter(errors.values()))
        raise ValidationFailed(
            f"Scenario {scenario.name} sets {len(errors)} value{'s' if len(errors) != 1 else ''} no change may set, "
            f"so nothing was {doing}: {first}",
            details=errors,
        )


# Helpers ----------------------------------------------------------------------------------------


def _loaded_entities(actions: Sequence[Action]) -> dict[int, PlatformEntity]:
    """The actions' mirror rows with connection (and tenant) and parent, one query."""
    ids = {a.entity_id for a in actions}
    return PlatformEntity.objects.select_related("connection__tenant", "parent").in_bulk(ids)


def _mirror_values(entity: PlatformEntity) -> dict[str, Any]:
    currency = entity.connection.currency
    values: dict[str, Any] = {"status": entity.status}
    for name in MONEY_TARGETS:
        amount = getattr(entity, name)
        values[name] = None if amount is None else str(quantize(amount, currency))
    return values


def _inputs_key(inputs: list[dict[str, Any]]) -> str:
    return repr(sorted((row["entity"], sorted(row["targets"].items())) for row in inputs))


def _notes(action: Action) -> str:
    """What explains the change (for the "notes required" rule): the rationale."""
    if action.recommendation_id is not None and action.recommendation.rationale:
        return action.recommendation.rationale
    if action.deployment_id is not None and action.deployment.scenario_id is not None:
        return action.deployment.scenario.notes
    return action.rollback_reason or ""
