"""The post-change watch: each trigger at, just under and just over its threshold and day count;
a trigger restores through scenario services, preflight and deployment_create."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from actions.models import Action, ActionStatus
from budgetradar import outbox
from budgetradar.outbox import Event
from observability.models import Alert, AlertKind, CircuitOpening, ObservabilitySettings, Watch, WatchDay, WatchEntity
from observability.services.watch import watch_evaluate, watch_restore
from platforms.models import EntityPerformanceDaily
from scenarios.models import Deployment, PreflightRun, Scenario
from tests import factories
from tests.engine_helpers import sandbox_world

CHANGE = date(2026, 3, 2)  # a Monday
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)  # 13:00 in Berlin: yesterday is complete
BASE_CONVERSIONS, BASE_SPEND = Decimal("20"), Decimal("200")  # baseline CPA 10.00


def watch_of(entity, *, changed=CHANGE) -> Watch:
    watch = Watch.objects.create(
        tenant=entity.tenant,
        connection=entity.connection,
        changed_at=datetime(changed.year, changed.month, changed.day, 10, tzinfo=UTC),
        change_date=changed,
        time_zone="Europe/Berlin",
        watch_days=14,
        baseline_weeks=4,
    )
    WatchEntity.objects.create(
        watch=watch, entity=entity, before={"daily_budget": "100.00"}, after={"daily_budget": "150.00"}
    )
    return watch


def performance(entity, day: date, *, conversions: Decimal, spend: Decimal) -> None:
    EntityPerformanceDaily.objects.update_or_create(
        entity=entity, date=day, defaults={"tenant": entity.tenant, "conversions": conversions, "spend": spend}
    )


def with_baseline(entity) -> None:
    for n in range(1, 29):
        performance(entity, CHANGE - timedelta(days=n), conversions=BASE_CONVERSIONS, spend=BASE_SPEND)


def after_change(entity, days: list[tuple[Decimal, Decimal]]) -> None:
    for n, (conversions, spend) in enumerate(days, start=1):
        performance(entity, CHANGE + timedelta(days=n), conversions=conversions, spend=spend)


@pytest.fixture
def entity(db, connection_):
    entity = factories.EntityFactory(connection=connection_)
    with_baseline(entity)
    return entity


def normal(n: int) -> list[tuple[Decimal, Decimal]]:
    return [(BASE_CONVERSIONS, BASE_SPEND)] * n


# Conversions down more than 15 % for 3 consecutive days ---------------------------------------


@pytest.mark.parametrize(
    ("conversions", "days", "fires"),
    [
        (Decimal("17"), 3, False),  # exactly -15 %: not "more than"
        (Decimal("16.98"), 3, True),  # -15.1 %: just over
        (Decimal("16.98"), 2, False),  # just over, one day short
        (Decimal("17.02"), 5, False),  # -14.9 %: just under, however long
    ],
)
def test_conversions_drop_trigger(entity, conversions, days, fires):
    after_change(entity, [(conversions, BASE_SPEND * conversions / BASE_CONVERSIONS)] * days + normal(1))
    trigger = watch_evaluate(watch_of(entity), now=NOW)
    assert (trigger is not None and trigger.code == "conversions_drop") is fires
    if fires:
        assert "3 consecutive days" in trigger.reason and "-15.10 %" in trigger.reason


def test_a_gap_breaks_the_conversions_streak(entity):
    low = (Decimal("10"), Decimal("100"))
    after_change(entity, [low, low, (BASE_CONVERSIONS, BASE_SPEND), low, low])
    assert watch_evaluate(watch_of(entity), now=NOW) is None


# CPA up more than 20 % for 5 consecutive days ------------------------------------------------------


@pytest.mark.parametrize(
    ("spend", "days", "fires"),
    [
        (Decimal("240"), 5, False),  # CPA 12.00: exactly +20 %
        (Decimal("240.20"), 5, True),  # CPA 12.01: +20.1 %
        (Decimal("240.20"), 4, False),  # one day short
        (Decimal("239.80"), 7, False),  # CPA 11.99: just under
    ],
)
def test_cpa_rise_trigger(entity, spend, days, fires):
    after_change(entity, [(BASE_CONVERSIONS, spend)] * days + normal(1))
    trigger = watch_evaluate(watch_of(entity), now=NOW)
    assert (trigger is not None and trigger.code == "cpa_rise") is fires


def test_spend_without_conversions_counts_as_a_cpa_rise(entity, tenant):
    ObservabilitySettings.objects.create(tenant=tenant, conversions_drop_days=30)  # isolate the CPA rule
    after_change(entity, [(Decimal("0"), Decimal("50"))] * 5)
    trigger = watch_evaluate(watch_of(entity), now=NOW)
    assert trigger.code == "cpa_rise" and "no conversions" in trigger.reason


# The circuit breaker opening more than once a week ------------------------------------------------


@pytest.mark.parametrize(("openings", "fires"), [(1, False), (2, True)])
def test_circuit_openings_trigger(entity, openings, fires):
    after_change(entity, normal(5))
    for n in range(openings):
        CircuitOpening.objects.create(
            tenant=entity.tenant,
            connection=entity.connection,
            event_id=1000 + n,
            opened_at=datetime(2026, 3, 4 + n, 9, tzinfo=UTC),
        )
    trigger = watch_evaluate(watch_of(entity), now=NOW)
    assert (trigger is not None and trigger.code == "circuit_openings") is fires


def test_openings_more_than_a_week_apart_do_not_trigger(entity):
    after_change(entity, normal(14))
    for n, day in enumerate((3, 11)):
        CircuitOpening.objects.create(
            tenant=entity.tenant,
            connection=entity.connection,
            event_id=n,
            opened_at=datetime(2026, 3, day, 9, tzinfo=UTC),
        )
    assert watch_evaluate(watch_of(entity), now=NOW) is None


# Thresholds, baselines and days -----------------------------------------------------------------------


def test_thresholds_are_per_tenant(entity, tenant):
    ObservabilitySettings.objects.create(tenant=tenant, conversions_drop_pct=Decimal("30"), conversions_drop_days=2)
    after_change(entity, [(Decimal("15"), Decimal("150"))] * 3)  # -25 %: a breach of 15 %, not of 30 %
    assert watch_evaluate(watch_of(entity), now=NOW) is None
    day = WatchDay.objects.order_by("date").first()
    assert day.status == WatchDay.Status.OK and Decimal(day.thresholds["conversions_drop_pct"]) == 30


def test_the_baseline_is_the_same_weekday_before_the_change(entity):
    monday_before = CHANGE - timedelta(days=7)
    EntityPerformanceDaily.objects.filter(entity=entity, date=monday_before).update(conversions=Decimal("60"))
    after_change(entity, normal(7))
    watch_evaluate(watch_of(entity), now=NOW)
    tuesday = WatchDay.objects.get(date=CHANGE + timedelta(days=1))
    monday = WatchDay.objects.get(date=CHANGE + timedelta(days=7))
    assert tuesday.baseline_conversions == Decimal("20.00")
    assert monday.baseline_conversions == Decimal("30.00")  # (60 + 20 + 20 + 20) / 4


def test_days_without_data_wait_and_are_evaluated_later(entity):
    watch = watch_of(entity)
    watch_evaluate(watch, now=NOW)
    assert set(WatchDay.objects.values_list("status", flat=True)) == {WatchDay.Status.NO_DATA}
    after_change(entity, normal(14))
    watch_evaluate(watch, now=NOW)
    assert not WatchDay.objects.filter(status=WatchDay.Status.NO_DATA).exists()


def test_yesterday_is_judged_only_after_the_local_evaluation_hour(entity, settings):
    settings.WATCH_EVALUATION_HOUR = 9
    after_change(entity, normal(3))
    early = datetime(2026, 3, 5, 7, 30, tzinfo=UTC)  # 08:30 in Berlin on the 5th
    watch_evaluate(watch_of(entity), now=early)
    assert sorted(WatchDay.objects.values_list("date", flat=True)) == [date(2026, 3, 3)]


def test_a_watch_completes_after_its_window(entity):
    after_change(entity, normal(14))
    watch = watch_of(entity)
    watch_evaluate(watch, now=NOW)
    watch.refresh_from_db()
    assert watch.status == Watch.Status.COMPLETED and watch.days.count() == 14


# Restoring ----------------------------------------------------------------------------------------------


def live_deployment(world, tenant, approver, *, changed: datetime) -> Deployment:
    preflight = PreflightRun.objects.create(tenant=tenant, run_id="pf-original", status="succeeded", payload={})
    deployment = Deployment.objects.create(
        tenant=tenant, preflight=preflight, mode="live", status="succeeded", idempotency_key="orig"
    )
    entity = world.entity("sandbox-cmp-1")
    factories.ActionFactory(
        entity=entity,
        deployment=deployment,
        action_type="set_values",
        params={"daily_budget": "150.00"},
        status=ActionStatus.SUCCEEDED,
        before_state={"daily_budget": "100.00", "status": "active", "bid": None},
        after_state={"daily_budget": "150.00", "status": "active", "bid": None},
        finished_at=changed,
    )
    world.platform("sandbox-cmp-1").__class__.objects.filter(pk=world.platform("sandbox-cmp-1").pk).update(
        daily_budget=Decimal("150.00")
    )
    return deployment


def drain_deployment_finished(deployment) -> None:
    from django.db import transaction

    with transaction.atomic():
        outbox.publish("deployment.finished", tenant_id=deployment.tenant_id, payload={"deployment_id": deployment.pk})
    outbox.outbox_drain()


def triggered_watch(world, tenant, approver) -> Watch:
    changed = datetime.now(UTC) - timedelta(days=6)
    deployment = live_deployment(world, tenant, approver, changed=changed)
    drain_deployment_finished(deployment)
    watch = Watch.objects.get(deployment=deployment)
    entity = world.entity("sandbox-cmp-1")
    local_change = watch.change_date
    for n in range(1, 29):
        performance(entity, local_change - timedelta(days=n), conversions=BASE_CONVERSIONS, spend=BASE_SPEND)
    for n in range(1, 6):
        performance(entity, local_change + timedelta(days=n), conversions=Decimal("10"), spend=Decimal("150"))
    assert watch_evaluate(watch, now=datetime.now(UTC) + timedelta(hours=24)) is not None
    return watch


@pytest.mark.django_db(transaction=True)
def test_assist_mode_creates_a_restoring_scenario_that_waits_for_approval(tenant, approver):
    world = sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=1)
    watch = watch_restore(triggered_watch(world, tenant, approver))
    assert watch.status == Watch.Status.TRIGGERED and watch.restoring_deployment is None
    scenario = watch.restoring_scenario
    assert scenario.status == Scenario.Status.DRAFT
    [item] = scenario.items.all()
    assert item.entity.external_id == "sandbox-cmp-1" and item.daily_budget == Decimal("100.00")
    assert "Rollback instructions expire 24 hours after execution" in scenario.notes
    assert "days after the change" in scenario.notes
    preflight = scenario.preflights.get()
    assert preflight.mode == "assist" and preflight.status == "succeeded"
    alert = Alert.objects.get(kind=AlertKind.WATCH_TRIGGERED)
    assert alert.severity == "critical" and "waits for approval" in alert.message
    assert "Rollback instructions expire after 24 hours" in alert.message
    assert not Deployment.objects.filter(scenario=scenario).exists()
    assert watch_restore(watch).restoring_scenario_id == scenario.pk  # running again creates nothing new


@pytest.mark.django_db(transaction=True)
def test_autopilot_deploys_the_restoring_scenario_through_deployment_create(tenant, approver):
    tenant.plan = factories.plan("enterprise")
    tenant.save()
    ObservabilitySettings.objects.create(tenant=tenant, watch_mode="autopilot", autopilot_actor=approver)
    world = sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=1)
    watch = watch_restore(triggered_watch(world, tenant, approver))
    assert watch.status == Watch.Status.RESTORING
    deployment = watch.restoring_deployment
    assert deployment.scenario_id == watch.restoring_scenario_id and deployment.requested_by == approver
    assert deployment.preflight.mode == "autopilot"
    action = Action.objects.get(deployment=deployment)
    assert action.params == {"daily_budget": "100.00"} and action.baseline_state["daily_budget"] == "150.00"
    alert = Alert.objects.get(kind=AlertKind.WATCH_TRIGGERED)
    assert alert.severity == "warning" and f"deployment #{deployment.pk}" in alert.message
    drain_deployment_finished(deployment)
    assert not Watch.objects.filter(deployment=deployment).exists()  # a restore is not watched itself
    alert.refresh_from_db()
    assert alert.status == "resolved"


@pytest.mark.django_db(transaction=True)
def test_autopilot_without_the_entitlement_waits_for_a_person(tenant, approver):
    ObservabilitySettings.objects.create(tenant=tenant, watch_mode="autopilot", autopilot_actor=approver)
    world = sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=1)
    watch = watch_restore(triggered_watch(world, tenant, approver))
    assert watch.status == Watch.Status.TRIGGERED and "could not deploy" in watch.restore_note
    assert Alert.objects.get(kind=AlertKind.WATCH_TRIGGERED).severity == "critical"


@pytest.mark.django_db(transaction=True)
def test_the_deployment_page_shows_its_watch_day_by_day(tenant, approver):
    from django.test import Client

    world = sandbox_world(tenant, campaigns=1, ad_sets_per_campaign=1)
    watch = triggered_watch(world, tenant, approver)
    client = Client()
    client.force_login(approver)
    page = client.get(f"/admin/scenarios/deployment/{watch.deployment_id}/change/").content.decode()
    assert 'id="watch-status"' in page and "Post-change watch" in page
    evaluated = [day for day in watch.days.all() if day.status != "waiting"]
    assert evaluated and f'data-date="{evaluated[0].date:%Y-%m-%d}"' in page


def settled(action) -> Event:
    payload = {"action_id": action.pk, "status": action.status, "platform": action.platform, "error_code": ""}
    return Event(id=action.pk, topic="action.settled", tenant_id=action.tenant_id, payload=payload)


@pytest.mark.django_db
def test_many_settled_actions_are_watched_in_a_bounded_number_of_queries(connection_, django_assert_max_num_queries):
    """10,000 settled actions arrive as one drain: the watch must not cost queries per action."""
    from observability.consumers import on_action_settled

    finished = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

    def executed(entity, minutes):
        return factories.ActionFactory(
            entity=entity,
            status=ActionStatus.SUCCEEDED,
            before_state={"daily_budget": "100.00"},
            after_state={"daily_budget": "120.00"},
            finished_at=finished + timedelta(minutes=minutes),
        )

    entities = factories.EntityFactory.create_batch(150, connection=connection_)
    actions = [executed(entity, n) for n, entity in enumerate(entities)]
    again = executed(entities[0], 500)  # a later change of the first entity in the same drain
    with django_assert_max_num_queries(16):  # savepoints included; the per-action design took ~1,000
        on_action_settled([settled(a) for a in [*actions, again]])
    assert Watch.objects.count() == 151
    assert Watch.objects.get(action=again).status == Watch.Status.WATCHING
    assert Watch.objects.get(action=actions[0]).status == Watch.Status.SUPERSEDED
    assert WatchEntity.objects.filter(watch__action=actions[1]).get().after == {"daily_budget": "120.00"}
    on_action_settled([settled(a) for a in actions[:10]])  # a redelivered batch creates nothing new
    assert Watch.objects.count() == 151
