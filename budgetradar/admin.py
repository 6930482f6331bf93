"""Admin for plans, tenants and memberships.

Tenant members see only their own tenant, its plan (read-only: a plan is changed by
platform staff, never by the tenant it limits) and its memberships. A tenant admin adds
a member by creating their login here, so no one ever picks from another tenant's users.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from budgetradar.admin_base import AMBER, BLUE, GREEN, GREY, AuditedForm, TenantScopedHistoryAdmin, badge
from budgetradar.models import Membership, Plan, Tenant
from budgetradar.roles import Role
from budgetradar.tenancy import is_platform_staff

ROLE_TONES = {Role.VIEWER: GREY, Role.OPERATOR: BLUE, Role.APPROVER: AMBER, Role.ADMIN: GREEN}


def _limit(value: int | None) -> str:
    return "Unlimited" if value is None else f"{value:,}"


@admin.register(Plan)
class PlanAdmin(TenantScopedHistoryAdmin):
    """Plans and their entitlements; only platform staff may change them."""

    list_display = [
        "name",
        "code",
        "actions_enabled",
        "actions_limit",
        "live_deploy",
        "autopilot",
        "connections_limit",
    ]
    list_display_links = ["name"]
    search_fields = ["name", "code"]
    fields = ["code", "name", "actions_enabled", "actions_per_month", "live_deploy", "autopilot", "max_connections"]

    @admin.display(description="Approved actions a month", ordering="actions_per_month")
    def actions_limit(self, plan: Plan) -> str:
        return _limit(plan.actions_per_month) if plan.actions_enabled else "None"

    @admin.display(description="Connections", ordering="max_connections")
    def connections_limit(self, plan: Plan) -> str:
        return _limit(plan.max_connections)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_platform_staff(request.user) and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Plan | None = None) -> bool:
        return is_platform_staff(request.user) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Plan | None = None) -> bool:
        return is_platform_staff(request.user) and super().has_delete_permission(request, obj)


@admin.register(Tenant)
class TenantAdmin(TenantScopedHistoryAdmin):
    """Customer organisations. A tenant admin edits their own tenant, but not its plan."""

    list_display = ["name", "slug", "plan", "currency", "time_zone", "four_eyes", "execution_mode", "created_at"]
    list_select_related = ["plan"]
    list_filter = ["plan", "four_eyes_required", "currency"]
    search_fields = ["name", "slug"]
    date_hierarchy = "created_at"
    fields = ["name", "slug", "plan", "currency", "time_zone", "four_eyes_required", "execution_mode", "created_at"]
    readonly_fields = ["created_at"]

    @admin.display(description="Four-eyes", ordering="four_eyes_required")
    def four_eyes(self, tenant: Tenant):
        return badge("On", GREEN) if tenant.four_eyes_required else badge("Off", GREY)

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if not is_platform_staff(request.user):
            readonly.append("plan")  # a tenant cannot upgrade itself
        return readonly

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_platform_staff(request.user) and super().has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return is_platform_staff(request.user) and super().has_delete_permission(request, obj)


class MembershipAddForm(AuditedForm):
    """Add a member by creating their staff login in the tenant."""

    username = forms.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    email = forms.EmailField(required=False)
    password = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="An initial password; tell the new member to change it after logging in.",
    )

    class Meta:
        model = Membership
        fields = ["tenant", "role"]

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(f"The username {username!r} is taken; choose another.")
        return username

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password


@admin.register(Membership)
class MembershipAdmin(TenantScopedHistoryAdmin):
    """Who belongs to a tenant and with which role."""

    add_form = MembershipAddForm
    list_display = ["user", "email", "role_badge", "is_active", "created_at"]
    list_select_related = ["user", "tenant"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email"]
    date_hierarchy = "created_at"
    readonly_fields = ["user", "created_at"]

    @admin.display(description="Email", ordering="user__email")
    def email(self, membership: Membership) -> str:
        return membership.user.email

    @admin.display(description="Role", ordering="role")
    def role_badge(self, membership: Membership):
        return badge(membership.get_role_display(), ROLE_TONES.get(membership.role, GREY))

    @admin.display(description="Can log in", boolean=True, ordering="user__is_active")
    def is_active(self, membership: Membership) -> bool:
        return membership.user.is_active

    def get_fields(self, request: HttpRequest, obj: Membership | None = None) -> list[str]:
        if obj is None:
            return ["tenant", "username", "email", "password", "role"]
        return ["user", "tenant", "role", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> list[str]:
        return [] if obj is None else list(self.readonly_fields)

    def get_form(self, request: HttpRequest, obj: Membership | None = None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    @method_decorator(sensitive_post_parameters("password"))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(request, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: Membership, form: forms.ModelForm, change: bool) -> None:
        if not change:
            data = form.cleaned_data
            obj.user = get_user_model().objects.create_user(
                username=data["username"], email=data["email"], password=data["password"], is_staff=True
            )
        super().save_model(request, obj, form, change)
