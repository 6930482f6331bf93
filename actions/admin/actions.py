"""The action admin: the list, the change page with its timeline and gate, and the confirmation flow."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from actions.admin.inlines import (
    ExecutionLogInline,
)
from actions.admin.operations import (
    OPERATIONS,
    Operation,
    OperationForm,
    action_row,
)
from actions.admin.presentation import (
    ACTION_RELATED,
    REFRESH_SECONDS,
    action_change,
    breach_pill,
    change_targets,
    gate_summary,
    status_badge,
)
from actions.models import (
    IN_MOTION,
    Action,
)
from actions.selectors import (
    action_wait_state,
    actions_needing_attention,
    approval_notes,
    when_texts,
)
from actions.services.judgement import actions_judge
from actions.services.lifecycle import actions_apply_bulk
from actions.services.rollback_preview import FIELD_LABELS, rollback_deadline_text
from actions.services.rollback_preview import show_value as _show
from actions.services.verification import same_value
from budgetradar.admin_base import (
    DATE_FILTER,
    EMPTY,
    TenantScopedHistoryAdmin,
    admin_link,
    confirmation_close,
    confirmation_get,
    confirmation_open,
    denied,
    pretty_json,
)
from budgetradar.errors import DomainError
from budgetradar.timefmt import format_time
from budgetradar.words import error_label
from platforms.types import Field
from safety.gate import (
    action_preflight_request,
    latest_preflight,
    preflight_summary,
    preflights_prefetch,
)
from safety.overrides import action_override_request, override_approve, override_approve_refusal
from scenarios.models import GuardrailOverride, PreflightRun
from scenarios.selectors import APPROVED, PENDING, REJECTED
from scenarios.services.guardrails import CRITICAL


class AttentionFilter(admin.SimpleListFilter):
    """Actions a person may want to look at: parked, being reconciled, or stuck."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin):
        return [
            ("parked", "Waiting for a later attempt"),
            ("reconciling", "Awaiting reconciliation"),
            ("stuck", f"Blocking its entity over {settings.ENGINE_STUCK_AFTER_MINUTES} minutes"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return actions_needing_attention(queryset, self.value()) if self.value() else queryset


@admin.register(Action)
class ActionAdmin(TenantScopedHistoryAdmin):
    """Every change to every entity, with its lifecycle, state, errors and timeline."""

    list_display = [
        "number",
        "status_badge",
        "entity_display",
        "platform",
        "action_type",
        "change_summary",
        "proposed_by",
        "approved_by",
        "created_at",
        "approved_at",
    ]
    list_display_links = ["number"]
    list_select_related = ["entity", "connection", "proposed_by", "approved_by"]
    list_filter = ["status", AttentionFilter, "platform", "action_type", "connection", DATE_FILTER]
    search_fields = ["=id", "entity__name", "entity__external_id"]
    search_help_text = "Search by action id, entity name or platform id."
    actions = ["approve_selected", "reject_selected", "cancel_selected", "execute_selected", "rollback_selected"]
    inlines = [ExecutionLogInline]
    readonly_fields = [
        "status_badge",
        "entity_link",
        "connection",
        "platform",
        "action_type",
        "change_summary",
        "params_display",
        "rationale",
        "proposer",
        "approver",
        "decided_reason",
        "state_table",
        "before_after",
        "when_display",
        "gate_display",
        "rollback_deadline_display",
        "rollback_display",
        "rollback_requester",
        "rollback_reason",
        "rollback_override_drift",
        "error_kind",
        "error_message",
        "error_retryable",
        "error_hint",
        "waiting_display",
        "job",
        "deployment_link",
        "attempts",
        "idempotency_key",
        "created_at",
        "approved_at",
        "queued_at",
        "started_at",
        "finished_at",
        "rolled_back_at",
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Action | None = None):
        fieldsets = [
            (
                None,
                {"fields": ["status_badge", "entity_link", "connection", "platform", "action_type", "change_summary"]},
            ),
            (
                "Why and who",
                {"fields": ["rationale", "params_display", "proposer", "approver", "decided_reason"]},
            ),
            ("Safety gate", {"fields": ["when_display", "gate_display"]}),
            (
                "State and rollback",
                {
                    "fields": [
                        "before_after",
                        "state_table",
                        "rollback_deadline_display",
                        "rollback_display",
                        "rollback_requester",
                        "rollback_reason",
                        "rollback_override_drift",
                    ]
                },
            ),
            ("Execution", {"fields": ["waiting_display", "job", "deployment_link", "attempts", "idempotency_key"]}),
            (
                "Timing",
                {"fields": ["created_at", "approved_at", "queued_at", "started_at", "finished_at", "rolled_back_at"]},
            ),
        ]
        if obj is not None and obj.error_code:
            fieldsets.insert(1, ("Error", {"fields": ["error_kind", "error_message", "error_retryable", "error_hint"]}))
        if obj is None or not obj.rollback_override_drift:  # only worth a line when someone did override
            for _name, options in fieldsets:
                options["fields"] = [f for f in options["fields"] if f != "rollback_override_drift"]
        return fieldsets

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related(*ACTION_RELATED, "recommendation", "rollback_requested_by")

    # Actions change only through services.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Action | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Action | None = None) -> bool:
        return False

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("actions.approve_action")

    def has_reject_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("actions.reject_action")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("actions.cancel_action")

    def has_execute_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("actions.execute_action")

    def has_rollback_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("actions.rollback_action")

    # Columns and read-only fields ---------------------------------------------------------

    @admin.display(description="Error")
    def error_kind(self, action: Action) -> str:
        return error_label(action.error_code) if action.error_code else EMPTY

    @admin.display(description="Waiting for")
    def waiting_display(self, action: Action) -> str:
        return action_wait_state(action) or "—"

    @admin.display(description="#", ordering="id")
    def number(self, action: Action) -> str:
        return f"#{action.pk}"

    @admin.display(description="Status", ordering="status")
    def status_badge(self, action: Action):
        return status_badge(action)

    @admin.display(description="Entity", ordering="entity__name")
    def entity_display(self, action: Action):
        entity = action.entity
        return format_html('{}<div class="help">{} {}</div>', entity.name, entity.entity_type, entity.external_id)

    @admin.display(description="Entity")
    def entity_link(self, action: Action):
        entity = action.entity
        return format_html("{} ({} {})", admin_link(entity, entity.name), entity.entity_type, entity.external_id)

    @admin.display(description="Change")
    def change_summary(self, action: Action) -> str:
        return action_change(action)

    @admin.display(description="Params")
    def params_display(self, action: Action):
        return pretty_json(action.params)

    @admin.display(description="What will happen")
    def when_display(self, action: Action) -> str:
        return when_texts([action])[action.pk] or EMPTY

    @admin.display(description="Guardrails")
    def gate_display(self, action: Action) -> str:
        return gate_summary(action)

    @admin.display(description="Rationale")
    def rationale(self, action: Action) -> str:
        return action.recommendation.rationale if action.recommendation and action.recommendation.rationale else EMPTY

    # People are shown by name: links would lead tenant members to the user admin they may not see.
    @admin.display(description="Proposed by")
    def proposer(self, action: Action) -> str:
        return str(action.proposed_by or "an optimizer")

    @admin.display(description="Approved by")
    def approver(self, action: Action) -> str:
        return str(action.approved_by or EMPTY)

    @admin.display(description="Rollback requested by")
    def rollback_requester(self, action: Action) -> str:
        return str(action.rollback_requested_by or EMPTY)

    @admin.display(description="Rollback instructions")
    def rollback_display(self, action: Action):
        return pretty_json(action.rollback_params)

    @admin.display(description="Before → after")
    def before_after(self, action: Action):
        """``Daily budget: 100.00 EUR → 150.00 EUR`` per field, once the action ran: the value
        captured just before the change and the value read back after it."""
        before, after = action.before_state or {}, action.after_state or {}
        if not before and not after:
            return "Not executed yet."
        currency = action.connection.currency
        fields = [f for f in Field if f.value in before or f.value in after]
        lines = [
            (
                FIELD_LABELS[f],
                _show(f, before.get(f.value), currency),
                _show(f, after.get(f.value), currency),
                "" if same_value(f, before.get(f.value), after.get(f.value)) else " br-changed",
            )
            for f in fields
            if f in change_targets(action.action_type, action.params)
            or not same_value(f, before.get(f.value), after.get(f.value))
        ]
        if not lines:
            return "No field changed."
        return format_html_join(
            "",
            '<div class="br-before-after{}"><strong>{}:</strong> {} → {}</div>',
            ((changed, label, old, new) for label, old, new, changed in lines),
        )

    @admin.display(description="Deployment")
    def deployment_link(self, action: Action):
        """The scenario deployment this action belongs to, if any."""
        if action.deployment_id is None:
            return EMPTY
        url = reverse("admin:scenarios_deployment_change", args=[action.deployment_id])
        return format_html('<a href="{}">Deployment #{}</a>', url, action.deployment_id)

    @admin.display(description="Rollback")
    def rollback_deadline_display(self, action: Action) -> str:
        return rollback_deadline_text(action)

    @admin.display(description="Values")
    def state_table(self, action: Action):
        """Approval baseline, before, after (read back) and target of each field, side by side."""
        currency = action.connection.currency
        targets = change_targets(action.action_type, action.params)
        states = [action.baseline_state or {}, action.before_state or {}, action.after_state or {}]
        fields = [f for f in Field if f in targets or any(f.value in state for state in states)]
        if not fields:
            return EMPTY
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    FIELD_LABELS[f],
                    *(_show(f, state.get(f.value), currency) for state in states),
                    _show(f, targets.get(f), currency),
                )
                for f in fields
            ),
        )
        return format_html(
            '<table class="br-state"><thead><tr><th>Field</th><th>Seen at approval</th><th>Before</th>'
            "<th>After (read back)</th><th>Target</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    # Object buttons -----------------------------------------------------------------------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        action = self.get_object(request, object_id)
        buttons = [
            {"name": op.name, "label": op.label, "url": self._url(op.name, action.pk)}
            for op in OPERATIONS.values()
            if op.possible(action) and request.user.has_perm(op.perm)
        ]
        extra_context = {
            **(extra_context or {}),
            "operation_buttons": buttons,
            "gate": self._gate(request, action),
            # Only while a worker moves it on; a settled action's page stays put.
            "in_motion": action is not None and action.status in IN_MOTION,
            "refresh_seconds": REFRESH_SECONDS,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _gate(self, request: HttpRequest, action: Action) -> dict[str, Any]:
        """The action's latest one-entity preflight, its breaches and overrides, and what the
        user may do about them (run a preflight, request or approve an override)."""
        user = request.user
        run = latest_preflight(action)
        summary = preflight_summary(run)
        critical = [b for b in (summary or {}).get("breaches", []) if b["severity"] == CRITICAL]
        overrides = (summary or {}).get("overrides", [])
        stored = {o.pk: o for o in run.overrides.all()} if run is not None else {}
        zone = action.connection.time_zone
        may_override = user.has_perm("scenarios.override_guardrail")
        return {
            "summary": summary,
            "breaches": [(breach_pill(b), b["message"]) for b in (summary or {}).get("breaches", [])],
            "critical": len(critical),
            "pending": [
                {**o, "can_approve": not override_approve_refusal(override=stored[o["id"]], actor=user)}
                for o in overrides
                if o["state"] == PENDING
            ],
            "approved": [o for o in overrides if o["state"] == APPROVED],
            "rejected": [
                {**o, "rejected_at_text": format_time(stored[o["id"]].rejected_at, zone)}
                for o in overrides
                if o["state"] == REJECTED
            ],
            "can_preflight": user.has_perm("scenarios.run_preflight"),
            "can_request_override": may_override and bool(critical),
            "preflight_url": self._url("preflight", action.pk),
            "override_url": self._url("override_request", action.pk),
        }

    def get_urls(self):
        view = self.admin_site.admin_view
        name = self._url_name
        return [
            # Before the operations: "<id>/override/<n>/approve/" would otherwise match "approve".
            path(
                "<path:object_id>/override/<int:override_id>/approve/",
                view(self.override_approve_view),
                name=name("override_approve"),
            ),
            path("<path:object_id>/override/", view(self.override_request_view), name=name("override_request")),
            path("<path:object_id>/preflight/", view(self.preflight_view), name=name("preflight")),
            *(
                path(f"<path:object_id>/{op}/", view(self.operation_view), {"operation": op}, name=name(op))
                for op in OPERATIONS
            ),
            path("confirm/<str:token>/", view(self.confirm_view), name=name("confirm")),
            path("confirm/<str:token>/result/", view(self.result_view), name=name("result")),
            *super().get_urls(),
        ]

    @staticmethod
    def _url_name(suffix: str) -> str:
        return f"actions_action_{suffix}"

    def _url(self, suffix: str, *args: Any) -> str:
        return reverse(f"admin:{self._url_name(suffix)}", args=args)

    # The safety gate's buttons ------------------------------------------------------------

    @method_decorator(require_POST)
    def preflight_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """Run the action's one-entity preflight now (of its rollback once it ran)."""
        action = self.get_object(request, object_id)
        try:
            run = action_preflight_request(action=action, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"The preflight of action #{action.pk} was refused: {exc.message}")
        else:
            level = (
                messages.WARNING
                if run.has_critical or run.status != PreflightRun.Status.SUCCEEDED
                else messages.SUCCESS
            )
            messages.add_message(request, level, gate_summary(Action.objects.get(pk=action.pk)))
        return HttpResponseRedirect(self._url("change", action.pk) + "#safety-gate")

    @method_decorator(require_POST)
    def override_request_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """Ask to override the critical breaches of the action's latest preflight."""
        action = self.get_object(request, object_id)
        shown = request.POST.get("preflight", "")
        latest = latest_preflight(action)
        if latest is None or latest.run_id != shown:
            messages.error(
                request, "The preflight changed meanwhile; review the new one before requesting an override."
            )
        else:
            try:
                action_override_request(action=action, actor=request.user, reason=request.POST.get("reason", ""))
            except DomainError as exc:
                messages.error(request, f"The override was not requested: {exc.message}")
            else:
                messages.success(
                    request,
                    f"Override of {latest.run_id} requested. Another person with the override permission must "
                    "approve it.",
                )
        return HttpResponseRedirect(self._url("change", action.pk) + "#safety-gate")

    @method_decorator(require_POST)
    def override_approve_view(self, request: HttpRequest, object_id: str, override_id: int) -> HttpResponseRedirect:
        """The second person approves an override of this action's breaches."""
        action = self.get_object(request, object_id)
        override = (
            GuardrailOverride.objects.filter(pk=override_id, preflight__action=action)
            .select_related("tenant", "preflight__action", "requested_by")
            .first()
        )
        if override is None:
            messages.error(request, "That override no longer exists.")
        else:
            try:
                override_approve(override=override, actor=request.user)
            except DomainError as exc:
                messages.error(request, f"The override was not approved: {exc.message}")
            else:
                messages.success(request, f"Override of {override.preflight.run_id} approved.")
        return HttpResponseRedirect(self._url("change", action.pk) + "#safety-gate")

    # Bulk actions -------------------------------------------------------------------------

    @admin.action(description="Approve selected actions", permissions=["approve"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._start(request, "approve", list(queryset.values_list("pk", flat=True)), bulk=True)

    @admin.action(description="Reject selected actions", permissions=["reject"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._start(request, "reject", list(queryset.values_list("pk", flat=True)), bulk=True)

    @admin.action(description="Cancel selected actions", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._start(request, "cancel", list(queryset.values_list("pk", flat=True)), bulk=True)

    @admin.action(description="Execute selected actions now", permissions=["execute"])
    def execute_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._start(request, "execute", list(queryset.values_list("pk", flat=True)), bulk=True)

    @admin.action(description="Roll back selected actions", permissions=["rollback"])
    def rollback_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._start(request, "rollback", list(queryset.values_list("pk", flat=True)), bulk=True)

    # Confirmation flow ----------------------------------------------------------------------

    def operation_view(self, request: HttpRequest, object_id: str, operation: str) -> HttpResponseRedirect:
        """The object button: open a confirmation for this one action."""
        action = self.get_object(request, object_id)
        return self._start(request, operation, [action.pk], bulk=False)

    def _start(self, request: HttpRequest, operation: str, ids: list[int], *, bulk: bool) -> HttpResponseRedirect:
        op = self._operation_for(request, operation)
        token = confirmation_open(request, {"operation": op.name, "ids": ids, "bulk": bulk})
        return HttpResponseRedirect(self._url("confirm", token))

    def _operation_for(self, request: HttpRequest, name: str) -> Operation:
        op = OPERATIONS[name]
        if not request.user.has_perm(op.perm):
            raise denied(request.user, op.perm)
        return op

    def confirm_view(self, request: HttpRequest, token: str) -> HttpResponse:
        """GET: what will happen to each action. POST: do it, once, then redirect."""
        pending = confirmation_get(request, token)
        if pending is None:
            messages.warning(request, "That confirmation has expired. Select the actions again.")
            return HttpResponseRedirect(self._url("changelist"))
        op = self._operation_for(request, pending["operation"])
        if pending["result"] is not None:
            return self._after(request, token, pending)  # a second submit shows the first outcome
        actions = list(self.get_queryset(request).filter(pk__in=pending["ids"]).order_by("pk"))
        form = OperationForm(request.POST if request.method == "POST" else None, operation=op, user=request.user)
        if request.method == "POST" and form.is_valid():
            results = actions_apply_bulk(actions=actions, actor=request.user, operation=op.service, **form.options())
            outcome = [{"id": r.action.pk, "done": r.done, "reason": r.reason} for r in results]
            confirmation_close(request, token, outcome)
            return self._after(request, token, {**pending, "result": outcome}, report=True)
        return self._render_confirmation(request, op, actions, form, bulk=pending["bulk"])

    def _render_confirmation(
        self, request: HttpRequest, op: Operation, actions: list[Action], form: OperationForm, *, bulk: bool
    ) -> TemplateResponse:
        # What each action's service would decide, judged without writing: the gate reads the
        # live values as unsaved previews (outside any transaction) and judges those.
        outcomes = actions_judge(operation=op.name, actions=actions, actor=request.user)
        runs = {pk: judged.preflight for pk, judged in outcomes.items() if judged.preflight is not None}
        ids = [a.pk for a in actions]
        actions = list(
            self.get_queryset(request).filter(pk__in=ids).prefetch_related(preflights_prefetch()).order_by("pk")
        )
        when = when_texts(actions) if op.name == "approve" else {}
        rows = [
            action_row(
                a,
                op,
                run=runs.get(a.pk),
                will_apply=outcomes[a.pk].done,
                reason=outcomes[a.pk].refusal,
                when=when.get(a.pk, "") if outcomes[a.pk].done else "",
                gate=gate_summary(a, runs.get(a.pk)) if op.name in ("approve", "execute", "rollback") else "",
            )
            for a in actions
        ]
        single = None if bulk or not actions else actions[0]
        count = sum(row["will_apply"] for row in rows)
        subject = f"action #{single.pk}" if single else f"{len(actions)} action{'s' if len(actions) != 1 else ''}"
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{op.label} {subject}?",
            "operation": op,
            "rows": rows,
            "will_apply": count,
            "notes": approval_notes({a.tenant for a in actions}) if op.name == "approve" else [],
            "form": form,
            "single": single,
            "back_url": self._url("change", single.pk) if single else self._url("changelist"),
        }
        return TemplateResponse(request, "admin/actions/action/confirm_operation.html", context)

    def _after(self, request: HttpRequest, token: str, pending: dict, *, report: bool = False) -> HttpResponseRedirect:
        """Where a submitted confirmation leads: the action page with a message for one
        action, the result page for a bulk run."""
        if pending["bulk"]:
            return HttpResponseRedirect(self._url("result", token))
        if not pending["result"]:
            messages.warning(request, "That action is no longer visible to you; nothing was done.")
            return HttpResponseRedirect(self._url("changelist"))
        [outcome] = pending["result"]
        op = OPERATIONS[pending["operation"]]
        if report and outcome["done"]:
            messages.success(request, f"Action #{outcome['id']} was {op.past}.")
        elif report:
            messages.error(request, f"Action #{outcome['id']} was not {op.past}: {outcome['reason']}")
        return HttpResponseRedirect(self._url("change", outcome["id"]))

    def result_view(self, request: HttpRequest, token: str) -> HttpResponse:
        """What a bulk run did: each action done or skipped, with the reason."""
        pending = confirmation_get(request, token)
        if pending is None or pending["result"] is None:
            return HttpResponseRedirect(self._url("changelist"))
        op = OPERATIONS[pending["operation"]]
        ids = [r["id"] for r in pending["result"]]
        actions = self.get_queryset(request).prefetch_related(preflights_prefetch()).in_bulk(ids)
        rows = [
            action_row(actions[r["id"]], op, done=r["done"], reason=r["reason"])
            for r in pending["result"]
            if r["id"] in actions
        ]
        done = sum(r["done"] for r in rows)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{op.label}: {done} {op.past}, {len(rows) - done} skipped",
            "operation": op,
            "rows": rows,
            "done": done,
            "skipped": len(rows) - done,
        }
        return TemplateResponse(request, "admin/actions/action/operation_result.html", context)
