"""The per-connection circuit breaker: opens after 3 failed executions, refuses, resets."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from actions.models import Action, ActionStatus
from actions.services.circuit import CircuitOpen, circuit_reset
from actions.services.execution import action_execute_request
from budgetradar.errors import PermissionDenied
from platforms.models import CircuitState, PlatformConnection
from tests.engine_helpers import approved, run_worker, sandbox_world

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant, campaigns=4)


def fail_three_executions(world, approver):
    for c in (1, 2, 3):
        approved(world.entity(f"sandbox-cmp-{c}"), approver)  # the gate reads the platform: before the fault
        world.fault("auth_expired", scope="any", remaining=1)
        run_worker()


def test_three_consecutive_failed_executions_open_the_circuit(world, approver):
    fail_three_executions(world, approver)
    connection = PlatformConnection.objects.get(pk=world.connection.pk)
    assert connection.circuit_state == CircuitState.OPEN
    assert "auth_expired" in connection.circuit_reason


def test_an_open_circuit_refuses_execution_with_a_clear_reason(world, approver):
    fail_three_executions(world, approver)
    action = approved(world.entity("sandbox-cmp-4"), approver)
    with pytest.raises(CircuitOpen, match="circuit breaker of connection Sandbox is open"):
        action_execute_request(action=action, actor=approver)
    assert run_worker() == []
    assert Action.objects.get(pk=action.pk).status == ActionStatus.APPROVED


def test_entity_level_failures_do_not_open_the_circuit(world, approver):
    for c in (1, 2, 3):
        approved(world.entity(f"sandbox-cmp-{c}"), approver)
        world.fault("partial_failure", entity_ids=[f"sandbox-cmp-{c}"])
        run_worker()
    assert PlatformConnection.objects.get(pk=world.connection.pk).circuit_state == CircuitState.CLOSED


def test_an_admin_resets_the_circuit_and_work_resumes(world, approver, tenant_admin):
    fail_three_executions(world, approver)
    action = approved(world.entity("sandbox-cmp-4"), approver)
    with pytest.raises(PermissionDenied):
        circuit_reset(connection=world.connection, actor=approver)
    circuit_reset(connection=PlatformConnection.objects.get(pk=world.connection.pk), actor=tenant_admin, reason="fixed")
    run_worker()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.SUCCEEDED
    assert world.connection.history.first().history_change_reason == "circuit reset: fixed"


def test_after_the_cool_down_one_half_open_probe_closes_it_on_success(world, approver, settings):
    fail_three_executions(world, approver)
    PlatformConnection.objects.filter(pk=world.connection.pk).update(
        circuit_opened_at=timezone.now() - timedelta(seconds=settings.CIRCUIT_BREAKER_COOLDOWN_SECONDS + 1)
    )
    action = approved(world.entity("sandbox-cmp-4"), approver)
    run_worker()
    assert Action.objects.get(pk=action.pk).status == ActionStatus.SUCCEEDED
    assert PlatformConnection.objects.get(pk=world.connection.pk).circuit_state == CircuitState.CLOSED


def test_a_failed_half_open_probe_opens_the_circuit_again(world, approver, settings):
    fail_three_executions(world, approver)
    PlatformConnection.objects.filter(pk=world.connection.pk).update(
        circuit_opened_at=timezone.now() - timedelta(seconds=settings.CIRCUIT_BREAKER_COOLDOWN_SECONDS + 1)
    )
    approved(world.entity("sandbox-cmp-4"), approver)
    world.fault("auth_expired", scope="any")
    run_worker()
    connection = PlatformConnection.objects.get(pk=world.connection.pk)
    assert connection.circuit_state == CircuitState.OPEN
    assert connection.circuit_opened_at > timezone.now() - timedelta(seconds=60)
