"""The ad-push flow: a proposed push bundle checked by a preflight in a worker.

``ad_push_dry_run`` validates a bundle at once and queues a ``PreflightRun`` holding the
normalised items; ``ad_push_process`` (the django-q2 task) runs the preflight for it and
exports the document. Reads live in the selectors at the bottom.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from budgetradar.errors import DomainError, NotFound, ValidationFailed
from budgetradar.models import Tenant
from budgetradar.tenancy import is_platform_staff, require_perm, tenant_of
from scenarios.models import PreflightRun
from scenarios.services.export import export_run
from scenarios.services.imports import bundle_items, load_bundle
from scenarios.services.items import items_from_inputs

logger = logging.getLogger(__name__)


def ad_push_dry_run(
    *, tenant: Tenant, actor, data: bytes | str | dict, mode: str | None = None, plan_id: str | None = None
) -> PreflightRun:
    """Queue a preflight of a proposed push bundle.

    Guarantees: the actor needs ``scenarios.run_preflight``; the bundle is validated
    completely before anything is written (``ValidationFailed`` with row errors); the
    run is saved ``queued`` with its normalised items in ``inputs`` and the task is
    enqueued only after the row commits, with the run's id only. ``mode`` and
    ``plan_id`` default to the bundle's ``mode`` (or ``generation_mode``) and
    ``plan_id``; ``notes`` come from the bundle.
    """
    from scenarios.services.preflight import new_run_id

    if actor is not None:
        require_perm(actor, "scenarios.run_preflight", doing="run preflights")
    document = load_bundle(data)
    mode = _mode(mode or document.get("mode") or document.get("generation_mode") or PreflightRun.Mode.MANUAL)
    bundle_plan_id, items = bundle_items(tenant=tenant, document=document)
    notes = document.get("notes") if isinstance(document.get("notes"), str) else ""
    with transaction.atomic():
        run = PreflightRun.objects.create(
            tenant=tenant,
            run_id=new_run_id(),
            mode=mode,
            status=PreflightRun.Status.QUEUED,
            plan_id=(plan_id or bundle_plan_id)[:200],
            notes=notes,
            inputs=[item.as_input() for item in items],
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def _mode(raw: Any) -> str:
    if raw in PreflightRun.Mode.values:
        return str(raw)
    message = f"mode must be one of {', '.join(PreflightRun.Mode.values)}; got {raw!r}."
    raise ValidationFailed(message, details=[{"field": "mode", "code": "invalid", "message": message}])


def _enqueue(run_pk: int) -> None:
    from django_q.tasks import async_task

    async_task("scenarios.tasks.preflight_task", run_pk, task_name=f"preflight-{run_pk}", group="scenarios")


def ad_push_process(*, run_pk: int) -> PreflightRun | None:
    """Run the preflight of a queued run and export its document.

    Guarantees: idempotent — only a ``queued`` run (or one left ``running`` by a worker
    that died longer than the task timeout ago) is claimed, by compare-and-set, so two
    workers never both run it and a finished run is left alone (returns None). A platform
    failure leaves the run ``failed`` with its message (the preflight service saves it);
    an entity deleted from the mirror since the run was queued fails the run with a
    message naming it. Export problems are logged, never lose the stored run.
    """
    from scenarios.services.preflight import preflight_run

    now = timezone.now()
    stale_claim = now - timedelta(seconds=settings.Q_TIMEOUT)
    claimable = Q(status=PreflightRun.Status.QUEUED) | Q(status=PreflightRun.Status.RUNNING, started_at__lt=stale_claim)
    claimed = PreflightRun.objects.filter(claimable, pk=run_pk).update(
        status=PreflightRun.Status.RUNNING, started_at=now
    )
    if claimed != 1:
        return None
    run = PreflightRun.objects.select_related("tenant", "created_by").get(pk=run_pk)
    try:
        items = items_from_inputs(run.inputs, tenant=run.tenant)
    except KeyError as exc:
        return _fail(run, f"Entity {exc.args[0]} of this preflight no longer exists in the mirror; sync and retry.")
    try:
        run = preflight_run(
            tenant=run.tenant,
            items=items,
            actor=run.created_by,
            mode=run.mode,
            plan_id=run.plan_id,
            notes=run.notes,
            run=run,
        )
    except DomainError as exc:
        logger.warning("Preflight %s failed: %s", run.run_id, exc.message, extra={"preflight": run.run_id})
        run.refresh_from_db()
        if run.status != PreflightRun.Status.FAILED:
            _fail(run, exc.message)
        return run
    _export_logged(run)
    return run


def _fail(run: PreflightRun, message: str) -> PreflightRun:
    run.status, run.error_message, run.finished_at = PreflightRun.Status.FAILED, message, timezone.now()
    run.save(update_fields=["status", "error_message", "finished_at"])
    return run


def _export_logged(run: PreflightRun) -> None:
    """Export a finished run; the database row is the record, so a full disk only warns."""
    try:
        export_run(run=run)
    except OSError:
        logger.exception("Could not append preflight %s to the export file", run.run_id)


def scenario_preflight(*, scenario, actor, mode: str = PreflightRun.Mode.MANUAL) -> PreflightRun:
    """Preflight a scenario now and export the document.

    Guarantees: the actor needs ``scenarios.run_preflight``; see
    ``scenarios.services.preflight.preflight_for_scenario`` for the run itself.
    """
    from scenarios.services.preflight import preflight_for_scenario

    if actor is not None:
        require_perm(actor, "scenarios.run_preflight", doing="run preflights")
    run = preflight_for_scenario(scenario=scenario, actor=actor, mode=_mode(mode))
    _export_logged(run)
    return run


def scenario_preflight_request(*, scenario, actor, mode: str = PreflightRun.Mode.MANUAL) -> PreflightRun:
    """Preflight a scenario for a person (the API, the admin): now, or in a worker.

    Where the line is: a scenario of at most ``PREFLIGHT_SYNC_MAX_ENTITIES`` items is
    preflighted in the request (``scenario_preflight``; the run comes back finished). A
    larger one is saved ``queued`` with the items it was asked about (``inputs``, so a
    later edit of the scenario does not change it) and ``preflight_task`` runs it after
    commit; the run comes back queued, and its ``entities_read`` shows the progress.
    The actor needs ``scenarios.run_preflight`` either way.
    """
    if actor is not None:
        require_perm(actor, "scenarios.run_preflight", doing="run preflights")
    mode = _mode(mode)
    if scenario.items.count() <= settings.PREFLIGHT_SYNC_MAX_ENTITIES:
        return scenario_preflight(scenario=scenario, actor=actor, mode=mode)
    inputs = [scenario_item_input(row) for row in scenario.items.order_by("id")]
    with transaction.atomic():
        run = preflight_queue(
            scenario=scenario,
            actor=actor,
            mode=mode,
            inputs=inputs,
            plan_id=scenario.source_plan_id,
            notes=scenario.notes,
        )
        transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def preflight_queue(
    *, scenario, actor, inputs: list[dict[str, Any]], plan_id: str, notes: str, mode: str = PreflightRun.Mode.MANUAL
) -> PreflightRun:
    """Save a ``queued`` preflight of ``inputs`` (nothing is read yet).

    The caller runs it: ``scenario_preflight_request`` enqueues ``preflight_task``; a large
    dry run or retry has its deployment's task run it (``ad_push_process``) first.
    """
    from scenarios.services.preflight import new_run_id

    return PreflightRun.objects.create(
        tenant=scenario.tenant,
        run_id=new_run_id(),
        scenario=scenario,
        mode=mode,
        status=PreflightRun.Status.QUEUED,
        plan_id=plan_id[:200],
        notes=notes,
        inputs=inputs,
        entities_total=len(inputs),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )


def scenario_item_input(row) -> dict[str, Any]:
    """A scenario item as ``TargetItem.as_input`` stores it, without loading its entity."""
    return {"entity": row.entity_id, "targets": {k: str(v) for k, v in sorted(row.targets().items())}}


# Selectors -------------------------------------------------------------------------------------


def tenant_for_ref(*, user, ref: str) -> Tenant:
    """The tenant a URL names by id or slug, if the user may see it; else ``NotFound``."""
    lookup = Q(slug=ref) | Q(pk=int(ref)) if ref.isdigit() else Q(slug=ref)
    # A numeric slug may equal another tenant's id: the id wins, among tenants the user may see.
    candidates = sorted(Tenant.objects.filter(lookup), key=lambda t: str(t.pk) != ref)
    visible = [t for t in candidates if is_platform_staff(user) or tenant_of(user) == t]
    if not visible:
        raise NotFound(f"No tenant {ref}.")
    return visible[0]


def ad_push_latest(*, tenant: Tenant) -> PreflightRun:
    """The tenant's newest finished preflight document of a plan (a single action's
    one-entity preflights are the safety gate's, not ad pushes)."""
    run = (
        PreflightRun.objects.filter(tenant=tenant, status=PreflightRun.Status.SUCCEEDED, action__isnull=True)
        .select_related("tenant")
        .order_by("-created_at", "-id")
        .first()
    )
    if run is None:
        raise NotFound(f"Tenant {tenant.slug} has no preflight yet; POST a bundle to ad-pushes/dry-run.")
    return run


def ad_push_get(*, tenant: Tenant, run_id: str) -> PreflightRun:
    run = PreflightRun.objects.filter(tenant=tenant, run_id=run_id).select_related("tenant").first()
    if run is None:
        raise NotFound(f"No preflight run {run_id}.")
    return run


def run_document(run: PreflightRun, *, entities: bool = True) -> dict[str, Any]:
    """What the API answers for a run: the document plus ``run_id``, ``status``,
    ``progress`` and, while queued/running or after a failure, what is known (and
    ``error``). ``entities=False`` answers the summary alone: no entities (they are paged
    at ``entities_url``, each with its own breaches), only the run's own breaches (those
    of no entity), and ``breach_counts`` of every breach by severity."""
    from scenarios.services.preflight import preflight_document

    document: dict[str, Any] = preflight_document(run) if entities else _summary_only(run.payload or {})
    if not run.payload:
        document.update(
            tenant=run.tenant.slug,
            generation_mode=run.mode,
            source_plan_id=run.plan_id,
            notes=run.notes,
        )
    document.update(run_id=run.run_id, status=run.status, progress=run_progress(run))
    document["entities_url"] = f"/api/preflights/{run.run_id}/entities"
    if run.status == PreflightRun.Status.FAILED:
        document["error"] = run.error_message
    return document


def _summary_only(payload: dict[str, Any]) -> dict[str, Any]:
    if not payload:
        return {}
    breaches = payload.get("breaches") or []
    counts = (payload.get("summary") or {}).get("breaches") or {
        severity: sum(1 for b in breaches if b.get("severity") == severity) for severity in ("critical", "warning")
    }
    return {**payload, "breaches": [b for b in breaches if not b.get("key")], "breach_counts": dict(counts)}


def run_progress(run: PreflightRun) -> dict[str, Any]:
    """How far a run has come, and where to poll it."""
    return {
        "entities_total": run.entities_total,
        "entities_read": run.entities_read,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "reads_finished_at": run.reads_finished_at.isoformat() if run.reads_finished_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "url": f"/api/preflights/{run.run_id}",
    }
