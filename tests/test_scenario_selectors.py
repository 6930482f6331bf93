"""The read-only rules the admin and the API share: which preflight a confirmation is
bound to, the latest preflight, and who may approve an override (with the reason)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from budgetradar.errors import DomainError
from budgetradar.roles import Role
from safety.overrides import override_approve, override_approve_refusal, override_request
from scenarios.models import Deployment, GuardrailPolicy, PreflightRun
from scenarios.selectors import (
    deploy_confirmation_is_stale,
    latest_scenario_preflight,
    pending_override,
)
from tests import factories
from tests.engine_helpers import sandbox_world
from tests.test_scenario_admin import make_scenario, preflight


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant)


def test_a_confirmation_is_bound_to_the_preflight_a_deploy_would_use(tenant, world, approver):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("110.00")}}, world=world)
    first = preflight(scenario, approver)
    second = preflight(scenario, approver)
    latest = latest_scenario_preflight(scenario, succeeded=True)
    assert latest == second
    assert deploy_confirmation_is_stale(scenario, latest, idempotency_key="k", confirmed_preflight=str(first.pk))
    assert not deploy_confirmation_is_stale(scenario, latest, idempotency_key="k", confirmed_preflight=str(second.pk))
    assert deploy_confirmation_is_stale(scenario, None, idempotency_key="", confirmed_preflight="")
    Deployment.objects.create(
        tenant=tenant, scenario=scenario, preflight=first, mode="live", idempotency_key="k", requested_by=approver
    )
    # A replay of a submitted confirmation is not stale: it returns the deployment it made.
    assert not deploy_confirmation_is_stale(scenario, latest, idempotency_key="k", confirmed_preflight=str(first.pk))


def test_latest_succeeded_preflight_skips_failed_ones(tenant, world, approver):
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("110.00")}}, world=world)
    good = preflight(scenario, approver)
    PreflightRun.objects.create(tenant=tenant, scenario=scenario, run_id="pf-failed", status="failed")
    assert latest_scenario_preflight(scenario).run_id == "pf-failed"
    assert latest_scenario_preflight(scenario, succeeded=True) == good


def test_the_approval_refusal_names_the_rule_and_is_what_approving_raises(tenant, world):
    requester = factories.member(tenant, Role.ADMIN, "acme-requester")
    second = factories.member(tenant, Role.ADMIN, "acme-second")
    viewer = factories.member(tenant, Role.VIEWER, "acme-viewer")
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=Decimal("20"))
    scenario = make_scenario(tenant, {"sandbox-cmp-1": {"daily_budget": Decimal("150.00")}}, world=world)
    run = preflight(scenario, requester)
    override = override_request(preflight=run, actor=requester, reason="Launch")
    assert pending_override(run) == override

    def refused_by_service(actor) -> str:
        with pytest.raises(DomainError) as refused:
            override_approve(override=override, actor=actor)
        return refused.value.message

    own = override_approve_refusal(override=override, actor=requester)
    assert own == "You requested this override; another person with the override permission must approve it."
    assert refused_by_service(requester) == own
    role = override_approve_refusal(override=override, actor=viewer)
    assert role.startswith("You may not approve guardrail overrides: it needs the")
    assert refused_by_service(viewer) == role
    assert override_approve_refusal(override=override, actor=second) == ""
    tenant.four_eyes_required = True
    tenant.save(update_fields=["four_eyes_required"])
    scenario.changed_by = second
    scenario.save(update_fields=["changed_by"])
    override.refresh_from_db()
    four_eyes = override_approve_refusal(override=override, actor=second)
    assert four_eyes.startswith("Four-eyes approval is required: you created or last changed scenario")
    assert refused_by_service(second) == four_eyes
