"""``manage.py action_worker dispatch|process|rollback|reconcile [--limit N]``.

Runs the same services as the django-q2 tasks, for cron or by hand. ``process`` and
``rollback`` run the jobs in this process; ``dispatch`` only forms jobs (a running
qcluster picks them up).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from actions.models import ActionJob, JobKind, JobStatus
from actions.services.dispatch import actions_dispatch
from actions.services.engine import job_process
from actions.services.reconcile import actions_reconcile


class Command(BaseCommand):
    help = "Dispatch approved actions, process queued jobs, run rollbacks or reconcile unsettled actions."

    def add_arguments(self, parser) -> None:
        parser.add_argument("step", choices=["dispatch", "process", "rollback", "reconcile"])
        parser.add_argument("--limit", type=int, default=None, help="At most this many actions/jobs.")
        parser.add_argument("--job", type=int, default=None, help="process: run only this job.")

    def handle(self, *args, step: str, limit: int | None, job: int | None, **options) -> None:
        if step == "dispatch":
            self.stdout.write(f"jobs with work: {actions_dispatch(limit=limit)}")
        elif step == "reconcile":
            self.stdout.write(f"reconciled: {actions_reconcile(limit=limit)}")
        else:
            kind = JobKind.ROLLBACK if step == "rollback" else JobKind.EXECUTE
            self._process(kind, limit, job)

    def _process(self, kind: str, limit: int | None, job_id: int | None) -> None:
        if job_id is None:
            actions_dispatch(limit=limit)
        jobs = ActionJob.objects.filter(status=JobStatus.QUEUED, kind=kind).order_by("id")
        if job_id is not None:
            jobs = jobs.filter(pk=job_id)
        for pk in jobs.values_list("id", flat=True)[:limit] if limit else jobs.values_list("id", flat=True):
            report = job_process(job_id=pk)
            if report is None:
                self.stdout.write(f"job {pk}: claimed elsewhere or its circuit is open")
            else:
                self.stdout.write(
                    f"job {pk}: {report.status} ({report.succeeded} succeeded, {report.failed} failed, "
                    f"{report.unresolved} unresolved, {report.round_trips} platform requests)"
                )
