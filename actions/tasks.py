"""django-q2 entry points: thin, ids only, idempotent (a task may run twice)."""

from __future__ import annotations

from django_q.tasks import async_task

from actions.services.dispatch import actions_dispatch
from actions.services.engine import job_process
from actions.services.reconcile import actions_reconcile


def enqueue_process_job(job_id: int) -> None:
    async_task("actions.tasks.process_job_task", job_id, task_name=f"process-job-{job_id}", group="actions")


def enqueue_dispatch() -> None:
    async_task("actions.tasks.dispatch_task", group="actions")


def process_job_task(job_id: int) -> str:
    report = job_process(job_id=job_id)
    return f"job {job_id}: {report.status if report else 'already claimed or not runnable'}"


def dispatch_task() -> str:
    return f"dispatched into jobs {actions_dispatch()}"


def process_pending_task(kind: str | None = None) -> str:
    """The schedule's sweep: dispatch what waits, then run queued jobs whose task was lost."""
    from actions.models import ActionJob, JobStatus

    actions_dispatch()
    jobs = ActionJob.objects.filter(status=JobStatus.QUEUED)
    if kind:
        jobs = jobs.filter(kind=kind)
    ran = [job_id for job_id in jobs.values_list("id", flat=True) if job_process(job_id=job_id)]
    return f"ran jobs {ran}"


def reconcile_task() -> str:
    return str(actions_reconcile())
