"""Admin for the planning loop (being split into one module per model or flow)."""

from planning.admin import automation  # noqa: F401 (registers the admins)
