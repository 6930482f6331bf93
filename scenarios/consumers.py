"""Outbox consumers of the scenarios app: deployments follow the actions they own."""

from __future__ import annotations

from budgetradar.outbox import Event
from scenarios.services.deploy import deployments_mark_running, deployments_refresh


def refresh_deployments(events: list[Event]) -> None:
    """Settled (or parked) actions of deployments: refresh those deployments' results."""
    ids = {e.payload["deployment_id"] for e in events if e.payload.get("deployment_id")}
    if ids:
        deployments_refresh(ids)


def mark_deployments_running(events: list[Event]) -> None:
    """A worker started a job: deployments with actions in it are running."""
    deployments_mark_running({e.payload["job_id"] for e in events})
