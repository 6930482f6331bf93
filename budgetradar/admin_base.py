"""Building blocks every BudgetRadar admin class shares.

- ``scope_for_user`` is the admin's one tenant filter (built on ``budgetradar.tenancy``):
  lists, object pages, foreign-key choices, autocomplete and list filters all go through
  it, and another tenant's object is a 404, never a redirect that confirms it exists.
- ``TenantScopedAdmin`` and ``TenantScopedHistoryAdmin`` are the base classes; the latter
  adds django-simple-history with change reasons, a tenant-safe history page and a
  read-only view of past versions (revert is disabled, so nothing there ever saves).
- Small display helpers: coloured badges, money with its currency, readable JSON.
- One-time confirmation tokens that make confirmation pages safe to double-submit.
- Lists that stay fast at a million rows: ``CappedCountPaginator`` (no full ``COUNT(*)``),
  relation filters whose choices come from the small related table, and
  ``DATE_FILTER`` in place of ``date_hierarchy`` (whose choices scan every row).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_field, get_fields_from_path, unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist, PermissionDenied
from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db import connections
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from simple_history.admin import SimpleHistoryAdmin
from simple_history.models import DeletedObject
from simple_history.template_utils import HistoricalRecordContextHelper

from budgetradar.errors import DomainError
from budgetradar.models import Plan, Tenant
from budgetradar.tenancy import is_platform_staff, refusal_message, scope_to_user, tenant_of
from budgetradar.timefmt import format_time
from budgetradar.words import ACTORS, actor_display, format_money  # noqa: F401 (admin modules import it from here)

EMPTY = "—"

# Tones of the status badges; every model's statuses map onto these few colours so that
# green/amber/red mean the same thing on every page.
GREEN, AMBER, RED, BLUE, GREY = "green", "amber", "red", "blue", "grey"


def badge(label: str, tone: str) -> SafeString:
    """A coloured pill (styles in templates/admin/base_site.html)."""
    return format_html('<span class="br-badge br-badge-{}">{}</span>', tone, label)


def pretty_json(value: Any) -> SafeString | str:
    """JSON as an indented, escaped ``<pre>`` block (or a dash when empty)."""
    if value in (None, "", {}, []):
        return EMPTY
    return format_html('<pre class="br-json">{}</pre>', json.dumps(value, indent=2, sort_keys=True, default=str))


def admin_link(obj: Model | None, label: str | None = None) -> SafeString | str:
    """A link to ``obj``'s admin page, or a dash."""
    if obj is None:
        return EMPTY
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label if label is not None else str(obj))


def denied(user, perm: str) -> PermissionDenied:
    """A 403 that says why: what the permission allows, the role it needs, the user's role."""
    app_label, codename = perm.split(".", 1)
    name = (
        Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        .values_list("name", flat=True)
        .first()
    )
    doing = name.removeprefix("Can ").lower() if name else codename.replace("_", " ")
    return PermissionDenied(refusal_message(user, perm, doing=doing))


# Tenant scoping ---------------------------------------------------------------------------


def has_tenant_field(model: type[Model]) -> bool:
    try:
        return model._meta.get_field("tenant").related_model is Tenant
    except FieldDoesNotExist:
        return False


def scope_for_user(queryset: QuerySet, user) -> QuerySet:
    """The rows of ``queryset`` the admin may show ``user``, for any model it touches.

    Tenant-owned rows go through ``scope_to_user``; tenants, plans and users are scoped
    through their link to the user's tenant; any other model is platform-staff only, so
    a new relation can never leak rows by default.
    """
    model = queryset.model
    if has_tenant_field(model):
        return scope_to_user(queryset, user)
    if is_platform_staff(user):
        return queryset
    tenant = tenant_of(user)
    if tenant is None:
        return queryset.none()
    if model is Tenant:
        return queryset.filter(pk=tenant.pk)
    if model is Plan:
        return queryset.filter(tenants=tenant)
    if model is get_user_model():
        return queryset.filter(membership__tenant=tenant)
    return queryset.none()


# Lists -------------------------------------------------------------------------------------


class CappedCountPaginator(Paginator):
    """A changelist paginator that never counts more than ``exact_up_to + 1`` rows.

    Up to ``exact_up_to`` matching rows the count is exact (``COUNT(*)`` over a ``LIMIT``
    subquery, an index range). Beyond it, PostgreSQL's planner estimate for the same
    query is used and the list says "about N"; other databases say "more than N".
    Page links follow the figure shown; a page past the real end is empty, not an error.

    A page after the first is read in two steps (a "deferred join"): the ids of the page,
    ``ORDER BY ... OFFSET`` over the list's index alone (an index-only scan when the
    ordering and filters are in one index), then those rows with their related rows.
    The rows skipped over are never joined, so page 1,000 is not 1,000 times the joins.
    """

    exact_up_to = 10_000

    def validate_number(self, number) -> int:
        """Any page number once the count is an estimate: the real end may lie past it."""
        if self.count_is_exact:
            return super().validate_number(number)
        number = self._as_int(number)
        if number < 1:
            raise EmptyPage("That page number is less than 1")
        return number

    def _as_int(self, number) -> int:
        try:
            return int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("That page number is not an integer") from None

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if self.count_is_exact and top + self.orphans >= self.count:
            top = self.count
        if bottom == 0 or not isinstance(self.object_list, QuerySet):
            return self._get_page(self.object_list[bottom:top], number, self)
        ids = list(self.object_list.values_list("pk", flat=True)[bottom:top])
        return self._get_page(self.object_list.filter(pk__in=ids), number, self)

    @cached_property
    def count(self) -> int:
        rows = self.object_list.order_by().values("pk")[: self.exact_up_to + 1].count()
        self.estimated = None
        if rows <= self.exact_up_to:
            return rows
        self.estimated = planner_row_estimate(self.object_list)
        return max(self.estimated or 0, rows)

    @property
    def count_is_exact(self) -> bool:
        return self.count <= self.exact_up_to

    @cached_property
    def count_text(self) -> str:
        """What the list says about its size: "1,234", "about 1,200,000" or "more than 10,000"."""
        count = self.count
        if self.count_is_exact:
            return f"{count:,}"
        if self.estimated:
            return f"about {count:,}"
        return f"more than {self.exact_up_to:,}"


def planner_row_estimate(queryset: QuerySet) -> int | None:
    """PostgreSQL's estimate of the rows ``queryset`` matches (planning only, no scan);
    None on other databases. As good as the table's statistics (autovacuum's ANALYZE)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    sql, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class ScopedRelatedFieldListFilter(admin.RelatedFieldListFilter):
    """A relation filter whose choices are the related table's rows the user may see.

    Django's ``RelatedOnlyFieldListFilter`` finds the choices with a DISTINCT over the
    listed table (every action, every log row); this reads the related table (a tenant's
    connections, members, scenarios), which stays small whatever the list's size.
    """

    def field_choices(self, field, request: HttpRequest, model_admin) -> list[tuple[Any, str]]:
        related = scope_for_user(field.related_model._default_manager.all(), request.user)
        ordering = self.field_admin_ordering(field, request, model_admin)
        if ordering:
            related = related.order_by(*ordering)
        return [(obj.pk, str(obj)) for obj in related]


# A date filter that needs no query for its choices (today, past 7 days, this month, this
# year). ``date_hierarchy`` would list the years, months or days present, which is a
# DISTINCT over every row in range: off on the lists that grow without bound.
DATE_FILTER = ("created_at", admin.DateFieldListFilter)


class TenantOwnedForm(forms.ModelForm):
    """A model form whose new rows belong to ``owner_tenant`` before validation runs.

    Setting the tenant on the instance up front (rather than in ``save_model``) lets the
    model's tenant-scoped unique constraints be validated as form errors.
    """

    owner_tenant: Tenant | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("instance") is None and self.owner_tenant is not None:
            kwargs["instance"] = self._meta.model(tenant=self.owner_tenant)
        super().__init__(*args, **kwargs)


class TenantScopedAdmin(admin.ModelAdmin):
    """Base admin: every query scoped to the user's tenant, other tenants' rows are 404.

    Tenant members never choose a tenant: the field is shown disabled and new rows get
    the member's tenant. Platform staff (superusers without a membership) see every
    tenant, with a tenant column and filter added to lists.
    """

    form = TenantOwnedForm
    list_per_page = 50
    paginator = CappedCountPaginator
    show_full_result_count = False  # "(N total)" would count every row of the tenant

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return scope_for_user(super().get_queryset(request), request.user)

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as exc:
            # A service refused the save and its transaction rolled back: say why, not 500.
            messages.error(request, exc.message)
            return HttpResponseRedirect(request.get_full_path())

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Model:
        """The object, or 404 — Django's default redirect would confirm that the id exists."""
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404(f"No {self.model._meta.verbose_name} with id {object_id}.")
        return obj

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs: Any):
        if "queryset" not in kwargs:
            base = self.get_field_queryset(kwargs.get("using"), db_field, request)
            if base is None:
                base = db_field.remote_field.model._default_manager.using(kwargs.get("using"))
            kwargs["queryset"] = scope_for_user(base.all(), request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs: Any):
        if db_field.name == "tenant" and db_field.related_model is Tenant and not is_platform_staff(request.user):
            # Shown for context, never chosen: disabled (the posted value is ignored) and
            # without the add/change links Django puts next to relation fields.
            field = self.formfield_for_foreignkey(db_field, request, **kwargs)
            field.disabled = True
            return field
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_form(self, request: HttpRequest, obj: Model | None = None, **kwargs: Any):
        form = super().get_form(request, obj, **kwargs)
        owner = tenant_of(request.user)
        if obj is None and owner is not None and has_tenant_field(self.model) and issubclass(form, TenantOwnedForm):
            form = type(form.__name__, (form,), {"owner_tenant": owner})
        return form

    def get_list_display(self, request: HttpRequest) -> list:
        columns = list(super().get_list_display(request))
        if is_platform_staff(request.user) and has_tenant_field(self.model) and "tenant" not in columns:
            columns.insert(1, "tenant")
        return columns

    def get_list_filter(self, request: HttpRequest) -> list:
        filters = [self._scoped_filter(entry) for entry in super().get_list_filter(request)]
        if is_platform_staff(request.user) and has_tenant_field(self.model):
            filters.append(("tenant", ScopedRelatedFieldListFilter))
        return filters

    def get_list_select_related(self, request: HttpRequest):
        related = super().get_list_select_related(request)
        if is_platform_staff(request.user) and has_tenant_field(self.model) and isinstance(related, list | tuple):
            return [*related, "tenant"]
        return related

    def _scoped_filter(self, entry):
        """Relation filters list only related rows the user can see.

        Django's default relation filter lists every row of the related table, which
        would show one tenant the names of another tenant's connections.
        """
        if isinstance(entry, str) and get_fields_from_path(self.model, entry)[-1].is_relation:
            return (entry, ScopedRelatedFieldListFilter)
        return entry


class ReadOnlyAdminMixin:
    """No adding, changing or deleting through the admin (mirrors, logs, worker rows)."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# History ----------------------------------------------------------------------------------


class AuditedForm(TenantOwnedForm):
    """A tenant-owned form that asks why; the answer goes into the object's history."""

    change_reason = forms.CharField(
        required=False,
        max_length=1000,
        label="Reason for this change",
        help_text="Recorded in the history next to your name. Leave empty to record the changed fields.",
        widget=forms.TextInput(attrs={"size": 60}),
    )


def change_reason_for(form: forms.ModelForm, *, change: bool) -> str:
    """The reason the user gave, or one that names the fields changed in the admin."""
    given = (form.cleaned_data.get("change_reason") or "").strip()
    if given:
        return given
    if not change:
        return "created in the admin"
    labels = [str(form.fields[name].label or name) for name in form.changed_data if name != "change_reason"]
    return f"changed in the admin: {', '.join(labels)}" if labels else "saved in the admin without changes"


class TenantScopedHistoryAdmin(TenantScopedAdmin, SimpleHistoryAdmin):
    """A tenant-scoped admin for models with django-simple-history.

    History is one click away (a column in the list and the History button), every
    admin save records a change reason (the user is recorded by
    ``HistoryRequestMiddleware``), and past versions are shown read-only: with revert
    disabled there is no path from history back to a save.
    """

    form = AuditedForm

    def get_list_display(self, request: HttpRequest) -> list:
        return [*super().get_list_display(request), "history_link"]

    @admin.display(description="History")
    def history_link(self, obj: Model) -> SafeString:
        opts = obj._meta
        return format_html(
            '<a href="{}">History</a>', reverse(f"admin:{opts.app_label}_{opts.model_name}_history", args=[obj.pk])
        )

    def get_fieldsets(self, request: HttpRequest, obj: Model | None = None):
        """Ask for a change reason on editable pages; omit it on view-only pages."""
        fieldsets = [
            (name, {**options, "fields": list(options["fields"])})
            for name, options in super().get_fieldsets(request, obj)
        ]
        for _name, options in fieldsets:
            options["fields"] = [field for field in options["fields"] if field != "change_reason"]
        editable = self.has_change_permission(request, obj) if obj is not None else self.has_add_permission(request)
        if editable and issubclass(self.form, AuditedForm):
            fieldsets.append(("Audit", {"fields": ["change_reason"]}))
        return fieldsets

    def save_model(self, request: HttpRequest, obj: Model, form: forms.ModelForm, change: bool) -> None:
        obj._change_reason = change_reason_for(form, change=change)
        super().save_model(request, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        obj._change_reason = "deleted in the admin"
        super().delete_model(request, obj)

    def get_historical_record_context_helper(self, request: HttpRequest, historical_record):
        return ReadableHistoryHelper(self.model, historical_record)

    def set_history_delta_changes(self, request: HttpRequest, historical_records, foreign_keys_are_objs=True):
        """Readable changes, and who made each version: a person's name or the worker's role."""
        super().set_history_delta_changes(request, historical_records, foreign_keys_are_objs)
        for record in historical_records:
            record.actor_name = history_actor(record)
            record.reason_text = history_reason(record)

    def history_view(self, request: HttpRequest, object_id: str, extra_context: dict | None = None) -> HttpResponse:
        # simple-history falls back to the newest historical row when the object is not in
        # get_queryset(), which would show another tenant's history; 404 first.
        self.get_object(request, unquote(object_id))
        return super().history_view(request, object_id, extra_context)

    def history_form_view(
        self, request: HttpRequest, object_id: str, version_id: str, extra_context: dict | None = None
    ) -> HttpResponse:
        """One past version, read-only.

        Replaces simple-history's form view, which saves a POST even with revert
        disabled and does not scope the object to the tenant.
        """
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        obj = self.get_object(request, unquote(object_id))
        history = getattr(obj, self.model._meta.simple_history_manager_attribute)
        record = get_object_or_404(history.all().select_related("history_user"), history_id=version_id)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{obj} as of {format_time(record.history_date, timezone.get_current_timezone_name())}",
            "opts": self.model._meta,
            "object": obj,
            "record": record,
            "rows": _version_rows(self.model, record),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/history_version.html", context)


def history_actor(record: Model) -> str:
    """Who made a historical version: the user, else the worker the change reason names."""
    if record.history_user_id is not None:
        user = record.history_user
        return (user.get_full_name() or user.username) if user is not None else "a user who was deleted"
    token = (record.history_change_reason or "").split(" ", 1)[0]
    if ":" in token and token.partition(":")[0] in ACTORS:
        return actor_display(token)
    if "reconcil" in (record.history_change_reason or "").lower():
        return ACTORS["reconciler"]
    return f"{ACTORS['system']} (no person)"


def history_reason(record: Model) -> str:
    """The change reason with a worker's owner token replaced by its name."""
    reason = record.history_change_reason or ""
    token, _, rest = reason.partition(" ")
    if ":" in token and token.partition(":")[0] in ACTORS:
        return f"{actor_display(token)} {rest}".strip()
    return reason or EMPTY


class ReadableHistoryHelper(HistoricalRecordContextHelper):
    """Field changes as a person reads them: choice labels, money and times in the page's
    format, a dash for empty relations (not "Deleted user (pk=None)"), JSON not dict reprs."""

    def prepare_delta_change_value(self, change, value):
        field = self.model._meta.get_field(change.field)
        if isinstance(value, DeletedObject):
            return EMPTY if value.pk is None else f"#{value.pk} (deleted)"
        if field.many_to_many:
            return super().prepare_delta_change_value(change, value)
        if field.is_relation:
            return EMPTY if value is None else str(value)
        if isinstance(value, dict | list):
            return json.dumps(value, sort_keys=True, default=str) if value else EMPTY
        return str(display_for_field(value, field, EMPTY))


def _version_rows(model: type[Model], record: Model) -> list[tuple[str, str]]:
    """(label, value) for every field the history tracks; excluded fields (secrets) are
    not on the historical row at all, so they cannot appear here."""
    rows = []
    for field in model._meta.concrete_fields:
        if not hasattr(record, field.attname):
            continue
        try:
            value = getattr(record, field.name)
        except ObjectDoesNotExist:
            value = f"#{getattr(record, field.attname)} (deleted)"
        rows.append((str(field.verbose_name).capitalize(), display_for_field(value, field, EMPTY)))
    return rows


# One-time confirmations --------------------------------------------------------------------

_CONFIRMATIONS = "budgetradar_admin_confirmations"
_CONFIRMATIONS_KEPT = 20


def confirmation_open(request: HttpRequest, payload: dict) -> str:
    """Remember what a confirmation page is about to confirm; return its one-time token."""
    token = secrets.token_urlsafe(16)
    store = request.session.get(_CONFIRMATIONS, {})
    store[token] = {**payload, "result": None}
    request.session[_CONFIRMATIONS] = dict(list(store.items())[-_CONFIRMATIONS_KEPT:])
    return token


def confirmation_get(request: HttpRequest, token: str) -> dict | None:
    return request.session.get(_CONFIRMATIONS, {}).get(token)


def confirmation_close(request: HttpRequest, token: str, result: Any) -> None:
    """Record the outcome; a second submit of the same token then shows it instead of
    running again."""
    store = request.session.get(_CONFIRMATIONS, {})
    store[token] = {**store.get(token, {}), "result": result}
    request.session[_CONFIRMATIONS] = store
