"""Every preflight ever run (read-only): the diff, the breaches, the totals and its overrides."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse

from budgetradar.admin_base import (
    DATE_FILTER,
    GREY,
    ReadOnlyAdminMixin,
    TenantScopedAdmin,
    badge,
)
from scenarios.admin.diff import diff_context, preflight_progress
from scenarios.admin.presentation import (
    DEPLOYMENT_TONES,
    PREFLIGHT_TONES,
    REFRESH_SECONDS,
    page_number,
    person_name,
    preflight_badge,
)
from scenarios.models import (
    GuardrailOverride,
    PreflightRun,
)

# Preflight runs --------------------------------------------------------------------------------------


class OverridesInline(admin.TabularInline):
    model = GuardrailOverride
    fields = ["reason", "requester", "approver", "approved_at", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Overrides of its critical breaches"

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.has_perm("scenarios.view_preflightrun")

    @admin.display(description="Requested by")
    def requester(self, override: GuardrailOverride) -> str:
        return person_name(override.requested_by)

    @admin.display(description="Approved by")
    def approver(self, override: GuardrailOverride) -> str:
        return person_name(override.approved_by)


@admin.register(PreflightRun)
class PreflightRunAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """Every preflight ever run (read-only): the diff, the breaches and the totals."""

    list_display = [
        "run_id",
        "scenario",
        "action",
        "mode",
        "status_badge",
        "guardrails",
        "plan_id",
        "created_by",
        "created_at",
    ]
    list_display_links = ["run_id"]
    list_select_related = ["scenario", "action__entity", "created_by"]
    list_filter = ["status", "mode", "has_critical", "scenario", DATE_FILTER]
    search_fields = ["run_id", "plan_id", "scenario__name"]
    fields = [
        "run_id",
        "scenario",
        "action",
        "mode",
        "status_badge",
        "plan_id",
        "notes",
        "error_message",
        "author",
        "created_at",
        "started_at",
        "reads_finished_at",
        "finished_at",
    ]
    readonly_fields = fields
    inlines = [OverridesInline]

    @admin.display(description="Run by")
    def author(self, run: PreflightRun) -> str:
        return person_name(run.created_by)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The document can be megabytes; lists never load it.
        return super().get_queryset(request).defer("payload", "inputs")

    @admin.display(description="Status", ordering="status")
    def status_badge(self, run: PreflightRun):
        return badge(run.get_status_display(), PREFLIGHT_TONES.get(run.status, GREY))

    @admin.display(description="Guardrails", ordering="has_critical")
    def guardrails(self, run: PreflightRun):
        return preflight_badge(run)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "preflight_progress": preflight_progress(run) if run is not None else None,
            "preflight_active": run is not None
            and run.status in (PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING),
            "refresh_seconds": REFRESH_SECONDS,
            "diff": diff_context(run, page=page_number(request, "diff_page")),
            "deployments": list(run.deployments.order_by("-created_at", "-id")[:20]),
            "status_tones": DEPLOYMENT_TONES,
        }
        return super().change_view(request, object_id, form_url, extra_context)
