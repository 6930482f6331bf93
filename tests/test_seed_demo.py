"""``manage.py seed_demo`` creates the documented demo and a second run changes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command

from actions.models import Action, ActionStatus, Recommendation
from actions.services.lifecycle import action_approve, actions_apply_bulk
from budgetradar.models import Membership, Tenant
from budgetradar.timefmt import format_time
from platforms.models import EntityPerformanceDaily, PlatformConnection, PlatformEntity
from platforms.registry import get_executor
from platforms.sandbox.models import SandboxAccount, SandboxEntity
from scenarios.models import GuardrailPolicy

pytestmark = pytest.mark.django_db

# The entities of the sample push bundle and CSV the optimizer exports (shared samples).
SAMPLE_IDS = {("campaign", "sandbox-cmp-1001"), ("ad_set", "sandbox-adset-2003"), ("campaign", "sandbox-cmp-1003")}


def seed(capsys, *args: str) -> str:
    call_command("seed_demo", *args)
    return capsys.readouterr().out


def row_counts() -> dict[str, int]:
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        if model._meta.app_label in {"auth", "budgetradar", "platforms", "sandbox", "actions", "scenarios"}
    }


def test_seed_creates_the_tenant_users_synced_account_and_recommendations(capsys):
    out = seed(capsys)
    demo = Tenant.objects.get(slug="demo")
    assert demo.plan.code == "pro" and demo.four_eyes_required is True
    roles = dict(Membership.objects.filter(tenant=demo).values_list("user__username", "role"))
    assert roles == {
        "demo-admin": "admin",
        "demo-approver": "approver",
        "demo-operator": "operator",
        "demo-viewer": "viewer",
    }
    assert get_user_model().objects.get(username="admin").is_superuser
    assert out.count("(demo only, shown once)") == 5
    assert "http://127.0.0.1:8000/admin/" in out

    connection = PlatformConnection.objects.get(tenant=demo)
    assert (connection.platform, connection.currency, connection.time_zone) == ("sandbox", "EUR", "Europe/Berlin")
    assert connection.credentials["access_token"] not in out
    assert SandboxAccount.objects.get(account_id=connection.account_id).accepts(connection.credentials["access_token"])

    mirror = PlatformEntity.objects.filter(connection=connection)
    assert mirror.filter(entity_type="campaign").count() >= 3
    assert mirror.filter(entity_type="ad_set").count() >= 12
    assert mirror.filter(entity_type="ad").exists()
    assert mirror.get(external_id="sandbox-cmp-1001").name == "EU Search - Brand"
    assert mirror.get(external_id="sandbox-cmp-1003").name == "EU Display - Retargeting"
    assert mirror.get(external_id="sandbox-adset-2003").name == "Prospecting - Lookalike 1%"
    days = EntityPerformanceDaily.objects.filter(entity__external_id="sandbox-cmp-1001").count()
    assert days == 60

    assert Recommendation.objects.filter(tenant=demo).count() >= 3
    assert set(Action.objects.filter(tenant=demo).values_list("status", flat=True)) == {ActionStatus.PENDING_APPROVAL}
    assert get_executor(connection).test_connection().startswith("Sandbox account")


def test_the_sample_bundle_ids_exist_in_the_demo(capsys):
    seed(capsys)
    mirrored = set(PlatformEntity.objects.values_list("entity_type", "external_id"))
    assert mirrored >= SAMPLE_IDS


def test_a_second_run_changes_nothing(capsys):
    seed(capsys)
    counts = row_counts()
    admin_password = get_user_model().objects.get(username="demo-admin").password
    synced_at = PlatformConnection.objects.get().last_synced_at
    spend = list(EntityPerformanceDaily.objects.order_by("pk").values_list("spend", flat=True))

    out = seed(capsys)
    assert row_counts() == counts
    assert get_user_model().objects.get(username="demo-admin").password == admin_password
    assert PlatformConnection.objects.get().last_synced_at == synced_at
    assert list(EntityPerformanceDaily.objects.order_by("pk").values_list("spend", flat=True)) == spend
    assert "password:" not in out
    assert "exists (password unchanged)" in out
    # When it was synced, in the account's zone (Europe/Berlin) with the zone named.
    assert f"was synced at {format_time(synced_at, 'Europe/Berlin')}; run manage.py sync_platforms" in out


def test_a_second_run_keeps_what_a_demo_user_changed_on_the_platform(capsys):
    seed(capsys)
    SandboxEntity.objects.filter(external_id="sandbox-cmp-1001").update(daily_budget=Decimal("999.00"))
    seed(capsys)
    assert SandboxEntity.objects.get(external_id="sandbox-cmp-1001").daily_budget == Decimal("999.00")


def test_another_slug_seeds_a_separate_tenant_with_its_own_account(capsys):
    seed(capsys)
    seed(capsys, "--tenant", "acme")
    assert Tenant.objects.filter(slug__in=["demo", "acme"]).count() == 2
    assert SandboxAccount.objects.count() == 2
    assert Membership.objects.filter(tenant__slug="acme", user__username="acme-approver").exists()
    assert PlatformEntity.objects.filter(tenant__slug="acme", external_id="sandbox-cmp-1001").exists()


def test_the_demo_shows_the_safety_gate_on_the_first_approval(capsys):
    seed(capsys)
    approver = get_user_model().objects.get(username="demo-approver")
    policy = GuardrailPolicy.objects.get(tenant__slug="demo")
    assert (policy.connection, policy.max_increase_pct) == (None, Decimal("50.00"))
    actions = Action.objects.filter(tenant__slug="demo").select_related("entity", "tenant", "connection")
    results = {
        r.action.entity.external_id + ":" + r.action.action_type: r
        for r in actions_apply_bulk(actions=list(actions), actor=approver, operation=action_approve)
    }
    assert "Four-eyes" in results["sandbox-adset-2007:adjust_bid"].reason
    assert "critical guardrail breach" in results["sandbox-adset-2010:adjust_budget"].reason
    assert "rises 122.22%" in results["sandbox-adset-2010:adjust_budget"].reason
    assert results["sandbox-cmp-1001:adjust_budget"].done
    policy.max_increase_pct = Decimal("10")
    policy.save()
    seed(capsys)
    assert GuardrailPolicy.objects.get(pk=policy.pk).max_increase_pct == Decimal("10.00")  # kept as changed
