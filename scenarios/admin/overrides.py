"""Overrides of critical breaches, decided on their own page (Approve / Reject through a confirmation)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from budgetradar.admin_base import (
    AMBER,
    EMPTY,
    GREEN,
    GREY,
    ReadOnlyAdminMixin,
    TenantScopedHistoryAdmin,
    admin_link,
    badge,
    denied,
)
from budgetradar.errors import DomainError
from safety.overrides import override_approve, override_approve_refusal, override_reject
from scenarios.admin.presentation import breach_badge, person_name
from scenarios.models import (
    GuardrailOverride,
)
from scenarios.selectors import STATE_LABELS, next_step, override_breaches, override_state


class OverrideDecisionForm(forms.Form):
    comment = forms.CharField(
        required=False,
        max_length=1000,
        label="Comment",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Recorded with your name in the override's history.",
    )

    def __init__(self, *args, required: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["comment"].required = required


@admin.register(GuardrailOverride)
class GuardrailOverrideAdmin(ReadOnlyAdminMixin, TenantScopedHistoryAdmin):
    """Who asked to go ahead despite critical breaches, why, and who decided. The page shows
    the breaches it lets through and what happens next; a second person with the override
    permission approves or rejects it here, on a confirmation page that takes a comment."""

    list_display = ["preflight", "scenario", "action", "state", "reason", "requested_by", "approved_by", "created_at"]
    list_select_related = ["preflight__scenario", "preflight__action__entity", "requested_by", "approved_by"]
    list_filter = ["requested_by", "approved_by"]
    search_fields = ["preflight__run_id", "reason"]
    fields = [
        "preflight_link",
        "scenario",
        "action",
        "state",
        "reason",
        "requester",
        "created_at",
        "decider",
        "decided_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).defer("preflight__inputs")

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/decide/<str:decision>/",
                view(self.decide_view),
                name="scenarios_guardrailoverride_decide",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:

        override = self.get_object(request, object_id)
        if override is None:
            return super().change_view(request, object_id, form_url, extra_context)
        may = request.user.has_perm("scenarios.override_guardrail")
        extra_context = {
            **(extra_context or {}),
            "override": override,
            "breaches": [(breach_badge(b), b.get("message", "")) for b in override_breaches(override)],
            "next_step": next_step(override),
            "can_decide": may and override.pending,
            "approve_refusal": (
                override_approve_refusal(override=override, actor=request.user) if may and override.pending else ""
            ),
            "links": _override_links(override),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def decide_view(self, request: HttpRequest, object_id: str, decision: str) -> HttpResponse:
        """GET: what approving (or rejecting) will do, with a comment field; writes nothing.
        POST: the decision through ``safety.overrides``; back to the override's page."""

        override = self.get_object(request, object_id)
        if override is None or decision not in ("approve", "reject"):
            raise Http404("No such override or decision.")
        if not request.user.has_perm("scenarios.override_guardrail"):
            raise denied(request.user, "scenarios.override_guardrail")
        back = reverse("admin:scenarios_guardrailoverride_change", args=[override.pk])
        approving = decision == "approve"
        form = OverrideDecisionForm(request.POST or None, required=not approving)
        if request.method == "POST" and form.is_valid():
            comment = form.cleaned_data["comment"]
            try:
                if approving:
                    override_approve(override=override, actor=request.user, comment=comment)
                else:
                    override_reject(override=override, actor=request.user, comment=comment)
            except DomainError as exc:
                messages.error(request, f"{override} was not {'approved' if approving else 'rejected'}: {exc.message}")
            else:
                messages.success(request, _decision_message(override, approving))
            return HttpResponseRedirect(back)
        breaches = override_breaches(override)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{'Approve' if approving else 'Reject'} the {str(override)[0].lower()}{str(override)[1:]}?",
            "override": override,
            "approving": approving,
            "consequence": _decision_consequence(override, approving, len(breaches)),
            "breaches": [(breach_badge(b), b.get("message", "")) for b in breaches],
            "form": form,
            "submit": "Yes, approve the override" if approving else "Yes, reject the override",
            "back_url": back,
        }
        return TemplateResponse(request, "admin/scenarios/guardrailoverride/decide.html", context)

    @admin.display(description="Requested by")
    def requester(self, override: GuardrailOverride) -> str:
        return person_name(override.requested_by)

    @admin.display(description="Decided by")
    def decider(self, override: GuardrailOverride) -> str:
        return person_name(override.approved_by or override.rejected_by)

    @admin.display(description="Decided at")
    def decided_at(self, override: GuardrailOverride):
        return override.approved_at or override.rejected_at or EMPTY

    @admin.display(description="Preflight")
    def preflight_link(self, override: GuardrailOverride):
        return admin_link(override.preflight, override.preflight.run_id)

    @admin.display(description="Scenario")
    def scenario(self, override: GuardrailOverride):
        scenario = override.preflight.scenario
        return admin_link(scenario, scenario.name) if scenario else EMPTY

    @admin.display(description="Action")
    def action(self, override: GuardrailOverride):
        action = override.preflight.action
        return admin_link(action, f"#{action.pk} on {action.entity.name}") if action else EMPTY

    @admin.display(description="State", ordering="approved_at")
    def state(self, override: GuardrailOverride):
        state = override_state(override)
        return badge(STATE_LABELS[state], {"approved": GREEN, "rejected": GREY}.get(state, AMBER))


def _override_links(override: GuardrailOverride) -> list[tuple[str, str]]:
    """(label, url): the scenario, its Deploy live page and its deployments, or the action."""
    preflight = override.preflight
    links = [("Preflight " + preflight.run_id, reverse("admin:scenarios_preflightrun_change", args=[preflight.pk]))]
    if preflight.scenario_id:
        links += [
            (
                f"Scenario {preflight.scenario.name}",
                reverse("admin:scenarios_scenario_change", args=[preflight.scenario_id]),
            ),
            ("Its Deploy live page", reverse("admin:scenarios_scenario_deploy", args=[preflight.scenario_id])),
            (
                "Its deployments",
                reverse("admin:scenarios_deployment_changelist") + f"?scenario__id__exact={preflight.scenario_id}",
            ),
        ]
    if preflight.action_id:
        links.append(
            (f"Action #{preflight.action_id}", reverse("admin:actions_action_change", args=[preflight.action_id]))
        )
    return links


def _decision_consequence(override: GuardrailOverride, approving: bool, count: int) -> str:
    preflight = override.preflight
    target = (
        f"action #{preflight.action_id}" if preflight.action_id else f"a live deploy of scenario {preflight.scenario}"
    )
    breaches = f"{count} critical breach{'es' if count != 1 else ''}"
    if approving:
        return (
            f"Approving lets {target} go ahead despite the {breaches} below of preflight {preflight.run_id}, "
            f"as {override.requested_by} asked (“{override.reason}”). Nothing is deployed yet: the deploy itself "
            "is still confirmed on its own page. Your name and comment go into the override's history."
        )
    return (
        f"Rejecting keeps the {breaches} below blocking {target}; {override.requested_by} sees your comment in the "
        "override's history and may request a new override. Nothing changes on the platforms."
    )


def _decision_message(override: GuardrailOverride, approving: bool) -> str:
    preflight = override.preflight
    if not approving:
        return f"{override} rejected; its breaches still block. {override.requested_by} may request a new one."
    if preflight.scenario_id:
        return f"{override} approved; scenario {preflight.scenario} may now be deployed live from its Deploy live page."
    return f"{override} approved; action #{preflight.action_id} may now go ahead."
