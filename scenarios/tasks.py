"""django-q2 entry points: thin, ids only, idempotent (a task may run twice)."""

from __future__ import annotations

from scenarios.services.adpush import ad_push_process


def preflight_task(run_pk: int) -> str:
    """Run a queued preflight (``ad_push_dry_run`` enqueues it after commit)."""
    run = ad_push_process(run_pk=run_pk)
    if run is None:
        return f"preflight {run_pk}: already claimed or finished"
    return f"preflight {run.run_id}: {run.status}"
