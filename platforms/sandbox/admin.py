"""Admin for the sandbox platform: the "platform's own UI" of the demo.

Here a demo user plays the outside world: edits a budget as if someone changed it in the
platform's interface (drift), deletes an entity, or injects faults ("rate limit twice").

Who sees what: platform staff see every sandbox account; a tenant admin sees the
accounts that one of the tenant's sandbox connections holds a working token for (as on
a real platform, access comes with the token); everyone else sees nothing.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from budgetradar.tenancy import is_platform_staff, tenant_of
from platforms.models import Platform, PlatformConnection
from platforms.sandbox.models import SandboxAccount, SandboxEntity, SandboxFault, SandboxRequest

# Only the tenant admin role holds it (budgetradar.roles), so it marks "may run the sandbox".
SANDBOX_ADMIN_PERM = "sandbox.change_sandboxfault"


def may_use_sandbox(user) -> bool:
    if is_platform_staff(user):
        return True
    return tenant_of(user) is not None and user.has_perm(SANDBOX_ADMIN_PERM)


def visible_accounts(request: HttpRequest) -> QuerySet[SandboxAccount]:
    """Sandbox accounts the user may see (computed once per request)."""
    user = request.user
    if is_platform_staff(user):
        return SandboxAccount.objects.all()
    if not may_use_sandbox(user):
        return SandboxAccount.objects.none()
    if not hasattr(request, "_sandbox_account_ids"):
        connections = list(
            PlatformConnection.objects.filter(tenant=tenant_of(user), platform=Platform.SANDBOX).only(
                "account_id", "credentials"
            )
        )
        accounts = SandboxAccount.objects.filter(account_id__in={c.account_id for c in connections})
        request._sandbox_account_ids = [
            account.pk
            for account in accounts
            if any(
                c.account_id == account.account_id and account.accepts(c.credentials.get("access_token"))
                for c in connections
            )
        ]
    return SandboxAccount.objects.filter(pk__in=request._sandbox_account_ids)


class SandboxScopedAdmin(admin.ModelAdmin):
    """Base: rows of visible accounts only; another account's row is a 404."""

    account_field = "account"
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if is_platform_staff(request.user):
            return queryset
        return queryset.filter(**{f"{self.account_field}__in": visible_accounts(request)})

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404(f"No {self.model._meta.verbose_name} with id {object_id}.")
        return obj

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs: Any):
        if db_field.related_model is SandboxAccount:
            kwargs["queryset"] = visible_accounts(request)
        elif db_field.related_model is SandboxEntity:
            kwargs["queryset"] = SandboxEntity.objects.filter(account__in=visible_accounts(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return may_use_sandbox(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_use_sandbox(request.user)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_use_sandbox(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_use_sandbox(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_use_sandbox(request.user)


class SandboxFaultForm(forms.ModelForm):
    entity_ids = forms.CharField(
        required=False,
        label="Entity ids",
        help_text="External ids, comma separated (e.g. sandbox-adset-2003). Empty: any entity.",
        widget=forms.TextInput(attrs={"size": 50}),
    )

    class Meta:
        model = SandboxFault
        fields = ["account", "kind", "scope", "remaining", "entity_ids", "retry_after"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.entity_ids:
            self.initial["entity_ids"] = ", ".join(self.instance.entity_ids)

    def clean_entity_ids(self) -> list[str]:
        raw = self.cleaned_data.get("entity_ids") or ""
        return [part.strip() for part in raw.replace("\n", ",").split(",") if part.strip()]


class FaultInline(admin.TabularInline):
    model = SandboxFault
    form = SandboxFaultForm
    fields = ["kind", "scope", "remaining", "entity_ids", "retry_after"]
    extra = 1
    verbose_name_plural = "Injected faults (consumed by the next matching requests)"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(Q(remaining__isnull=True) | Q(remaining__gt=0))


class SandboxAccountForm(forms.ModelForm):
    access_token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The token connections must present; only its SHA-256 digest is stored. "
        "Leave empty to keep the current one. Changing it makes every connection using the old one fail.",
    )

    class Meta:
        model = SandboxAccount
        fields = ["account_id", "name", "currency", "time_zone", "latency_ms"]

    def clean_access_token(self) -> str:
        token = self.cleaned_data.get("access_token", "")
        if not token and not self.instance.pk:
            raise forms.ValidationError("A new account needs an access token.")
        return token

    def save(self, commit: bool = True) -> SandboxAccount:
        if self.cleaned_data.get("access_token"):
            self.instance.set_access_token(self.cleaned_data["access_token"])
        return super().save(commit=commit)


@admin.register(SandboxAccount)
class SandboxAccountAdmin(SandboxScopedAdmin):
    form = SandboxAccountForm
    account_field = "pk"
    list_display = ["account_id", "name", "currency", "time_zone", "latency_ms", "entities_link", "active_faults"]
    search_fields = ["account_id", "name"]
    inlines = [FaultInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        live_faults = Q(faults__remaining__isnull=True) | Q(faults__remaining__gt=0)
        return (
            super()
            .get_queryset(request)
            .annotate(
                entity_count=Count("entities", filter=Q(entities__deleted_at__isnull=True), distinct=True),
                fault_count=Count("faults", filter=live_faults, distinct=True),
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["account_id", "currency"] if obj is not None else []

    @admin.display(description="Entities", ordering="entity_count")
    def entities_link(self, account: SandboxAccount):
        url = reverse("admin:sandbox_sandboxentity_changelist") + f"?account__id__exact={account.pk}"
        return format_html('<a href="{}">{} entities</a>', url, account.entity_count)

    @admin.display(description="Active faults", ordering="fault_count")
    def active_faults(self, account: SandboxAccount) -> int:
        return account.fault_count

    @method_decorator(sensitive_post_parameters("access_token"))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any):
        return super().changeform_view(request, *args, **kwargs)

    # Accounts are created and deleted on "the platform" by platform staff only.
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_platform_staff(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_platform_staff(request.user)


@admin.register(SandboxEntity)
class SandboxEntityAdmin(SandboxScopedAdmin):
    list_display = [
        "external_id",
        "name",
        "entity_type",
        "status",
        "daily_budget",
        "lifetime_budget",
        "bid",
        "parent",
        "account",
        "deleted",
        "updated_at",
    ]
    list_filter = [
        "entity_type",
        "status",
        ("account", admin.RelatedOnlyFieldListFilter),
        ("deleted_at", admin.EmptyFieldListFilter),
    ]
    list_select_related = ["account", "parent"]
    search_fields = ["external_id", "name"]
    raw_id_fields = ["parent"]
    readonly_fields = ["deleted_at", "updated_at"]
    actions = ["delete_on_platform", "restore"]
    fieldsets = [
        (None, {"fields": ["account", "entity_type", "external_id", "parent", "name", "status"]}),
        ("Budget and bid", {"fields": ["daily_budget", "lifetime_budget", "bid"]}),
        ("Targeting and schedule", {"fields": ["targeting", "schedule"], "classes": ["collapse"]}),
        (
            "Response curve (drives simulated performance)",
            {
                "fields": ["max_conversions", "half_saturation_spend", "shape", "value_per_conversion", "ctr", "cpm"],
                "classes": ["collapse"],
            },
        ),
        ("Platform", {"fields": ["deleted_at", "updated_at"]}),
    ]

    @admin.display(description="Deleted", boolean=True, ordering="deleted_at")
    def deleted(self, entity: SandboxEntity) -> bool:
        return entity.deleted_at is not None

    @admin.action(description="Delete on the platform (as if deleted in its own UI)")
    def delete_on_platform(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.filter(deleted_at__isnull=True).update(deleted_at=timezone.now())
        messages.success(request, f"{count} entities deleted on the sandbox; reads no longer return them.")

    @admin.action(description="Restore deleted entities")
    def restore(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.filter(deleted_at__isnull=False).update(deleted_at=None)
        messages.success(request, f"{count} entities restored on the sandbox.")

    # Deleting rows would break the graph; "delete on the platform" keeps them restorable.
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_platform_staff(request.user)


@admin.register(SandboxFault)
class SandboxFaultAdmin(SandboxScopedAdmin):
    form = SandboxFaultForm
    list_display = ["kind", "scope", "remaining_display", "targets", "retry_after", "account", "created_at"]
    list_filter = ["kind", "scope", ("account", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["account"]

    @admin.display(description="Remaining", ordering="remaining")
    def remaining_display(self, fault: SandboxFault) -> str:
        if fault.remaining is None:
            return "forever"
        return "used up" if fault.exhausted else str(fault.remaining)

    @admin.display(description="Entities")
    def targets(self, fault: SandboxFault) -> str:
        return ", ".join(fault.entity_ids) if fault.entity_ids else "any"


@admin.register(SandboxRequest)
class SandboxRequestAdmin(SandboxScopedAdmin):
    list_display = [
        "created_at",
        "method",
        "validate_only",
        "operation_count",
        "applied_count",
        "fault",
        "outcome",
        "request_id",
        "account",
    ]
    list_filter = ["method", "validate_only", "fault", ("account", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["account"]
    search_fields = ["request_id", "outcome"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
