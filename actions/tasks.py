"""django-q2 entry points: thin, ids only, idempotent (a task may run twice)."""

from __future__ import annotations

from actions.models import ActionJob, JobStatus
from actions.services.dispatch import actions_dispatch
from actions.services.engine import job_process
from actions.services.reconcile import actions_reconcile
from budgetradar.queue import enqueue


def process_job_task(job_id: int) -> str:
    report = job_process(job_id=job_id)
    return f"job {job_id}: {report.status if report else 'already claimed or not runnable'}"


def dispatch_task(action_ids: list[int] | None = None) -> str:
    return f"dispatched into jobs {actions_dispatch(action_ids=action_ids)}"


def sweep_task() -> str:
    """The schedule's sweep: dispatch what is due, and hand every queued job to a worker
    again in case its task was lost (claiming is a compare-and-set, so extra tasks are no-ops)."""
    jobs = actions_dispatch()
    queued = list(ActionJob.objects.filter(status=JobStatus.QUEUED).values_list("id", flat=True))
    for job_id in queued:
        enqueue("actions.tasks.process_job_task", job_id, group="actions")
    return f"dispatched into jobs {jobs}; queued jobs handed out: {queued}"


def reconcile_task() -> str:
    return str(actions_reconcile())
