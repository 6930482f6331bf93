"""Deploying a scenario: a dry run (validate-only on the platforms) or a live push.

Dry run: a fresh preflight plus the platforms' own validate-only calls; nothing changes
anywhere; per-entity results are ``validated``, ``failed``, ``skipped`` (no change) or
``blocked`` (entity missing). The platform calls happen before the short write, outside
any transaction.

Live: refused unless the safety gate lets it through (``safety.gate.gate_deploy_live``:
four-eyes on the scenario's authors, value sanity of every item), the plan includes live
deploy (402), the latest preflight's reads finished within its platforms' limit
(``preflight_is_fresh``: ``PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM``) and it is newer than
the scenario's last change, no connection's circuit is open, and there are no critical
breaches — or a second person approved an override of them
(``safety.gate.deploy_override``). Otherwise one ``Deployment`` owns one approved
``set_values`` action per changed entity, with the preflight's live values as the
baseline (so a change made on the platform since is ``stale``, not overwritten), due
when each connection's execution policy says (``safety.schedule``), and the engine
runs them after commit. Answer 202.

Where the line is: a live deploy that changes at most ``DEPLOY_SYNC_MAX_ENTITIES``
entities creates its actions and results in the request (the 202 already lists them);
a larger one is saved ``queued`` with ``prepared_at`` empty and the rest — the actions,
the results, the dispatch — runs in the django-q2 task ``deployment_prepare_task``
(``deployment_prepare``), enqueued after commit with the deployment's id. The request
still checks everything cheap first (gate, entitlement, freshness, override, circuits),
so a refusal is still the request's answer; what the worker finds (a circuit opened
meanwhile, the action quota used up) fails the deployment with ``error_message``.

A dry run and a retry of the failed entities follow the same line, counted before
anything is read: a dry run of a scenario of more than ``DEPLOY_SYNC_MAX_ENTITIES``
items, or a retry of more failed (or stale) entities than that, saves a ``queued``
preflight of those items (``preflight_queue``: nothing read yet) and a ``queued``
deployment with ``prepared_at`` empty, answers 202 with it, and leaves the reads to a
django-q2 task enqueued after commit (``deployment_dry_run_task`` /
``deployment_retry_task``). The task runs the preflight outside any transaction
(``ad_push_process``), then — for a dry run — the validate-only calls, also outside
one, and writes the results in one short transaction; for a retry, the critical-breach
rule on the new preflight and ``deployment_prepare``. A preflight that fails, or a
refusal found then, fails the deployment with ``error_message``. At or below the line
both run in the request as before (a dry run answers 200 with its results).

Both take an idempotency key: the same key and request return the first answer and run
nothing again; the same key for another request is a 409; concurrent duplicates make
one deployment and one set of platform mutations (the key row is unique).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from actions.models import Action, ActionStatus, ActionType, LogEvent
from actions.services.circuit import circuit_check
from actions.services.dispatch import actions_dispatch
from actions.services.rollback import actions_rollback_request
from actions.services.runner import PlatformRunner
from actions.services.settlement import actions_create
from budgetradar import outbox
from budgetradar.audit import audited_save
from budgetradar.bulk import bulk_set
from budgetradar.entitlements import Feature, entitlement_check_action_approvals, entitlement_check_feature
from budgetradar.errors import DomainError, InvalidState, ValidationFailed
from budgetradar.idempotency import IdempotentResult, clean_key, idempotent_lookup, run_idempotent
from budgetradar.queue import enqueue_on_commit
from budgetradar.tenancy import require_perm, require_same_tenant
from platforms.models import PlatformConnection, PlatformEntity
from platforms.registry import get_executor
from platforms.types import Change, EntityStatus, Field, OutcomeStatus
from safety.gate import (
    deploy_override,
    gate_deploy_live,
    gate_deployment_rollback,
    schedule_deployment_actions,
)
from scenarios.models import Deployment, DeploymentResult, GuardrailOverride, PreflightRun, Scenario
from scenarios.services.adpush import ad_push_process, preflight_queue, scenario_item_input, scenario_preflight
from scenarios.services.items import items_of_scenario
from scenarios.services.preflight import (
    preflight_age_rule,
    preflight_entities,
    preflight_is_fresh,
    preflight_read_at,
    preflight_run,
)

R = DeploymentResult.Status
FIELDS = {
    "daily_budget": Field.DAILY_BUDGET,
    "lifetime_budget": Field.LIFETIME_BUDGET,
    "status": Field.STATUS,
    "bid": Field.BID,
}


# Entry point -------------------------------------------------------------------------


def deployment_create(
    *, scenario: Scenario, actor, mode: str, idempotency_key: str, override_id: int | None = None
) -> IdempotentResult:
    """Dry-run or deploy ``scenario``; see the module docstring for every guarantee."""
    require_same_tenant(actor, scenario.tenant, what="scenario")
    if mode not in Deployment.Mode.values:
        raise ValidationFailed("mode must be dry_run or live.", details={"mode": f"unknown mode {mode!r}"})
    key = clean_key(idempotency_key)
    request = {"scenario": scenario.pk, "mode": mode, "override": override_id}
    if mode == Deployment.Mode.DRY_RUN:
        require_perm(actor, "scenarios.deploy_dry_run", doing="dry-run deployments")
        return _dry_run(scenario=scenario, actor=actor, key=key, request=request)
    require_perm(actor, "scenarios.deploy_live", doing="deploy live")
    gate_deploy_live(scenario=scenario, actor=actor)
    return run_idempotent(
        tenant=scenario.tenant,
        key=key,
        scope="scenario.deploy",
        request=request,
        actor=actor,
        operation=lambda: (_live(scenario=scenario, actor=actor, key=key, override_id=override_id), 202),
    )


# Dry run -----------------------------------------------------------------------------


def _dry_run(*, scenario: Scenario, actor, key: str, request: dict) -> IdempotentResult:
    replay = idempotent_lookup(tenant=scenario.tenant, key=key, scope="scenario.deploy", request=request)
    if replay is not None:
        return replay
    if scenario.items.count() > settings.DEPLOY_SYNC_MAX_ENTITIES:
        require_perm(actor, "scenarios.run_preflight", doing="run preflights")
        return run_idempotent(
            tenant=scenario.tenant,
            key=key,
            scope="scenario.deploy",
            request=request,
            actor=actor,
            operation=lambda: (_queue_dry_run(scenario=scenario, actor=actor, key=key), 202),
        )
    preflight = scenario_preflight(scenario=scenario, actor=actor)  # also exported, like every preflight
    docs = preflight_entities(preflight)
    entities = _entities_of(preflight, docs)
    outcomes = _validate_on_platforms(docs, entities)

    def persist() -> tuple[dict, int]:
        deployment = Deployment.objects.create(
            tenant=scenario.tenant,
            scenario=scenario,
            preflight=preflight,
            mode=Deployment.Mode.DRY_RUN,
            idempotency_key=key,
            requested_by=_user(actor),
            started_at=timezone.now(),
        )
        _dry_results_write(deployment, docs, entities, outcomes)
        return deployment_serialize(deployment), 200

    return run_idempotent(
        tenant=scenario.tenant, key=key, scope="scenario.deploy", request=request, actor=actor, operation=persist
    )


def _queue_dry_run(*, scenario: Scenario, actor, key: str) -> dict:
    """A queued preflight of the scenario's items and a queued dry run of it; the task
    ``deployment_dry_run_task`` does the reads and the validate-only calls."""
    inputs = [scenario_item_input(row) for row in scenario.items.order_by("id")]
    preflight = preflight_queue(
        scenario=scenario, actor=actor, inputs=inputs, plan_id=scenario.source_plan_id, notes=scenario.notes
    )
    deployment = Deployment.objects.create(
        tenant=scenario.tenant,
        scenario=scenario,
        preflight=preflight,
        mode=Deployment.Mode.DRY_RUN,
        idempotency_key=key,
        requested_by=_user(actor),
    )
    enqueue_on_commit("scenarios.tasks.deployment_dry_run_task", deployment.pk, group="scenarios")
    return deployment_serialize(deployment)


def deployment_dry_run_process(*, deployment_pk: int) -> Deployment | None:
    """Run a queued dry run (the task): its preflight, the validate-only calls, the results.

    Guarantees: no platform call inside a transaction — the preflight reads and the
    validate-only calls run outside any, and only the results are written in one short
    transaction under a lock on the deployment row. Idempotent: the preflight is claimed
    by compare-and-set (``ad_push_process``), the validate step by a compare-and-set of
    the deployment from ``queued`` to ``running`` (or from a ``running`` claim older than
    the task timeout, whose worker died), and results are written only while
    ``prepared_at`` is empty, so a task run twice validates once and writes one set of
    results; returns None when another worker has it or it is done. A preflight that
    fails fails the dry run with its message.
    """
    preflight = _queued_preflight_read(deployment_pk, Deployment.Mode.DRY_RUN)
    if preflight is None:
        return None
    if preflight.status != PreflightRun.Status.SUCCEEDED:
        return _fail_unprepared(deployment_pk, f"Its preflight {preflight.run_id} failed: {preflight.error_message}")
    now = timezone.now()
    stale_claim = now - timedelta(seconds=settings.Q_TIMEOUT)
    claimable = Q(status=Deployment.Status.QUEUED) | Q(status=Deployment.Status.RUNNING, started_at__lt=stale_claim)
    claimed = Deployment.objects.filter(claimable, pk=deployment_pk, prepared_at__isnull=True).update(
        status=Deployment.Status.RUNNING, started_at=now
    )
    if claimed != 1:
        return None
    docs = preflight_entities(preflight)
    entities = _entities_of(preflight, docs)
    outcomes = _validate_on_platforms(docs, entities)
    with transaction.atomic():
        deployment = _locked_unprepared(deployment_pk)
        if deployment is None:
            return None
        _dry_results_write(deployment, docs, entities, outcomes)
    return deployment


def _dry_results_write(deployment: Deployment, docs, entities, outcomes) -> None:
    results = [_dry_result(deployment, doc, entities, outcomes) for doc in docs]
    DeploymentResult.objects.bulk_create(results, batch_size=1000)
    deployment.prepared_at = timezone.now()
    _recount(deployment, finished=True)


def _validate_on_platforms(docs: list[dict], entities: dict[int, PlatformEntity]) -> dict[int, list]:
    """Validate-only calls, batched per connection; entity id -> outcomes of its changes."""
    by_connection: dict[int, list[Change]] = defaultdict(list)
    for doc in docs:
        if doc["change_type"] == "update" and doc["entity_id"] in entities:
            by_connection[doc["connection_id"]] += _changes(doc, entities[doc["entity_id"]])
    outcomes: dict[int, list] = defaultdict(list)
    connections = PlatformConnection.objects.in_bulk(list(by_connection))
    for connection_id, changes in by_connection.items():
        runner = PlatformRunner(get_executor(connections[connection_id]))
        for outcome in runner.apply(changes, validate_only=True):
            outcomes[int(outcome.change.key)].append(outcome)
    return outcomes


def _dry_result(deployment, doc, entities, outcomes) -> DeploymentResult:
    result = _result(deployment, doc)
    if doc["entity_id"] not in entities or _missing(doc):
        _block_missing(result)
    elif doc["change_type"] == "noop":
        result.status = R.SKIPPED
    else:
        failed = [o for o in outcomes.get(doc["entity_id"], []) if o.status != OutcomeStatus.VALIDATED]
        result.status = R.FAILED if failed else R.VALIDATED
        if failed and failed[0].error:
            error = failed[0].error
            _set_error(result, str(error.code), error.message, error.retryable, error.hint)
    return result


# Live --------------------------------------------------------------------------------


def _live(
    *,
    scenario: Scenario,
    actor,
    key: str,
    override_id: int | None,
    preflight: PreflightRun | None = None,
    retry_of: Deployment | None = None,
) -> dict:
    """Create the live deployment; ``preflight`` pins one (retries use their own fresh run).

    Small deploys are prepared here; larger ones in a worker (see the module docstring).
    """
    tenant = scenario.tenant
    entitlement_check_feature(tenant=tenant, feature=Feature.LIVE_DEPLOY)
    preflight = preflight or _fresh_preflight(scenario)
    override = _override_for(preflight, override_id)
    deployment = Deployment.objects.create(
        tenant=tenant,
        scenario=scenario,
        preflight=preflight,
        mode=Deployment.Mode.LIVE,
        idempotency_key=key,
        override=override,
        requested_by=_user(actor),
        retry_of=retry_of,
    )
    changed = int(((preflight.payload or {}).get("summary") or {}).get("changed", 0))
    if changed <= settings.DEPLOY_SYNC_MAX_ENTITIES:
        _prepare(deployment, actor=actor)
        return deployment_serialize(deployment)
    _check_before_queueing(preflight, changed)
    enqueue_on_commit("scenarios.tasks.deployment_prepare_task", deployment.pk, group="scenarios")
    return deployment_serialize(deployment)


def _check_before_queueing(preflight: PreflightRun, changed: int) -> None:
    """What the worker would refuse and the request can tell at once: an open circuit
    on a connection the plan changes, or more actions than the plan allows."""
    connection_ids = [c["connection_id"] for c in preflight.payload.get("connections", []) if c.get("changed")]
    _check_connections_and_quota(preflight.tenant, connection_ids, changed)


def _check_connections_and_quota(tenant, connection_ids, count: int) -> None:
    for connection in PlatformConnection.objects.filter(pk__in=connection_ids):
        circuit_check(connection)
    entitlement_check_action_approvals(tenant=tenant, count=count)


def deployment_prepare(*, deployment_pk: int) -> Deployment | None:
    """Create a queued live deployment's actions and results and dispatch them (the task).

    Guarantees: idempotent — the deployment row is locked and only one without
    ``prepared_at`` is prepared, so a task that runs twice (or two workers) creates one
    set of actions; returns None when there was nothing to do. A refusal found now (an
    open circuit, the action quota) leaves no action and fails the deployment with the
    reason in ``error_message``. Dispatch runs after the commit, like a small deploy's.
    """
    with transaction.atomic():
        deployment = _locked_unprepared(deployment_pk, mode=Deployment.Mode.LIVE)
        if deployment is None or deployment.status != Deployment.Status.QUEUED:
            return None
        try:
            with transaction.atomic():
                if deployment.retry_of_id:  # its preflight was read by the task, after the request
                    _override_for(deployment.preflight, deployment.override_id)
                _prepare(deployment, actor=deployment.requested_by)
        except DomainError as exc:
            _fail(deployment, exc.message)
    return deployment


def _locked_unprepared(deployment_pk: int, *, mode: str | None = None) -> Deployment | None:
    """The deployment row, locked, while it waits for its worker (``prepared_at`` empty)."""
    rows = Deployment.objects.select_for_update(of=("self",)).filter(pk=deployment_pk, prepared_at__isnull=True)
    if mode is not None:
        rows = rows.filter(mode=mode)
    return rows.select_related("tenant", "scenario__tenant", "preflight__tenant", "requested_by").first()


def _fail(deployment: Deployment, message: str) -> None:
    deployment.status, deployment.error_message = Deployment.Status.FAILED, message
    deployment.finished_at = deployment.prepared_at = timezone.now()
    deployment.save(update_fields=["status", "error_message", "finished_at", "prepared_at"])


def _fail_unprepared(deployment_pk: int, message: str) -> Deployment | None:
    with transaction.atomic():
        deployment = _locked_unprepared(deployment_pk)
        if deployment is None:
            return None
        _fail(deployment, message)
    return deployment


def _queued_preflight_read(deployment_pk: int, mode: str) -> PreflightRun | None:
    """Run the queued preflight of a deployment waiting for its worker, outside any
    transaction; the run (succeeded or failed), or None when the deployment is no longer
    waiting or another worker is still reading it."""
    deployment = (
        Deployment.objects.select_related("preflight")
        .filter(pk=deployment_pk, mode=mode, prepared_at__isnull=True)
        .exclude(status__in=[Deployment.Status.FAILED, Deployment.Status.CANCELLED])
        .first()
    )
    if deployment is None:
        return None
    preflight = deployment.preflight
    if preflight.status in (PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING):
        ad_push_process(run_pk=preflight.pk)
        preflight.refresh_from_db()
    if preflight.status in (PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING):
        return None
    return preflight


def _prepare(deployment: Deployment, *, actor) -> None:
    """The actions (one per changed entity), the results of every entity, the counts and
    the dispatch after commit; the scenario is marked deployed."""
    preflight, scenario = deployment.preflight, deployment.scenario
    docs = preflight_entities(preflight)
    entities = _entities_of(preflight, docs)
    changed = [d for d in docs if d["change_type"] == "update" and d["entity_id"] in entities and not _missing(d)]
    for connection in PlatformConnection.objects.filter(pk__in={d["connection_id"] for d in changed}):
        circuit_check(connection)
    if changed:
        entitlement_check_action_approvals(tenant=deployment.tenant, count=len(changed))
    actions = _create_actions(deployment, changed, entities, actor, timezone.now())
    action_of = {a.entity_id: a for a in actions}
    results = []
    for doc in docs:
        result = _result(deployment, doc)
        if doc["entity_id"] in action_of:
            result.action, result.action_type, result.status = (
                action_of[doc["entity_id"]],
                ActionType.SET_VALUES,
                R.PENDING,
            )
        elif doc["entity_id"] not in entities or _missing(doc):
            _block_missing(result)
        else:
            result.status = R.SKIPPED
        results.append(result)
    DeploymentResult.objects.bulk_create(results, batch_size=1000)
    deployment.prepared_at = timezone.now()
    _recount(deployment, finished=not actions)
    if scenario is not None:
        scenario.status = Scenario.Status.DEPLOYED
        audited_save(scenario, actor=actor, reason=f"deployed live as deployment #{deployment.pk}")
    ids = [a.pk for a in actions]
    transaction.on_commit(lambda: _dispatch(ids))


def _fresh_preflight(scenario: Scenario) -> PreflightRun:
    preflight = scenario.preflights.filter(status=PreflightRun.Status.SUCCEEDED).order_by("-created_at", "-id").first()
    if preflight is None:
        raise InvalidState(
            f"Scenario {scenario.name} has no preflight yet; run a preflight before deploying.",
            code="preflight_required",
        )
    if not preflight_is_fresh(preflight):
        raise InvalidState(
            f"The latest preflight ({preflight.run_id}) is older than {preflight_age_rule(preflight)}, counted from "
            f"when its platform reads finished ({preflight_read_at(preflight).isoformat(timespec='seconds')}); "
            "run a new preflight so the deploy is checked against the platform as it is now.",
            code="preflight_stale",
        )
    if scenario.updated_at > preflight.created_at:
        raise InvalidState(
            f"Scenario {scenario.name} changed after its latest preflight ({preflight.run_id}); run a new preflight.",
            code="preflight_stale",
        )
    return preflight


def _override_for(preflight: PreflightRun, override_id: int | None) -> GuardrailOverride | None:
    return deploy_override(preflight=preflight, override_id=override_id)  # the gate's critical-breach rule


def _create_actions(deployment, docs, entities, actor, now) -> list[Action]:
    seen_at = preflight_read_at(deployment.preflight)
    actions = [
        Action(
            tenant_id=deployment.tenant_id,
            connection_id=doc["connection_id"],
            entity=entities[doc["entity_id"]],
            platform=doc["platform"],
            action_type=ActionType.SET_VALUES,
            params=_targets(doc),
            status=ActionStatus.APPROVED,
            baseline_state=_baseline(doc) | {"seen_at": seen_at.isoformat()},
            proposed_by=_user(actor),
            approved_by=_user(actor),
            approved_at=now,
            deployment=deployment,
        )
        for doc in docs
    ]
    schedule_deployment_actions(actions, now=now)  # the execution policy: when each one runs
    reason = f"approved by deploying scenario live (deployment #{deployment.pk})"
    return actions_create(actions, actor=actor, reason=reason, event=LogEvent.APPROVED)


def _dispatch(action_ids: list[int]) -> None:
    actions_dispatch(action_ids=action_ids)


# Results follow the actions ------------------------------------------------------------------

ACTION_TO_RESULT = {
    ActionStatus.APPROVED: R.PENDING,
    ActionStatus.QUEUED: R.PENDING,
    ActionStatus.EXECUTING: R.PENDING,
    ActionStatus.SUCCEEDED: R.SUCCEEDED,
    ActionStatus.FAILED: R.FAILED,
    ActionStatus.PARTIALLY_EXECUTED: R.FAILED,
    ActionStatus.ROLLING_BACK: R.SUCCEEDED,
    ActionStatus.ROLLBACK_FAILED: R.SUCCEEDED,
    ActionStatus.ROLLED_BACK: R.ROLLED_BACK,
    ActionStatus.CANCELLED: R.SKIPPED,
    ActionStatus.REJECTED: R.SKIPPED,
    ActionStatus.PENDING_APPROVAL: R.PENDING,
}


# The per-status counts a deployment keeps (one field each, named after the result status).
COUNTED = ("succeeded", "failed", "skipped", "stale", "validated", "blocked", "pending", "rolled_back")


def deployments_refresh(deployment_ids: set[int]) -> None:
    """Copy the state of each deployment's actions into its results and counts.

    Called by the outbox consumer when actions of deployments settle. Each deployment is
    refreshed under a lock on its row, so two workers settling actions of one deployment
    at once are serialised and never overwrite each other's results; counts are derived
    from the results. A bounded number of queries per deployment, whatever its size.

    An entity whose change was rolled back counts as ``rolled_back``, not ``succeeded``; once
    any has, the deployment is ``rolled_back`` (every applied change undone) or
    ``partially_rolled_back`` (some are still on the platform: not rolled back yet, rolling
    back, or the rollback failed).
    """
    for deployment_id in sorted(deployment_ids):
        with transaction.atomic():
            deployment = Deployment.objects.select_for_update().filter(pk=deployment_id).first()
            if deployment is None:
                continue
            was_active = deployment.status in (Deployment.Status.QUEUED, Deployment.Status.RUNNING)
            results = list(deployment.results.filter(action__isnull=False).select_related("action"))
            for result in results:
                _from_action(result, result.action)
            bulk_set(results, ["status", "after", "before", "error_code", "error_message", "retryable", "hint"])
            _recount(deployment, finished=False)
            if was_active and deployment.status not in (Deployment.Status.QUEUED, Deployment.Status.RUNNING):
                outbox.publish(
                    "deployment.finished",
                    tenant_id=deployment.tenant_id,
                    payload={"deployment_id": deployment.pk, "status": deployment.status},
                )


def deployments_mark_running(job_ids: set[int]) -> int:
    """Queued live deployments with actions in these jobs are running now."""
    return (
        Deployment.objects.filter(status=Deployment.Status.QUEUED, actions__job_id__in=job_ids)
        .distinct()
        .update(status=Deployment.Status.RUNNING, started_at=timezone.now())
    )


def _from_action(result: DeploymentResult, action: Action) -> None:
    result.status = ACTION_TO_RESULT[action.status]
    if action.status == ActionStatus.FAILED and action.error_code == "stale":
        result.status = R.STALE
    if action.before_state:
        result.before = _fields(action.before_state)
    if action.after_state:
        result.after = _fields(action.after_state)
    result.error_code, result.error_message = action.error_code, action.error_message
    result.retryable, result.hint = action.error_retryable, action.error_hint


def _recount(deployment: Deployment, *, finished: bool) -> None:
    counts = defaultdict(int)
    for status in deployment.results.values_list("status", flat=True):
        counts[status] += 1
    for name in COUNTED:
        setattr(deployment, name, counts[name])
    deployment.total = sum(counts.values())
    deployment.status = _status(deployment, counts)
    now = timezone.now()
    if deployment.status != Deployment.Status.QUEUED and deployment.started_at is None:
        deployment.started_at = now
    if deployment.status not in (Deployment.Status.QUEUED, Deployment.Status.RUNNING):
        deployment.finished_at = deployment.finished_at or now
    deployment.save()


def _status(deployment: Deployment, counts) -> str:
    if counts[R.PENDING]:
        # Running once a worker has picked up any of its actions (skipped rows do not count).
        started = (
            deployment.started_at
            or deployment.actions.exclude(status__in=[ActionStatus.APPROVED, ActionStatus.QUEUED]).exists()
        )
        return Deployment.Status.RUNNING if started else Deployment.Status.QUEUED
    if counts[R.ROLLED_BACK]:
        # Applied changes are the succeeded ones plus those undone since.
        undone_all = not counts[R.SUCCEEDED]
        return Deployment.Status.ROLLED_BACK if undone_all else Deployment.Status.PARTIALLY_ROLLED_BACK
    bad = counts[R.FAILED] + counts[R.STALE] + counts[R.BLOCKED]
    good = counts[R.SUCCEEDED] + counts[R.VALIDATED]
    if not bad:
        return Deployment.Status.SUCCEEDED
    return Deployment.Status.PARTIALLY_SUCCEEDED if good else Deployment.Status.FAILED


# Retry, rollback, overrides --------------------------------------------------------------------


ROLLBACK_SCOPE = "deployment.rollback"
RETRY_SCOPE = "deployment.retry_failed"


def deployment_retry_failed(*, deployment: Deployment, actor, idempotency_key: str | None = None) -> Deployment:
    """A new live deployment of just the entities that failed or were stale (fresh preflight, new key)."""
    result = deployment_retry_failed_request(deployment=deployment, actor=actor, idempotency_key=idempotency_key)
    return Deployment.objects.get(pk=result.response["id"])


def deployment_retry_failed_request(
    *, deployment: Deployment, actor, idempotency_key: str | None = None
) -> IdempotentResult:
    """Retry the failed entities once per idempotency key (a new key when none is given).

    The fresh preflight reads the platform before any transaction opens; only the short
    write of the new deployment runs under the key, so no database lock (idempotency
    row, rate-limit bucket) is held while the platform answers.

    Above ``DEPLOY_SYNC_MAX_ENTITIES`` failed entities nothing is read in the request:
    after the cheap checks (gate, plan, open circuits, the action quota) the key's short
    write saves a queued preflight of those entities and a queued deployment, and
    ``deployment_retry_task`` reads and prepares it (see the module docstring).
    """
    require_same_tenant(actor, deployment.tenant, what="deployment")
    require_perm(actor, "scenarios.deploy_live", doing="deploy live")
    request = {"deployment": deployment.pk}
    key = clean_key(idempotency_key) if idempotency_key else f"retry-{deployment.pk}-{uuid.uuid4().hex[:12]}"
    replay = idempotent_lookup(tenant=deployment.tenant, key=key, scope=RETRY_SCOPE, request=request)
    if replay is not None:
        return replay
    failed = deployment.results.filter(status__in=[R.FAILED, R.STALE]).values("entity_id")
    if not failed.exists():
        raise InvalidState(f"Deployment #{deployment.pk} has no failed entities to retry.", code="nothing_to_retry")
    if deployment.scenario is None:
        raise InvalidState(f"Deployment #{deployment.pk} has no scenario any more.")
    gate_deploy_live(scenario=deployment.scenario, actor=actor)
    rows = deployment.scenario.items.filter(entity_id__in=failed)
    if rows.count() > settings.DEPLOY_SYNC_MAX_ENTITIES:
        return _retry_in_worker(deployment=deployment, rows=rows, actor=actor, key=key, request=request)
    failed_ids = set(rows.values_list("entity_id", flat=True))
    items = [i for i in items_of_scenario(deployment.scenario) if i.entity.pk in failed_ids]
    preflight = preflight_run(
        tenant=deployment.tenant,
        items=items,
        actor=actor,
        plan_id=deployment.preflight.plan_id,
        notes=f"Retry of the failed entities of deployment #{deployment.pk}",
        scenario=deployment.scenario,
    )
    return run_idempotent(
        tenant=deployment.tenant,
        key=key,
        scope=RETRY_SCOPE,
        request=request,
        actor=actor,
        operation=lambda: (
            _live(
                scenario=deployment.scenario,
                actor=actor,
                key=key,
                override_id=None,
                preflight=preflight,
                retry_of=deployment,
            ),
            202,
        ),
    )


def _retry_in_worker(*, deployment: Deployment, rows, actor, key: str, request: dict) -> IdempotentResult:
    """The large retry: cheap checks now, the reads and the preparation in the task."""
    require_perm(actor, "scenarios.run_preflight", doing="run preflights")
    entitlement_check_feature(tenant=deployment.tenant, feature=Feature.LIVE_DEPLOY)
    inputs = [scenario_item_input(row) for row in rows.order_by("id")]
    connection_ids = set(rows.values_list("entity__connection_id", flat=True))

    def queue() -> tuple[dict, int]:
        _check_connections_and_quota(deployment.tenant, connection_ids, len(inputs))
        preflight = preflight_queue(
            scenario=deployment.scenario,
            actor=actor,
            inputs=inputs,
            plan_id=deployment.preflight.plan_id,
            notes=f"Retry of the failed entities of deployment #{deployment.pk}",
        )
        retry = Deployment.objects.create(
            tenant=deployment.tenant,
            scenario=deployment.scenario,
            preflight=preflight,
            mode=Deployment.Mode.LIVE,
            idempotency_key=key,
            requested_by=_user(actor),
            retry_of=deployment,
        )
        enqueue_on_commit("scenarios.tasks.deployment_retry_task", retry.pk, group="scenarios")
        return deployment_serialize(retry), 202

    return run_idempotent(
        tenant=deployment.tenant, key=key, scope=RETRY_SCOPE, request=request, actor=actor, operation=queue
    )


def deployment_retry_process(*, deployment_pk: int) -> Deployment | None:
    """Run a queued retry (the task): its preflight outside any transaction, then the
    critical-breach rule and ``deployment_prepare`` (actions, results, dispatch).

    Guarantees: idempotent like ``deployment_prepare`` (the preflight is claimed by
    compare-and-set; one set of actions); returns None when another worker is reading
    or it is done. A failed preflight, critical breaches on it (a retry has no
    override), an open circuit or the action quota fail the deployment with the reason.
    """
    preflight = _queued_preflight_read(deployment_pk, Deployment.Mode.LIVE)
    if preflight is None:
        return None
    if preflight.status != PreflightRun.Status.SUCCEEDED:
        return _fail_unprepared(deployment_pk, f"Its preflight {preflight.run_id} failed: {preflight.error_message}")
    return deployment_prepare(deployment_pk=deployment_pk)


def deployment_rollback(*, deployment: Deployment, actor, reason: str = "") -> Deployment:
    """Roll back every succeeded action of a live deployment (in one batch per connection).

    The rollback passes the safety gate first (``gate_deployment_rollback``: its platform
    reads happen before any transaction); nothing is rolled back when it refuses.
    """
    actions = _rollbackable_checked(deployment, actor)
    gate_deployment_rollback(actions=actions, actor=actor)
    _rollback_write(deployment, actions, actor, reason)
    return deployment


def deployment_rollback_request(
    *, deployment: Deployment, actor, reason: str = "", idempotency_key: str
) -> IdempotentResult:
    """``deployment_rollback`` once per idempotency key: the gate reads the platform before
    the key's transaction opens; only the state change runs under the key."""
    request = {"deployment": deployment.pk}
    key = clean_key(idempotency_key)
    replay = idempotent_lookup(tenant=deployment.tenant, key=key, scope=ROLLBACK_SCOPE, request=request)
    if replay is not None:
        return replay
    actions = _rollbackable_checked(deployment, actor)
    gate_deployment_rollback(actions=actions, actor=actor)

    def write() -> tuple[dict[str, Any], int]:
        _rollback_write(deployment, actions, actor, reason)
        return deployment_serialize(Deployment.objects.get(pk=deployment.pk)), 202

    return run_idempotent(
        tenant=deployment.tenant, key=key, scope=ROLLBACK_SCOPE, request=request, actor=actor, operation=write
    )


def _rollbackable_checked(deployment: Deployment, actor) -> list[Action]:
    require_same_tenant(actor, deployment.tenant, what="deployment")
    require_perm(actor, "scenarios.rollback_deployment", doing="roll back deployments")
    actions = list(
        deployment.actions.filter(
            status__in=[ActionStatus.SUCCEEDED, ActionStatus.PARTIALLY_EXECUTED], rollback_deadline__gte=timezone.now()
        ).exclude(rollback_params=None)
    )
    if not actions:
        raise InvalidState(
            f"Deployment #{deployment.pk} has nothing to roll back: no succeeded action with valid rollback "
            "instructions (they are valid for 24 hours after execution).",
            code="nothing_to_roll_back",
        )
    return actions


def _rollback_write(deployment: Deployment, actions: list[Action], actor, reason: str) -> None:
    actions_rollback_request(actions=actions, actor=actor, reason=reason or f"Rollback of deployment #{deployment.pk}.")


# Serialisation and helpers -------------------------------------------------------------------


def deployment_serialize(deployment: Deployment, *, include_results: bool = True) -> dict[str, Any]:
    data = {
        "id": deployment.pk,
        "mode": deployment.mode,
        "status": deployment.status,
        "scenario": deployment.scenario_id,
        "preflight": deployment.preflight.run_id,
        "idempotency_key": deployment.idempotency_key,
        "override": deployment.override_id,
        "retry_of": deployment.retry_of_id,
        "requested_by": deployment.requested_by.username if deployment.requested_by_id else None,
        "counts": {name: getattr(deployment, name) for name in ("total", *COUNTED)},
        "created_at": deployment.created_at.isoformat(),
        "started_at": deployment.started_at.isoformat() if deployment.started_at else None,
        "finished_at": deployment.finished_at.isoformat() if deployment.finished_at else None,
        "prepared_at": deployment.prepared_at.isoformat() if deployment.prepared_at else None,
        "error": deployment.error_message,
        "progress_url": f"/api/deployments/{deployment.pk}",
    }
    if include_results:
        rows = deployment.results.select_related("entity__connection").order_by("id")
        data["results"] = [_result_json(r) for r in rows]
    return data


def deployment_results_serialize(results) -> list[dict[str, Any]]:
    """Results as ``deployment_serialize`` answers them (for the paginated results list)."""
    return [_result_json(r) for r in results]


def _result_json(result: DeploymentResult) -> dict[str, Any]:
    entity = result.entity
    return {
        "entity": {
            "id": entity.pk,
            "platform": entity.connection.platform,
            "entity_type": entity.entity_type,
            "external_id": entity.external_id,
            "name": entity.name,
        },
        "action": result.action_id,
        "action_type": result.action_type,
        "status": result.status,
        "before": result.before,
        "after": result.after,
        "error_code": result.error_code,
        "error_message": result.error_message,
        "retryable": result.retryable,
        "hint": result.hint,
    }


def _entities_of(preflight: PreflightRun, docs: list[dict]) -> dict[int, PlatformEntity]:
    ids = [doc["entity_id"] for doc in docs]
    return (
        PlatformEntity.objects.filter(tenant=preflight.tenant, pk__in=ids)
        .select_related("connection", "parent")
        .in_bulk()
    )


def _missing(doc: dict) -> bool:
    return any(b["code"] == "entity_missing" for b in doc.get("breaches", []))


def _targets(doc: dict) -> dict[str, str]:
    return {field: doc["after"][field] for field in FIELDS if _changes_field(doc, field)}


def _changes_field(doc: dict, field: str) -> bool:
    return any(c["field"] == field and c["changed"] for section in doc["sections"].values() for c in section)


def _baseline(doc: dict) -> dict[str, Any]:
    return {field: doc["before"].get(field) for field in FIELDS}


def _fields(state: dict) -> dict[str, Any]:
    return {field: state.get(field) for field in FIELDS}


def _changes(doc: dict, entity: PlatformEntity) -> list[Change]:
    ref = entity.to_ref()
    changes = []
    for field, value in _targets(doc).items():
        typed = EntityStatus(value) if field == "status" else Decimal(value)
        changes.append(Change(ref=ref, field=FIELDS[field], value=typed, key=str(entity.pk)))
    return changes


def _result(deployment: Deployment, doc: dict) -> DeploymentResult:
    return DeploymentResult(
        deployment=deployment,
        entity_id=doc["entity_id"],
        action_type=ActionType.SET_VALUES,
        before=_fields(doc["before"]),
        after=_fields(doc["after"]),
    )


def _block_missing(result: DeploymentResult) -> None:
    """The preflight found no such entity on the platform: nothing can be sent for it."""
    result.status = R.BLOCKED
    _set_error(
        result,
        "entity_missing",
        "The entity was not found on the platform during the preflight.",
        False,
        "Sync the connection and remove the entity from the scenario.",
    )


def _set_error(result: DeploymentResult, code: str, message: str, retryable: bool | None, hint: str) -> None:
    result.error_code, result.error_message, result.retryable, result.hint = code, message, retryable, hint


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None
