"""Approve, reject, cancel, execute and roll back on the action admin: the bulk actions,
the object buttons, and the confirmation page that lists what will happen (judged by
``actions.services.judgement``, writing nothing) before its POST calls the services once."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from actions.admin.operations import OPERATIONS, Operation, OperationForm, action_row
from actions.admin.presentation import gate_summary
from actions.models import Action
from actions.selectors import approval_notes, when_texts
from actions.services.judgement import actions_judge
from actions.services.lifecycle import actions_apply_bulk
from budgetradar.admin_base import confirmation_close, confirmation_get, confirmation_open, denied
from safety.gate import preflights_prefetch


class ActionConfirmationMixin:
    """The confirmation flow of ``ActionAdmin`` (its ``_url``, ``get_queryset`` and ``admin_site``)."""

    # Who may start each operation (the bulk actions' ``permissions``; the services check again).
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
