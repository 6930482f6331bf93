"""Tenant scoping: the one place that decides which rows a user may see.

Every service, selector, API view and admin class narrows its querysets with
``scope_to_user``. A user with a membership sees only their tenant's rows; a superuser
without a membership is platform staff and sees every tenant; anyone else sees nothing.
"""

from __future__ import annotations

from typing import TypeVar

from django.db.models import Model, QuerySet

from budgetradar.errors import NotFound, PermissionDenied
from budgetradar.models import Membership, Tenant
from budgetradar.roles import lowest_role_with

M = TypeVar("M", bound=Model)


def membership_of(user) -> Membership | None:
    if user is None or not user.is_authenticated:
        return None
    try:
        return user.membership
    except Membership.DoesNotExist:
        return None


def tenant_of(user) -> Tenant | None:
    """The tenant the user acts for, or None (staff or no membership)."""
    membership = membership_of(user)
    return membership.tenant if membership else None


def is_platform_staff(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_superuser and membership_of(user) is None)


def scope_to_user(queryset: QuerySet[M], user, *, tenant_field: str = "tenant") -> QuerySet[M]:
    """Rows of ``queryset`` the user may see."""
    if is_platform_staff(user):
        return queryset
    tenant = tenant_of(user)
    if tenant is None:
        return queryset.none()
    return queryset.filter(**{tenant_field: tenant})


def get_for_user(queryset: QuerySet[M], user, pk, *, tenant_field: str = "tenant") -> M:
    """One row by id, or ``NotFound`` — another tenant's row looks exactly like a missing one."""
    try:
        return scope_to_user(queryset, user, tenant_field=tenant_field).get(pk=pk)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"No {queryset.model._meta.verbose_name} with id {pk}.") from None


def require_perm(user, perm: str, *, doing: str) -> None:
    """Raise ``PermissionDenied`` naming what was refused unless the user has ``perm``."""
    if user is None or not user.has_perm(perm):
        raise PermissionDenied(f"Your role does not allow you to {doing}.")


def refusal_message(user, perm: str, *, doing: str) -> str:
    """Why ``user`` may not ``doing``, in words: the role it needs and the role they have."""
    needed = lowest_role_with(perm)
    membership = membership_of(user)
    need = f"it needs the {needed} role" if needed else "only platform staff may"
    have = f"your role is {membership.get_role_display().lower()}" if membership else "you are not a member of a tenant"
    return f"You may not {doing}: {need} and {have}. A tenant admin can change your role under Memberships."


def require_same_tenant(user, tenant: Tenant, *, what: str) -> None:
    """Refuse (as not found) a row of another tenant."""
    if is_platform_staff(user):
        return
    if tenant_of(user) != tenant:
        raise NotFound(f"No {what} found.")
