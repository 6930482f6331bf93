"""Ad accounts: settings, write-only credentials, health (circuit breaker, last test, last
sync) and the Test connection / Sync now / Reset circuit breaker buttons, each calling its
service.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from actions.services.circuit import circuit_reset
from budgetradar.admin_base import AMBER, GREEN, GREY, RED, TenantScopedHistoryAdmin, badge, denied
from budgetradar.errors import DomainError
from budgetradar.tenancy import is_platform_staff
from budgetradar.timefmt import format_time
from platforms.admin.forms import CircuitResetForm, PlatformConnectionForm
from platforms.credentials import ALL_CREDENTIAL_INPUTS
from platforms.models import CircuitState, PlatformConnection
from platforms.services import connection_create, connection_sync, connection_test

CIRCUIT_TONES = {CircuitState.CLOSED: GREEN, CircuitState.HALF_OPEN: AMBER, CircuitState.OPEN: RED}


@admin.register(PlatformConnection)
class PlatformConnectionAdmin(TenantScopedHistoryAdmin):
    """Ad accounts: settings, health (circuit breaker, last test, last sync), and the
    Test connection / Sync now buttons."""

    form = PlatformConnectionForm
    list_display = [
        "name",
        "platform",
        "account_id",
        "currency",
        "is_active",
        "circuit",
        "last_test",
        "last_synced_at",
    ]
    list_select_related = []
    list_filter = ["platform", "is_active", "circuit_state", "last_test_ok"]
    search_fields = ["name", "account_id"]
    date_hierarchy = "created_at"
    fieldsets = [
        (None, {"fields": ["tenant", "name", "platform", "account_id", "currency", "time_zone", "is_active"]}),
        ("Execution policy", {"fields": ["execution_mode"]}),
        ("Credentials", {"fields": ["stored_credentials", *ALL_CREDENTIAL_INPUTS, "api_base_url"]}),
        (
            "Health",
            {
                "fields": [
                    "circuit",
                    "consecutive_failures",
                    "circuit_opened_at",
                    "circuit_reason",
                    "last_test",
                    "last_tested_at",
                    "last_synced_at",
                    "created_at",
                ]
            },
        ),
    ]
    readonly_fields = [
        "stored_credentials",
        "circuit",
        "consecutive_failures",
        "circuit_opened_at",
        "circuit_reason",
        "last_test",
        "last_tested_at",
        "last_synced_at",
        "created_at",
    ]

    def get_queryset(self, request: HttpRequest):
        # Lists never decrypt credentials; pages that show the key names load them once.
        return super().get_queryset(request).defer("credentials")

    def get_readonly_fields(self, request: HttpRequest, obj: PlatformConnection | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            readonly += ["platform", "account_id"]  # the mirror belongs to this account
        if not is_platform_staff(request.user):
            readonly.append("api_base_url")  # an endpoint override would send credentials elsewhere
        return readonly

    def get_fieldsets(self, request: HttpRequest, obj: PlatformConnection | None = None):
        """No health facts on the add page; no credentials field for those who cannot change."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:  # a new connection follows the tenant's execution policy until changed
            fieldsets = [(name, options) for name, options in fieldsets if name not in ("Health", "Execution policy")]
        hidden = {"stored_credentials"} if obj is None else set()
        if obj is not None and not self.has_change_permission(request, obj):
            hidden.update(ALL_CREDENTIAL_INPUTS)
        if obj is not None:  # the platform cannot change: only its own credential fields
            hidden.update(i for i in ALL_CREDENTIAL_INPUTS if not i.startswith(f"cred_{obj.platform}__"))
        if not is_platform_staff(request.user):
            hidden.update(i for i in ALL_CREDENTIAL_INPUTS if i.endswith("__token_uri"))  # would send secrets elsewhere
        for _name, options in fieldsets:
            options["fields"] = [field for field in options["fields"] if field not in hidden]
        return fieldsets

    @method_decorator(sensitive_post_parameters(*ALL_CREDENTIAL_INPUTS))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(request, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: PlatformConnection, form: forms.ModelForm, change: bool) -> None:
        """New connections go through ``connection_create`` (plan limit, audit); changes are
        saved with a change reason, and credentials are replaced only when given."""
        credentials = form.cleaned_data.get("new_credentials")
        if change:
            if credentials:
                obj.credentials = credentials
            super().save_model(request, obj, form, change)
            return
        created = connection_create(
            tenant=obj.tenant,
            actor=request.user,
            name=obj.name,
            platform=obj.platform,
            account_id=obj.account_id,
            currency=obj.currency,
            time_zone=obj.time_zone,
            credentials=credentials or {},
            api_base_url=obj.api_base_url,
        )
        obj.pk = created.pk  # the admin logs and redirects to the row the service created

    @admin.display(description="Credentials")
    def stored_credentials(self, connection: PlatformConnection) -> str:
        keys = connection.credential_keys
        return f"{', '.join(keys)} set" if keys else "No credentials stored"

    @admin.display(description="Circuit breaker", ordering="circuit_state")
    def circuit(self, connection: PlatformConnection):
        """The state as a badge, with the reason it opened and when."""
        pill = badge(connection.get_circuit_state_display(), CIRCUIT_TONES.get(connection.circuit_state, GREY))
        if connection.circuit_state == CircuitState.CLOSED:
            return pill
        opened = (
            f" (since {format_time(connection.circuit_opened_at, connection.time_zone)})"
            if connection.circuit_opened_at
            else ""
        )
        return format_html("{} {}{}", pill, connection.circuit_reason or "repeated failures", opened)

    @admin.display(description="Last test", ordering="last_test_ok")
    def last_test(self, connection: PlatformConnection):
        if connection.last_test_ok is None:
            return badge("Not tested", GREY)
        tone, label = (GREEN, "OK") if connection.last_test_ok else (RED, "Failed")
        pill = badge(label, tone)
        return pill if not connection.last_test_message else pill + " " + connection.last_test_message

    # Test connection / Sync now ---------------------------------------------------------

    def get_urls(self):
        opts = self.model._meta
        name = f"{opts.app_label}_{opts.model_name}"
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/test/", view(self.test_view), name=f"{name}_test"),
            path("<path:object_id>/sync/", view(self.sync_view), name=f"{name}_sync"),
            path("<path:object_id>/reset-circuit/", view(self.reset_circuit_view), name=f"{name}_reset_circuit"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        connection = self.get_object(request, object_id)
        extra_context = {**(extra_context or {}), "connection_tools": self._tools(request, connection)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _tools(self, request: HttpRequest, connection: PlatformConnection) -> list[dict[str, Any]]:
        """The buttons this user may press on the connection page. Test and sync are POST
        buttons; the circuit reset (only when the breaker has counted failures) opens a
        confirmation page."""
        tools = [
            ("test", "Test connection", "platforms.test_platformconnection", True),
            ("sync", "Sync now", "platforms.sync_platformconnection", True),
        ]
        if connection.circuit_state != CircuitState.CLOSED or connection.consecutive_failures:
            tools.append(("reset_circuit", "Reset circuit breaker", "platforms.reset_circuit", False))
        return [
            {"name": name, "label": label, "url": self._tool_url(name, connection.pk), "post": post}
            for name, label, perm, post in tools
            if request.user.has_perm(perm)
        ]

    def _tool_url(self, name: str, pk: int) -> str:
        opts = self.model._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=[pk])

    @method_decorator(require_POST)
    def test_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """Test the credentials against the platform and report the answer."""
        connection = self._connection_for(request, object_id, "platforms.test_platformconnection")
        try:
            result = connection_test(connection=connection, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"Could not test {connection.name}: {exc.message}")
        else:
            level = messages.SUCCESS if result.ok else messages.ERROR
            outcome = "works" if result.ok else "failed"
            messages.add_message(request, level, f"Connection {connection.name} {outcome}: {result.message}")
        return self._back_to(connection)

    @method_decorator(require_POST)
    def sync_view(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """Refresh the entity mirror and performance from the platform."""
        connection = self._connection_for(request, object_id, "platforms.sync_platformconnection")
        try:
            result = connection_sync(connection=connection, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"Could not sync {connection.name}: {exc.message}")
        else:
            messages.success(request, f"Synced {connection.name}: {result.message}")
        return self._back_to(connection)

    def reset_circuit_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: what a reset does, and a reason field. POST: close the circuit."""
        connection = self._connection_for(request, object_id, "platforms.reset_circuit")
        form = CircuitResetForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                circuit_reset(connection=connection, actor=request.user, reason=form.cleaned_data["reason"])
            except DomainError as exc:
                messages.error(request, f"Could not reset the circuit breaker of {connection.name}: {exc.message}")
            else:
                messages.success(
                    request, f"The circuit breaker of {connection.name} is closed again; live work may resume."
                )
            return self._back_to(connection)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Reset the circuit breaker of {connection.name}?",
            "connection": connection,
            "circuit": self.circuit(connection),
            "threshold": settings.CIRCUIT_BREAKER_THRESHOLD,
            "form": form,
            "back_url": self._tool_url("change", connection.pk),
        }
        return TemplateResponse(request, "admin/platforms/platformconnection/reset_circuit.html", context)

    def _connection_for(self, request: HttpRequest, object_id: str, perm: str) -> PlatformConnection:
        connection = self.get_object(request, object_id)
        if not request.user.has_perm(perm):
            raise denied(request.user, perm)
        return connection

    def _back_to(self, connection: PlatformConnection) -> HttpResponseRedirect:
        opts = self.model._meta
        return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[connection.pk]))
