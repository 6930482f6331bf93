"""Jobs: batches of actions run by the workers."""

from __future__ import annotations

from django.contrib import admin

from actions.admin.inlines import (
    JobActionsInline,
)
from actions.admin.presentation import (
    JOB_TONES,
)
from actions.models import (
    ActionJob,
)
from budgetradar.admin_base import (
    DATE_FILTER,
    EMPTY,
    GREY,
    ReadOnlyAdminMixin,
    TenantScopedAdmin,
    badge,
)
from budgetradar.words import actor_display


@admin.register(ActionJob)
class ActionJobAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """Batches of actions run by the workers, with progress and the lease of the worker running it."""

    list_display = [
        "number",
        "kind",
        "connection",
        "status_badge",
        "total",
        "succeeded",
        "failed",
        "parked",
        "round_trips",
        "worker",
        "lease_expires_at",
        "created_at",
        "finished_at",
    ]
    list_display_links = ["number"]
    list_select_related = ["connection"]
    list_filter = ["kind", "status", "connection", DATE_FILTER]
    search_fields = ["=id", "claimed_by", "connection__name"]
    inlines = [JobActionsInline]

    @admin.display(description="#", ordering="id")
    def number(self, job: ActionJob) -> str:
        return f"#{job.pk}"

    @admin.display(description="Worker", ordering="claimed_by")
    def worker(self, job: ActionJob) -> str:
        return actor_display(job.claimed_by) if job.claimed_by else EMPTY

    @admin.display(description="Status", ordering="status")
    def status_badge(self, job: ActionJob):
        return badge(job.get_status_display(), JOB_TONES.get(job.status, GREY))
