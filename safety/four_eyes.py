"""Four-eyes as one rule across doors.

When the tenant's policy asks for it (``Tenant.four_eyes_required``), whoever created or
last changed a recommendation or a scenario cannot alone:
- approve it (an action, including a deployment's action approved again),
- deploy it live (a scenario, or a retry of its failed entities),
- approve an override of its critical guardrail breaches.

Recommendations and their actions are never edited after they are proposed, so their
authors are the proposer and the recommendation's creator. A scenario's authors are its
creator and whoever last changed its plan (``Scenario.changed_by``); deploying it is not
a change. Whatever the tenant's setting, an override always needs a second person: its
requester can never approve it (``safety.overrides.override_approve``).
"""

from __future__ import annotations

from actions.models import Action
from budgetradar.errors import PermissionDenied
from budgetradar.models import Tenant
from scenarios.models import GuardrailOverride, Scenario


def scenario_authors(scenario: Scenario | None) -> set[int]:
    """Ids of the users who created or last changed the scenario's plan."""
    if scenario is None:
        return set()
    return {pk for pk in (scenario.created_by_id, scenario.changed_by_id) if pk is not None}


def action_authors(action: Action) -> set[int]:
    """Ids of the users who proposed the action; for a deployment's action, the authors of
    its scenario (the deployer approved it by deploying; they did not write it)."""
    if action.deployment_id is not None:
        return scenario_authors(action.deployment.scenario)
    authors = {action.proposed_by_id}
    if action.recommendation_id is not None:
        authors.add(action.recommendation.created_by_id)
    return {pk for pk in authors if pk is not None}


def override_authors(override: GuardrailOverride) -> set[int]:
    """Authors of what the override lets through: its scenario or its action."""
    preflight = override.preflight
    if preflight.action_id is not None:
        return action_authors(preflight.action)
    return scenario_authors(preflight.scenario)


def four_eyes_refusal(*, tenant: Tenant, actor, authors: set[int], what: str, doing: str) -> PermissionDenied | None:
    """The refusal (``PermissionDenied``, HTTP 403) when four-eyes is on and ``actor`` is an
    author, else None; reads nothing and writes nothing.

    ``what`` names the thing (``"action #12"``, ``"scenario Q4 shift"``); ``doing`` the
    refused step (``"approve it"``, ``"deploy it live"``).
    """
    if not tenant.four_eyes_required or actor is None or actor.pk not in authors:
        return None
    return PermissionDenied(
        f"Four-eyes approval is required: you created or last changed {what}, so another person must {doing}.",
        code="four_eyes",
    )


def four_eyes_check(*, tenant: Tenant, actor, authors: set[int], what: str, doing: str) -> None:
    """Raise ``four_eyes_refusal``'s refusal, if any."""
    refused = four_eyes_refusal(tenant=tenant, actor=actor, authors=authors, what=what, doing=doing)
    if refused is not None:
        raise refused
