"""The preflight diff document: change types, deltas, units, shared budgets, failures,
bounded database work and determinism."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actions.models import ActionStatus
from budgetradar.errors import PermissionDenied, ValidationFailed
from platforms.models import EntityPerformanceDaily, Platform, PlatformEntity
from platforms.quota import quota_take
from platforms.registry import get_executor
from platforms.sandbox.models import SandboxEntity, SandboxRequest
from platforms.sync import sync_connection
from scenarios.models import GuardrailPolicy, PreflightEntity, PreflightRun, Scenario, ScenarioItem
from scenarios.services.items import TargetItem
from scenarios.services.preflight import PreflightFailed, preflight_document, preflight_for_scenario, preflight_run
from tests.engine_helpers import World, sandbox_world
from tests.factories import (
    ActionFactory,
    ConnectionFactory,
    SandboxAccountFactory,
    SandboxCampaignFactory,
    sandbox_connection,
)
from tests.google_fake_fixtures import GOOGLE_CUSTOMER_ID, google_test_credentials
from tests.meta_fake_fixtures import META_ACCOUNT, META_TOKEN

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def item(entity: PlatformEntity, **targets: str) -> TargetItem:
    return TargetItem(entity=entity, targets={k: (v if k == "status" else Decimal(v)) for k, v in targets.items()})


def run(tenant, items, actor=None, **kwargs) -> dict:
    kwargs.setdefault("now", NOW)
    return preflight_document(preflight_run(tenant=tenant, items=items, actor=actor, **kwargs))


def entity_doc(payload: dict, external_id: str) -> dict:
    [doc] = [e for e in payload["entities"] if e["external_id"] == external_id]
    return doc


def change(doc: dict, field: str) -> dict:
    [found] = [c for changes in doc["sections"].values() for c in changes if c["field"] == field]
    return found


@pytest.fixture
def world(tenant) -> World:
    return sandbox_world(tenant)


# Change types, deltas, units -----------------------------------------------------------------


def test_a_budget_increase_is_an_update_with_delta_percent_and_currency_unit(tenant, world, operator):
    payload = run(tenant, [item(world.entity("sandbox-cmp-1"), daily_budget="150.00")], operator)

    doc = entity_doc(payload, "sandbox-cmp-1")
    assert doc["change_type"] == "update"
    assert doc["key"] == "sandbox:campaign:sandbox-cmp-1"
    assert doc["before"]["daily_budget"] == "100.00"
    assert doc["after"]["daily_budget"] == "150.00"
    budget = change(doc, "daily_budget")
    assert budget in doc["sections"]["spend"]
    assert budget["field_path"] == "campaign.daily_budget"
    assert budget["label"] == "Daily budget"
    assert (budget["before"], budget["after"], budget["delta"]) == ("100.00", "150.00", "50.00")
    assert budget["percent_delta"] == "50.00"
    assert budget["unit"] == "EUR"
    assert budget["changed"] is True
    assert payload["summary"]["by_change_type"] == {"create": 0, "update": 1, "delete": 0, "noop": 0}


def test_a_budget_decrease_has_a_negative_delta_and_percent(tenant, world):
    payload = run(tenant, [item(world.entity("sandbox-adset-1-1"), daily_budget="30.00")])

    budget = change(entity_doc(payload, "sandbox-adset-1-1"), "daily_budget")
    assert (budget["delta"], budget["percent_delta"]) == ("-10.00", "-25.00")


def test_an_item_equal_to_the_live_values_is_a_noop(tenant, world):
    payload = run(tenant, [item(world.entity("sandbox-adset-1-1"), daily_budget="40.00", bid="1.5", status="active")])

    doc = entity_doc(payload, "sandbox-adset-1-1")
    assert doc["change_type"] == "noop"
    assert doc["before"] == doc["after"]
    assert all(not c["changed"] for changes in doc["sections"].values() for c in changes)
    assert change(doc, "bid")["delta"] == "0.00"
    assert payload["summary"]["noop"] == 1
    assert payload["summary"]["changed"] == 0
    assert payload["breaches"] == []


def test_entities_outside_the_inputs_never_appear_and_nothing_is_created_or_deleted(tenant, world):
    payload = run(tenant, [item(world.entity("sandbox-cmp-2"), status="paused")])

    assert [e["external_id"] for e in payload["entities"]] == ["sandbox-cmp-2"]
    assert {e["change_type"] for e in payload["entities"]} == {"update"}
    assert payload["summary"]["by_change_type"]["create"] == 0
    assert payload["summary"]["by_change_type"]["delete"] == 0
    assert payload["summary"]["entities"] == 1


def test_an_empty_plan_gives_an_empty_document(tenant, world):
    payload = run(tenant, [])

    assert (payload["entities"], payload["breaches"], payload["connections"]) == ([], [], [])
    assert payload["summary"]["entities"] == 0
    assert payload["has_critical"] is False


def test_a_status_change_sits_in_delivery_without_unit_delta_or_percent(tenant, world):
    payload = run(tenant, [item(world.entity("sandbox-cmp-1"), status="paused")])

    doc = entity_doc(payload, "sandbox-cmp-1")
    status = change(doc, "status")
    assert doc["sections"]["delivery"] == [status]
    assert doc["sections"]["spend"] == []
    assert (status["before"], status["after"]) == ("active", "paused")
    assert (status["delta"], status["percent_delta"], status["unit"]) == (None, None, None)
    assert payload["summary"]["by_section"]["delivery"] == {"changes": 1, "entities": 1}
    assert payload["summary"]["by_section"]["spend"] == {"changes": 0, "entities": 0}


def test_only_the_fields_an_item_sets_are_listed(tenant, world):
    payload = run(tenant, [item(world.entity("sandbox-adset-1-1"), bid="1.80")])

    doc = entity_doc(payload, "sandbox-adset-1-1")
    assert [c["field"] for c in doc["sections"]["spend"]] == ["bid"]
    assert doc["after"]["daily_budget"] == doc["before"]["daily_budget"] == "40.00"
    assert change(doc, "bid")["percent_delta"] == "20.00"


def test_a_budget_raised_from_zero_has_a_delta_but_no_percentage(tenant, world):
    SandboxEntity.objects.filter(external_id="sandbox-adset-1-1").update(daily_budget=Decimal("0"))

    payload = run(tenant, [item(world.entity("sandbox-adset-1-1"), daily_budget="25.00")])

    budget = change(entity_doc(payload, "sandbox-adset-1-1"), "daily_budget")
    assert (budget["before"], budget["after"], budget["delta"]) == ("0.00", "25.00", "25.00")
    assert budget["percent_delta"] is None
    assert budget["from_zero"] is True


def test_a_budget_set_where_none_was_set_counts_from_zero(tenant, world):
    SandboxEntity.objects.filter(external_id="sandbox-cmp-1").update(
        daily_budget=None, lifetime_budget=Decimal("3000.00")
    )

    payload = run(tenant, [item(world.entity("sandbox-cmp-1"), daily_budget="120.00")])

    doc = entity_doc(payload, "sandbox-cmp-1")
    budget = change(doc, "daily_budget")
    assert (budget["before"], budget["after"], budget["delta"], budget["percent_delta"]) == (
        None,
        "120.00",
        "120.00",
        None,
    )
    assert budget["from_zero"] is True
    assert doc["before"]["lifetime_budget"] == "3000.00"


def test_amounts_use_the_currency_exponent(tenant):
    account = SandboxAccountFactory(account_id="sbx-yen", currency="JPY", time_zone="Asia/Tokyo")
    SandboxCampaignFactory(account=account, external_id="jp-cmp-1", name="Tokyo search", daily_budget=Decimal("5000"))
    connection = sandbox_connection(tenant, account, name="Japan")
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    entity = connection.entities.select_related("connection", "parent").get(external_id="jp-cmp-1")

    payload = run(tenant, [item(entity, daily_budget="6500")])

    budget = change(entity_doc(payload, "jp-cmp-1"), "daily_budget")
    assert (budget["before"], budget["after"], budget["delta"], budget["unit"]) == ("5000", "6500", "1500", "JPY")
    assert budget["percent_delta"] == "30.00"
    assert payload["summary"]["total"]["daily_budget_delta_by_currency"] == {"JPY": "1500"}


@pytest.mark.parametrize(
    ("before", "after", "percent"),
    [
        ("200.00", "200.01", "0.00"),  # 0.005 % rounds half-even down to 0.00
        ("200.00", "200.03", "0.02"),  # 0.015 % rounds half-even up to 0.02
        ("300.00", "400.00", "33.33"),
        ("300.00", "200.00", "-33.33"),
        ("150.00", "149.99", "-0.01"),
    ],
)
def test_percentages_have_two_decimals_rounded_half_even(tenant, world, before, after, percent):
    SandboxEntity.objects.filter(external_id="sandbox-cmp-1").update(daily_budget=Decimal(before))

    payload = run(tenant, [item(world.entity("sandbox-cmp-1"), daily_budget=after)])

    assert change(entity_doc(payload, "sandbox-cmp-1"), "daily_budget")["percent_delta"] == percent


def test_before_is_the_live_value_not_the_mirror(tenant, world):
    SandboxEntity.objects.filter(external_id="sandbox-cmp-1").update(daily_budget=Decimal("120.00"))
    assert world.entity("sandbox-cmp-1").daily_budget == Decimal("100.00")  # the mirror has not seen it

    payload = run(tenant, [item(world.entity("sandbox-cmp-1"), daily_budget="120.00")])

    doc = entity_doc(payload, "sandbox-cmp-1")
    assert doc["before"]["daily_budget"] == "120.00"
    assert doc["change_type"] == "noop"


def test_summaries_add_up_per_section_platform_and_currency(tenant, world):
    payload = run(
        tenant,
        [
            item(world.entity("sandbox-cmp-1"), daily_budget="150.00"),
            item(world.entity("sandbox-cmp-2"), daily_budget="100.00"),
            item(world.entity("sandbox-adset-1-1"), daily_budget="30.00", status="paused"),
        ],
    )

    summary = payload["summary"]
    assert (summary["entities"], summary["changed"], summary["noop"]) == (3, 2, 1)
    assert summary["by_section"]["spend"] == {"changes": 2, "entities": 2}
    assert summary["by_section"]["delivery"] == {"changes": 1, "entities": 1}
    sandbox = summary["by_platform"]["sandbox"]
    assert (sandbox["entities"], sandbox["changed"], sandbox["currency"]) == (3, 2, "EUR")
    assert (sandbox["daily_budget_before"], sandbox["daily_budget_after"]) == ("240.00", "280.00")
    assert sandbox["daily_budget_delta"] == "40.00"
    assert summary["total"]["daily_budget_delta_by_currency"] == {"EUR": "40.00"}
    [account] = payload["connections"]
    # Two active campaigns at 100.00 each; campaign 1 rises to 150.00 (ad-set budgets are not campaigns).
    assert (account["account_daily_budget_before"], account["account_daily_budget_after"]) == ("200.00", "250.00")


# Shared budgets ------------------------------------------------------------------------------


def test_a_shared_budget_in_the_mirror_lists_every_campaign_it_moves(tenant, world):
    PlatformEntity.objects.filter(external_id__in=["sandbox-cmp-1", "sandbox-cmp-2"]).update(
        budget_id="b-77", budget_shared=True
    )

    payload = run(tenant, [item(world.entity("sandbox-cmp-2"), daily_budget="120.00")])

    doc = entity_doc(payload, "sandbox-cmp-2")
    assert doc["shared_budget"] == {
        "budget_id": "b-77",
        "reference_count": 2,
        "campaigns": [
            {"external_id": "sandbox-cmp-1", "name": "Campaign 1"},
            {"external_id": "sandbox-cmp-2", "name": "Campaign 2"},
        ],
    }
    [breach] = change(doc, "daily_budget")["breaches"]
    assert breach["code"] == "shared_budget_reach"
    assert breach["severity"] == "warning"
    assert "moves 2 campaigns" in breach["message"]
    # The shared budget counts once in the account total: 120.00, not 2 x 120.00.
    [account] = payload["connections"]
    assert (account["account_daily_budget_before"], account["account_daily_budget_after"]) == ("100.00", "120.00")


def test_a_status_change_on_a_shared_budget_shows_the_budget_without_a_breach(tenant, world):
    PlatformEntity.objects.filter(external_id__in=["sandbox-cmp-1", "sandbox-cmp-2"]).update(
        budget_id="b-77", budget_shared=True
    )

    payload = run(tenant, [item(world.entity("sandbox-cmp-1"), status="paused")])

    doc = entity_doc(payload, "sandbox-cmp-1")
    assert doc["shared_budget"]["reference_count"] == 2
    assert payload["breaches"] == [] or all(b["code"] != "shared_budget_reach" for b in payload["breaches"])


@pytest.fixture
def google_world(tenant, google_ads_fake):
    for cid in ("101", "102", "103"):
        google_ads_fake.add_campaign(
            GOOGLE_CUSTOMER_ID, cid, f"Search {cid}", budget_micros=50_000_000, shared_budget_id=900
        )
    google_ads_fake.add_campaign(GOOGLE_CUSTOMER_ID, "104", "Brand", budget_micros=80_000_000)
    connection = ConnectionFactory(
        tenant=tenant,
        name="Google",
        platform=Platform.GOOGLE_ADS,
        account_id=GOOGLE_CUSTOMER_ID,
        credentials=google_test_credentials(google_ads_fake),
        api_base_url=google_ads_fake.endpoint,
    )
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    return connection


def test_a_shared_google_budget_lists_every_campaign_and_is_critical_over_the_policy_limit(
    tenant, google_world, google_ads_fake
):
    GuardrailPolicy.objects.create(tenant=tenant, connection=google_world, shared_budget_max_campaigns=2)
    entity = google_world.entities.select_related("connection", "parent").get(external_id="102")
    before = len(google_ads_fake.requests)

    payload = run(tenant, [item(entity, daily_budget="65.00")])

    doc = entity_doc(payload, "102")
    assert doc["shared_budget"]["budget_id"] == "900"
    assert doc["shared_budget"]["reference_count"] == 3
    assert [c["external_id"] for c in doc["shared_budget"]["campaigns"]] == ["101", "102", "103"]
    [breach] = change(doc, "daily_budget")["breaches"]
    assert (breach["code"], breach["severity"], breach["limit"], breach["observed"]) == (
        "shared_budget_reach",
        "critical",
        "2",
        "3",
    )
    assert "moves 3 campaigns" in breach["message"]
    assert payload["has_critical"] is True
    # The preflight only read: one search per entity type, no mutation.
    requests = google_ads_fake.requests[before:]
    assert requests and not any(r.is_mutate for r in requests)
    [account] = payload["connections"]
    assert (account["account_daily_budget_before"], account["account_daily_budget_after"]) == ("130.00", "145.00")


def test_meta_ad_sets_are_read_in_batches_of_fifty(tenant, meta_fake):
    campaign = meta_fake.add_campaign(META_ACCOUNT, campaign_id="500", name="Prospecting")
    for i in range(120):
        meta_fake.add_ad_set(campaign, ad_set_id=str(6000 + i), daily_budget=2000, bid_amount=150)
    connection = ConnectionFactory(
        tenant=tenant,
        platform=Platform.META,
        account_id=META_ACCOUNT,
        credentials={"access_token": META_TOKEN},
        api_base_url=meta_fake.base_url,
    )
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    entities = connection.entities.select_related("connection", "parent").filter(entity_type="ad_set")
    before = len(meta_fake.batches())

    payload = run(tenant, [item(e, daily_budget="21.00") for e in entities])

    assert payload["summary"]["changed"] == 120
    batches = meta_fake.batches()[before:]
    assert len(batches) == 3  # 50 + 50 + 20 reads
    assert not any(b.is_write for b in batches)
    assert change(payload["entities"][0], "daily_budget")["percent_delta"] == "5.00"


# Failures ------------------------------------------------------------------------------------


def test_a_missing_entity_is_a_critical_breach_and_is_not_diffed(tenant, world):
    SandboxEntity.objects.filter(external_id="sandbox-cmp-2").update(deleted_at=NOW)

    payload = run(tenant, [item(world.entity("sandbox-cmp-2"), daily_budget="150.00")])

    doc = entity_doc(payload, "sandbox-cmp-2")
    assert doc["live_found"] is False
    assert doc["before"] == {"daily_budget": None, "lifetime_budget": None, "status": None, "bid": None}
    [breach] = doc["breaches"]
    assert (breach["code"], breach["severity"]) == ("entity_missing", "critical")
    assert "Campaign 2" in breach["message"] and "Sync the connection" in breach["message"]
    assert payload["has_critical"] is True


def test_a_platform_read_failure_saves_a_failed_run_and_raises(tenant, world):
    world.fault("auth_expired", scope="read")

    with pytest.raises(PreflightFailed) as caught:
        preflight_run(tenant=tenant, items=[item(world.entity("sandbox-cmp-1"), daily_budget="1.00")], actor=None)

    assert caught.value.code == "platform_error"
    assert caught.value.http_status == 502
    failed = PreflightRun.objects.get(tenant=tenant)
    assert failed.status == PreflightRun.Status.FAILED
    assert failed.payload is None
    assert "access token for account sbx-acme has expired" in failed.error_message
    assert "Reconnect the account" in failed.error_message
    assert failed.finished_at is not None
    assert failed.inputs == [{"entity": world.entity("sandbox-cmp-1").pk, "targets": {"daily_budget": "1.00"}}]


def test_a_transient_read_failure_is_retried(tenant, world):
    world.fault("server_error", scope="read", remaining=1)
    waits: list[float] = []

    result = preflight_run(
        tenant=tenant,
        items=[item(world.entity("sandbox-cmp-1"), daily_budget="110.00")],
        actor=None,
        sleep=waits.append,
    )

    assert result.status == PreflightRun.Status.SUCCEEDED
    assert len(waits) == 1


def test_duplicate_or_foreign_entities_are_refused_and_nothing_is_saved(tenant, other_tenant, world):
    foreign = sandbox_world(other_tenant, campaigns=1, ad_sets_per_campaign=0).entity("sandbox-cmp-1")
    campaign = world.entity("sandbox-cmp-1")

    with pytest.raises(ValidationFailed) as duplicate:
        preflight_run(
            tenant=tenant,
            items=[item(campaign, daily_budget="1.00"), item(campaign, status="paused")],
            actor=None,
        )
    with pytest.raises(ValidationFailed) as other:
        preflight_run(tenant=tenant, items=[item(foreign, daily_budget="1.00")], actor=None)

    assert duplicate.value.details == {"items[1]": [f"entity {campaign.pk} appears more than once"]}
    assert other.value.details == {"items[0]": [f"no entity {foreign.pk} in tenant acme"]}
    assert not PreflightRun.objects.exists()


def test_a_viewer_cannot_run_a_preflight(tenant, world, viewer):
    with pytest.raises(PermissionDenied):
        preflight_run(tenant=tenant, items=[item(world.entity("sandbox-cmp-1"), status="paused")], actor=viewer)
    assert not PreflightRun.objects.exists()


# Runs ----------------------------------------------------------------------------------------


def test_a_run_is_saved_with_its_inputs_and_a_stable_id_format(tenant, world, operator):
    result = preflight_run(
        tenant=tenant,
        items=[item(world.entity("sandbox-cmp-1"), daily_budget="110.00")],
        actor=operator,
        mode="assist",
        plan_id="plan-7",
        notes="Shift to search",
        now=NOW,
    )

    assert re.fullmatch(r"pf-[0-9a-f]{20}", result.run_id)
    assert result.status == PreflightRun.Status.SUCCEEDED
    assert result.created_by == operator
    assert result.payload["run_id"] == result.run_id
    assert result.payload["generated_at"] == "2026-11-20T10:00:00Z"
    assert (result.payload["generation_mode"], result.payload["source_plan_id"]) == ("assist", "plan-7")
    assert result.payload["notes"] == "Shift to search"
    assert result.payload["tenant"] == "acme"
    assert result.payload["forecast_model"]["name"] == "power_law"
    assert result.has_critical is False


def test_a_queued_run_is_filled_and_a_finished_one_is_not_run_again(tenant, world):
    queued = PreflightRun.objects.create(tenant=tenant, run_id="pf-0123456789abcdef0123")
    items = [item(world.entity("sandbox-cmp-1"), daily_budget="110.00")]

    filled = preflight_run(tenant=tenant, items=items, actor=None, run=queued)
    reads = SandboxRequest.objects.filter(method="read").count()
    again = preflight_run(tenant=tenant, items=items, actor=None, run=filled)

    assert filled.pk == queued.pk and filled.status == PreflightRun.Status.SUCCEEDED
    assert filled.payload["run_id"] == "pf-0123456789abcdef0123"
    assert preflight_document(again) == preflight_document(filled)
    assert SandboxRequest.objects.filter(method="read").count() == reads
    assert PreflightRun.objects.count() == 1


def test_a_scenario_preflight_carries_its_plan_id_and_notes(tenant, world, operator):
    scenario = Scenario.objects.create(tenant=tenant, name="Q3", source_plan_id="plan-q3", notes="Holiday push")
    ScenarioItem.objects.create(scenario=scenario, entity=world.entity("sandbox-cmp-2"), daily_budget=Decimal("90"))

    result = preflight_for_scenario(scenario=scenario, actor=operator)

    assert result.scenario == scenario
    assert (result.plan_id, result.notes) == ("plan-q3", "Holiday push")
    assert result.payload["source_plan_id"] == "plan-q3"
    assert change(entity_doc(preflight_document(result), "sandbox-cmp-2"), "daily_budget")["delta"] == "-10.00"


# Bounded work --------------------------------------------------------------------------------


def big_world(tenant, campaigns: int) -> World:
    """``campaigns`` campaigns (budget 100.00), pairs on shared budgets, 20 days of performance each."""
    account = SandboxAccountFactory(account_id=f"sbx-big-{tenant.slug}")
    SandboxEntity.objects.bulk_create(
        SandboxEntity(
            account=account,
            entity_type="campaign",
            external_id=f"big-{i:04d}",
            name=f"Big {i}",
            status="active",
            daily_budget=Decimal("100.00"),
        )
        for i in range(campaigns)
    )
    connection = sandbox_connection(tenant, account, name="Big")
    world = World(account=account, connection=connection)
    world.sync()
    entities = list(connection.entities.order_by("external_id"))
    for index, entity in enumerate(entities):
        if index % 10 == 0:
            entity.budget_id, entity.budget_shared = f"shared-{index}", True
            entities[index + 1].budget_id, entities[index + 1].budget_shared = f"shared-{index}", True
    PlatformEntity.objects.bulk_update(entities, ["budget_id", "budget_shared"])
    EntityPerformanceDaily.objects.bulk_create(
        EntityPerformanceDaily(
            tenant=tenant,
            entity=entity,
            date=NOW.date() - timedelta(days=day + 2),
            spend=Decimal(60 + 2 * day),
            conversions=Decimal(5 + day // 3),
            revenue=Decimal(200 + 5 * day),
        )
        for entity in entities
        for day in range(20)
    )
    for entity in entities[::7]:
        ActionFactory(entity=entity, status=ActionStatus.SUCCEEDED, finished_at=NOW - timedelta(hours=2))
    return world


def entity_insert_batches(rows: int) -> int:
    fields = [f for f in PreflightEntity._meta.concrete_fields if not f.primary_key]
    batch = min(db_connection.ops.bulk_batch_size(fields, [PreflightEntity()] * rows) or rows, 1000)
    return -(-rows // batch)


def test_database_queries_do_not_grow_with_the_number_of_entities(tenant, django_assert_max_num_queries):
    world = big_world(tenant, 200)
    GuardrailPolicy.objects.create(
        tenant=tenant,
        cooldown_hours=24,
        max_account_daily_spend=Decimal("50000"),
        shared_budget_max_campaigns=1,
        max_increase_pct=Decimal("10"),
    )
    entities = list(world.connection.entities.select_related("connection", "parent").order_by("external_id"))
    items = [item(e, daily_budget="120.00") for e in entities]
    run(tenant, items[:10])  # warm up per-process caches (content types, rate-limit bucket)

    with CaptureQueriesContext(db_connection) as ten:
        small = run(tenant, items[:10])
    # The stored entity rows go in the database's insert batches (SQLite binds at most 999
    # values a statement), bounded per batch like every other write.
    with django_assert_max_num_queries(len(ten.captured_queries) + entity_insert_batches(200) - 1):
        large = run(tenant, items)

    assert small["summary"]["changed"] == 10
    assert large["summary"]["changed"] == 200
    codes = {b["code"] for b in large["breaches"]}
    assert {"cooldown", "shared_budget_reach", "max_increase_pct"} <= codes
    assert entity_doc(large, "big-0000")["forecast"]["days"] == 20
    assert SandboxRequest.objects.filter(method="read").count() == 3  # one read per preflight


def test_entities_loaded_without_their_connection_are_reloaded_in_bounded_queries(
    tenant, django_assert_max_num_queries
):
    world = big_world(tenant, 200)
    bare = list(world.connection.entities.order_by("external_id"))  # no connection or parent loaded
    items = [item(e, daily_budget="120.00") for e in bare]
    run(tenant, items[:10])

    with CaptureQueriesContext(db_connection) as ten:
        run(tenant, items[:10])
    with django_assert_max_num_queries(len(ten.captured_queries) + entity_insert_batches(200) - 1):
        large = run(tenant, items)

    assert large["summary"]["changed"] == 200


def test_the_platform_is_asked_for_exactly_the_items_entities_in_one_request(tenant, world):
    run(
        tenant, [item(world.entity("sandbox-cmp-2"), status="paused"), item(world.entity("sandbox-adset-1-2"), bid="2")]
    )

    [read] = SandboxRequest.objects.filter(method="read")
    assert sorted(read.entity_ids) == ["sandbox-adset-1-2", "sandbox-cmp-2"]
    assert not SandboxRequest.objects.filter(method="apply").exists()


# Determinism ---------------------------------------------------------------------------------


def comparable(payload: dict) -> str:
    stripped = {k: v for k, v in payload.items() if k not in ("run_id", "generated_at")}
    return json.dumps(stripped, sort_keys=True)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.randoms(use_true_random=False))
def test_shuffled_inputs_give_the_same_document(tenant, order: random.Random):
    if not tenant.connections.exists():  # examples share the test's database transaction
        big_world(tenant, 30)
        GuardrailPolicy.objects.create(tenant=tenant, cooldown_hours=24, max_increase_pct=Decimal("15"))
    connection = tenant.connections.get()
    entities = list(connection.entities.select_related("connection", "parent").order_by("external_id"))
    targets = [
        {"daily_budget": Decimal("100.00") + i, "status": "paused" if i % 4 == 0 else "active", "bid": Decimal("1.10")}
        for i in range(len(entities))
    ]
    reference = comparable(
        run(tenant, [TargetItem(entity=e, targets=t) for e, t in zip(entities, targets, strict=True)])
    )
    pairs = list(zip(entities, targets, strict=True))
    order.shuffle(pairs)
    shuffled = []
    for entity, target in pairs:
        keys = list(target)
        order.shuffle(keys)
        shuffled.append(TargetItem(entity=entity, targets={k: target[k] for k in keys}))

    assert comparable(run(tenant, shuffled)) == reference


# Platform rules (issue 9) ---------------------------------------------------------------------


def test_two_values_for_one_shared_google_budget_are_critical_naming_both_items(tenant, google_world):
    first, second = (
        google_world.entities.select_related("connection", "parent").get(external_id=i) for i in ("101", "102")
    )

    payload = run(tenant, [item(first, daily_budget="60.00"), item(second, daily_budget="70.00")])

    breaches = {
        e["external_id"]: [b for b in change(e, "daily_budget")["breaches"] if b["code"] == "shared_budget_conflict"]
        for e in payload["entities"]
    }
    assert breaches["101"][0]["severity"] == "critical"
    assert "(google_ads:campaign:102) sets it to 70.00" in breaches["101"][0]["message"]
    assert "(google_ads:campaign:101) sets it to 60.00" in breaches["102"][0]["message"]
    assert payload["has_critical"] is True


def test_the_same_value_for_one_shared_budget_is_no_conflict(tenant, google_world):
    entities = google_world.entities.select_related("connection", "parent").filter(external_id__in=["101", "102"])

    payload = run(tenant, [item(e, daily_budget="60.00") for e in entities])

    assert not [b for b in payload["breaches"] if b["code"] == "shared_budget_conflict"]


def test_the_google_connection_shows_its_daily_operations_and_warns_when_they_run_out(tenant, google_world, settings):
    settings.GOOGLE_ADS_DAILY_OPERATIONS = 15_000
    quota_take(developer_token=google_world.credentials["developer_token"], operations=14_999, now=NOW)
    entity = google_world.entities.select_related("connection", "parent").get(external_id="104")

    payload = run(tenant, [item(entity, daily_budget="90.00")])

    [account] = payload["connections"]
    assert account["google_operations"]["limit"] == 15_000
    assert account["google_operations"]["remaining"] <= 1
    [breach] = [b for b in payload["breaches"] if b["code"] == "google_operations_quota"]
    assert breach["severity"] == "warning"


@pytest.fixture
def meta_world(tenant, meta_fake):
    meta_fake.add_account(META_ACCOUNT, currency="EUR", minimum_budgets={"min_daily_budget_imp": 100})
    campaign = meta_fake.add_campaign(META_ACCOUNT, campaign_id="700", name="Prospecting")
    meta_fake.add_ad_set(campaign, ad_set_id="7001", daily_budget=2000)
    connection = ConnectionFactory(
        tenant=tenant,
        platform=Platform.META,
        account_id=META_ACCOUNT,
        credentials={"access_token": META_TOKEN},
        api_base_url=meta_fake.base_url,
    )
    sync_connection(connection=connection, executor=get_executor(connection), days=1)
    connection.refresh_from_db()
    return connection


def test_sync_keeps_metas_minimum_budgets_and_the_preflight_checks_them(tenant, meta_world):
    assert meta_world.minimum_budgets == {"min_daily_budget_imp": "1.00"}
    ad_set = meta_world.entities.select_related("connection", "parent").get(external_id="7001")
    assert ad_set.bid_strategy == "LOWEST_COST_WITHOUT_CAP"  # inherited from the campaign, mirrored

    payload = run(tenant, [item(ad_set, daily_budget="0.50")])

    [breach] = [
        b
        for b in change(entity_doc(payload, "7001"), "daily_budget")["breaches"]
        if b["code"] == "platform_minimum_budget"
    ]
    assert (breach["severity"], breach["limit"]) == ("critical", "1.00")


def test_a_fifth_meta_budget_change_within_the_hour_is_a_change_rate_limit_warning(tenant, meta_world):
    ad_set = meta_world.entities.select_related("connection", "parent").get(external_id="7001")
    for minutes in (50, 40, 30, 20):
        ActionFactory(entity=ad_set, status=ActionStatus.SUCCEEDED, finished_at=NOW - timedelta(minutes=minutes))

    payload = run(tenant, [item(ad_set, daily_budget="25.00")])

    [breach] = [b for b in entity_doc(payload, "7001")["breaches"] if b["code"] == "change_rate_limit"]
    assert breach["severity"] == "warning"
    # The oldest change plus an hour (10:10 UTC), in the account's zone with the zone named.
    assert meta_world.time_zone == "Europe/Berlin"
    assert "next is allowed at 2026-11-20 11:10:00 CET" in breach["message"]
