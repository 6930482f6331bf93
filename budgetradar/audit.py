"""Audit helpers: every audited save records who did it and why."""

from __future__ import annotations

from django.db.models import Model


def actor_label(user) -> str:
    """How an actor appears in logs: the username, or ``system`` for background work."""
    if user is None:
        return "system"
    return getattr(user, "username", str(user))


def audited_save(obj: Model, *, actor, reason: str, **save_kwargs) -> None:
    """Save ``obj`` and let django-simple-history record ``actor`` and ``reason``.

    ``actor`` may be None for workers; the reason then says which worker acted.
    """
    obj._history_user = actor if getattr(actor, "is_authenticated", False) else None
    obj._change_reason = reason[:1000]
    try:
        obj.save(**save_kwargs)
    finally:
        del obj._change_reason
