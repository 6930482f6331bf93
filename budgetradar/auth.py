"""Authentication backend that grants Django permissions from the member's role."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend

from budgetradar.roles import role_permissions


class RoleBackend(ModelBackend):
    """``user.has_perm("actions.approve_action")`` is true when the user's role grants it.

    Authentication itself is left to ``ModelBackend``; this backend only adds the role's
    permissions (cached on the user object for the request).
    """

    def authenticate(self, request: Any, **credentials: Any) -> None:
        return None

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous:
            return set()
        if not hasattr(user_obj, "_role_perm_cache"):
            membership = getattr(user_obj, "membership", None)
            user_obj._role_perm_cache = set(role_permissions(membership.role)) if membership else set()
        return user_obj._role_perm_cache

    def get_user_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        return set()

    def get_group_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        return set()
