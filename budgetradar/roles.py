"""Roles and the Django permissions each one grants.

A member's role is the single source of their permissions inside their tenant:
``budgetradar.auth.RoleBackend`` answers ``user.has_perm`` from this table, so the
admin, the API and services all agree on who may do what.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


_VIEW = [
    "budgetradar.view_tenant",
    "budgetradar.view_plan",
    "budgetradar.view_membership",
    "platforms.view_platformconnection",
    "platforms.view_platformentity",
    "platforms.view_entityperformancedaily",
    "actions.view_recommendation",
    "actions.view_action",
    "actions.view_actionjob",
    "actions.view_actionexecutionlog",
    "scenarios.view_scenario",
    "scenarios.view_scenarioitem",
    "scenarios.view_preflightrun",
    "scenarios.view_deployment",
    "scenarios.view_deploymentresult",
    "scenarios.view_guardrailpolicy",
    "scenarios.view_guardrailoverride",
    "sandbox.view_sandboxentity",
    "sandbox.view_sandboxfault",
    "observability.view_alert",
    "observability.view_watch",
    "observability.view_watchday",
    "observability.view_observabilitysettings",
    "planning.view_automationsettings",
    "planning.view_entityconstraint",
    "planning.view_plannerrun",
    "planning.view_curvefit",
    "planning.view_decisionlogentry",
    "planning.view_ingestionrun",
    "planning.view_rolloutstep",
]
_OPERATE = [
    "actions.add_recommendation",
    "actions.change_recommendation",
    "actions.cancel_action",
    "scenarios.add_scenario",
    "scenarios.change_scenario",
    "scenarios.delete_scenario",
    "scenarios.add_scenarioitem",
    "scenarios.change_scenarioitem",
    "scenarios.delete_scenarioitem",
    "scenarios.run_preflight",
    "scenarios.deploy_dry_run",
    "observability.acknowledge_alert",
    "planning.run_planner",
]
_APPROVE = [
    "actions.approve_action",
    "actions.reject_action",
    "actions.execute_action",
    "actions.rollback_action",
    "scenarios.deploy_live",
    "scenarios.rollback_deployment",
    "observability.resolve_alert",
]
_ADMINISTER = [
    "budgetradar.change_tenant",
    "budgetradar.add_membership",
    "budgetradar.change_membership",
    "budgetradar.delete_membership",
    "platforms.add_platformconnection",
    "platforms.change_platformconnection",
    "platforms.test_platformconnection",
    "platforms.sync_platformconnection",
    "platforms.reset_circuit",
    "scenarios.add_guardrailpolicy",
    "scenarios.change_guardrailpolicy",
    "scenarios.delete_guardrailpolicy",
    "scenarios.override_guardrail",
    "actions.override_rollback_drift",
    "sandbox.add_sandboxfault",
    "sandbox.change_sandboxfault",
    "sandbox.delete_sandboxfault",
    "observability.view_channel",
    "observability.add_channel",
    "observability.change_channel",
    "observability.delete_channel",
    "observability.test_channel",
    "observability.add_observabilitysettings",
    "observability.change_observabilitysettings",
    "planning.change_automationsettings",
    "planning.add_entityconstraint",
    "planning.change_entityconstraint",
    "planning.delete_entityconstraint",
    "planning.reset_planner_breaker",
    "planning.promote_rollout",
]

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.VIEWER: frozenset(_VIEW),
    Role.OPERATOR: frozenset(_VIEW + _OPERATE),
    Role.APPROVER: frozenset(_VIEW + _OPERATE + _APPROVE),
    Role.ADMIN: frozenset(_VIEW + _OPERATE + _APPROVE + _ADMINISTER),
}


def role_permissions(role: str) -> frozenset[str]:
    return ROLE_PERMISSIONS.get(Role(role), frozenset()) if role in Role._value2member_map_ else frozenset()


def lowest_role_with(perm: str) -> Role | None:
    """The least role whose permissions include ``perm`` (None: platform staff only)."""
    return next((role for role in Role if perm in ROLE_PERMISSIONS[role]), None)
