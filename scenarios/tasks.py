"""django-q2 entry points: thin, ids only, idempotent (a task may run twice)."""

from __future__ import annotations

from scenarios.services.adpush import ad_push_process
from scenarios.services.deploy import deployment_dry_run_process, deployment_prepare, deployment_retry_process
from scenarios.services.retention import preflights_prune


def preflight_task(run_pk: int) -> str:
    """Run a queued preflight (``ad_push_dry_run`` and ``scenario_preflight_request``
    enqueue it after commit)."""
    run = ad_push_process(run_pk=run_pk)
    if run is None:
        return f"preflight {run_pk}: already claimed or finished"
    return f"preflight {run.run_id}: {run.status}"


def deployment_prepare_task(deployment_pk: int) -> str:
    """Create a large live deployment's actions and results and dispatch them."""
    deployment = deployment_prepare(deployment_pk=deployment_pk)
    if deployment is None:
        return f"deployment {deployment_pk}: already prepared"
    return f"deployment {deployment_pk}: {deployment.status}"


def deployment_dry_run_task(deployment_pk: int) -> str:
    """Run a large dry run: its preflight, the validate-only calls, the results."""
    deployment = deployment_dry_run_process(deployment_pk=deployment_pk)
    if deployment is None:
        return f"dry run {deployment_pk}: already claimed or finished"
    return f"dry run {deployment_pk}: {deployment.status}"


def deployment_retry_task(deployment_pk: int) -> str:
    """Run a large retry of failed entities: its preflight, then prepare and dispatch it."""
    deployment = deployment_retry_process(deployment_pk=deployment_pk)
    if deployment is None:
        return f"deployment {deployment_pk}: already claimed or prepared"
    return f"deployment {deployment_pk}: {deployment.status}"


def preflights_prune_task() -> str:
    """The daily retention of preflight runs (``PREFLIGHT_RETENTION_DAYS``)."""
    result = preflights_prune()
    return (
        f"pruned {result.runs} preflight runs ({result.entity_rows} entity rows) from before {result.cutoff:%Y-%m-%d}"
    )
