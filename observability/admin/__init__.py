"""Admin for alerts, channels and watches (being split into one module per model)."""

from observability.admin import alerts  # noqa: F401 (registers the admins)
