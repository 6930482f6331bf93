"""Scenario imports: the proposed push bundle, CSV and item lists; refused whole, row by row."""

from __future__ import annotations

import codecs
import copy
import json
from decimal import Decimal

import pytest
from django.test import override_settings

from budgetradar.errors import InvalidState, PermissionDenied, ValidationFailed
from scenarios.models import Scenario, ScenarioItem
from scenarios.services.imports import (
    parse_bundle,
    parse_csv,
    parse_item_list,
    scenario_create,
    scenario_import,
    scenario_update,
)
from tests.factories import AdSetFactory, ConnectionFactory, EntityFactory

BUNDLE = {
    "plan_id": "plan-2026-11-20-eu",
    "generated_at": "2026-11-20T06:00:00Z",
    "entities": [
        {
            "entity_type": "campaign",
            "entity_id": "sandbox-cmp-1001",
            "name": "EU Search - Brand",
            "status": "active",
            "metadata": {"platform": "sandbox"},
            "sections": {
                "spend": {
                    "daily_budget": {
                        "field_path": "campaign.daily_budget",
                        "label": "Daily budget",
                        "kind": "numeric",
                        "unit": "EUR",
                        "value": "460.00",
                    }
                }
            },
        },
        {
            "entity_type": "ad_set",
            "entity_id": "sandbox-adset-2003",
            "name": "Prospecting - Lookalike 1%",
            "status": "active",
            "metadata": {"platform": "sandbox"},
            "sections": {
                "spend": {
                    "daily_budget": {"field_path": "ad_set.daily_budget", "unit": "EUR", "value": "95.50"},
                    "bid_amount": {"field_path": "ad_set.bid_amount", "unit": "EUR", "value": "1.80"},
                }
            },
        },
        {
            "entity_type": "campaign",
            "entity_id": "sandbox-cmp-1003",
            "name": "EU Display - Retargeting",
            "status": "paused",
            "metadata": {"platform": "sandbox"},
            "sections": {"delivery": {"status": {"field_path": "campaign.status", "unit": None, "value": "paused"}}},
        },
    ],
}
CSV = (
    "platform,entity_id,field,value\n"
    "sandbox,sandbox-cmp-1001,daily_budget,460.00\n"
    "sandbox,sandbox-adset-2003,daily_budget,95.50\n"
    "sandbox,sandbox-adset-2003,bid_amount,1.80\n"
    "sandbox,sandbox-cmp-1003,status,paused\n"
)


@pytest.fixture
def mirror(tenant):
    connection = ConnectionFactory(tenant=tenant, name="Acme Sandbox", currency="EUR")
    brand = EntityFactory(connection=connection, external_id="sandbox-cmp-1001", name="EU Search - Brand")
    AdSetFactory(connection=connection, parent=brand, external_id="sandbox-adset-2003")
    EntityFactory(connection=connection, external_id="sandbox-cmp-1003", name="EU Display - Retargeting")
    return connection


def bundle(**changes) -> dict:
    """The sample bundle; ``changes`` maps "index.dotted.path" to a new value (None deletes)."""
    data = copy.deepcopy(BUNDLE)
    for path, value in changes.items():
        index, *keys = path.split(".")
        node = data["entities"][int(index)]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return data


def targets_by_id(items) -> dict[str, dict]:
    return {item.entity.external_id: item.targets for item in items}


def refused(call) -> ValidationFailed:
    """Run ``call``; it must refuse and write nothing."""
    before = (Scenario.objects.count(), ScenarioItem.objects.count(), Scenario.history.count())
    with pytest.raises(ValidationFailed) as excinfo:
        call()
    assert (Scenario.objects.count(), ScenarioItem.objects.count(), Scenario.history.count()) == before
    return excinfo.value


def only_error(exc: ValidationFailed) -> dict:
    assert len(exc.details) == 1, exc.details
    return exc.details[0]


SAMPLE_TARGETS = {
    "sandbox-cmp-1001": {"daily_budget": Decimal("460.00")},
    "sandbox-adset-2003": {"daily_budget": Decimal("95.50"), "bid": Decimal("1.80")},
    "sandbox-cmp-1003": {"status": "paused"},
}


# The happy paths ------------------------------------------------------------------------------


def test_the_sample_bundle_becomes_one_item_per_entity_with_its_plan_id(tenant, mirror):
    plan_id, items = parse_bundle(tenant=tenant, data=json.dumps(BUNDLE).encode())
    assert plan_id == "plan-2026-11-20-eu"
    assert targets_by_id(items) == SAMPLE_TARGETS
    assert all(item.entity.connection == mirror for item in items)


def test_the_sample_csv_merges_rows_of_an_entity_into_one_item(tenant, mirror):
    assert targets_by_id(parse_csv(tenant=tenant, data=CSV)) == SAMPLE_TARGETS


def test_importing_a_bundle_creates_a_draft_scenario_recorded_in_history(tenant, mirror, operator):
    scenario = scenario_import(tenant=tenant, actor=operator, name="", data=json.dumps(BUNDLE), format="bundle")
    assert scenario.name == "plan-2026-11-20-eu" and scenario.source_plan_id == "plan-2026-11-20-eu"
    assert scenario.status == "draft" and scenario.created_by == operator
    rows = {i.entity.external_id: i for i in scenario.items.select_related("entity")}
    assert rows["sandbox-adset-2003"].bid == Decimal("1.80") and rows["sandbox-cmp-1003"].status == "paused"
    assert rows["sandbox-cmp-1001"].daily_budget == Decimal("460.00") and rows["sandbox-cmp-1001"].bid is None
    history = scenario.history.get()
    assert history.history_user == operator
    assert history.history_change_reason == "imported from bundle plan-2026-11-20-eu with 3 item(s)"


def test_importing_a_csv_names_the_scenario_as_asked(tenant, mirror, operator):
    scenario = scenario_import(tenant=tenant, actor=operator, name="Q3 shift", data=CSV.encode(), format="csv")
    assert scenario.name == "Q3 shift" and scenario.items.count() == 3
    assert scenario.history.get().history_change_reason == "imported from CSV with 3 item(s)"


def test_a_bundle_with_a_byte_order_mark_and_numbers_imports_exactly(tenant, mirror):
    text = json.dumps(bundle(**{"1.sections.spend.daily_budget.value": 95.5})).replace('"95.5"', "95.5")
    _, items = parse_bundle(tenant=tenant, data=codecs.BOM_UTF8 + text.encode())
    assert targets_by_id(items)["sandbox-adset-2003"]["daily_budget"] == Decimal("95.5")


def test_a_csv_from_a_spreadsheet_with_bom_crlf_and_semicolons_imports(tenant, mirror):
    text = "\ufeffPlatform;Entity_ID;Field;Value\r\nsandbox;sandbox-cmp-1001;daily_budget;460.00\r\n\r\n"
    assert targets_by_id(parse_csv(tenant=tenant, data=text.encode())) == {
        "sandbox-cmp-1001": {"daily_budget": Decimal("460.00")}
    }


@pytest.mark.parametrize(
    ("header", "fields", "codes"),
    [
        ("platform,entity_id,field,value,comment,owner", ["comment", "owner"], ["unknown_column"] * 2),
        ("platform,entity_id,field,value,", ["(unnamed)"], ["unknown_column"]),
        ("platform,entity_id,field,value,value", ["value"], ["duplicate_column"]),
    ],
)
def test_a_csv_with_columns_it_does_not_read_is_refused_naming_them(tenant, mirror, header, fields, codes):
    rows = "".join(f"\nsandbox,sandbox-cmp-1001,daily_budget,460.00{',x' * (header.count(',') - 3)}" for _ in [0])
    with pytest.raises(ValidationFailed) as caught:
        parse_csv(tenant=tenant, data=(header + rows).encode())
    assert [(e["line"], e["field"], e["code"]) for e in caught.value.details] == [
        (1, f, c) for f, c in zip(fields, codes, strict=True)
    ]
    assert all("Line 1: the header" in e["message"] for e in caught.value.details)


def test_a_csv_with_a_nul_character_is_refused_with_its_line(tenant, mirror):
    text = (
        "platform,entity_id,field,value\nsandbox,sandbox-cmp-1001,daily_budget,460.00\n"
        "sandbox,sandbox-cmp-\x001002,status,paused\n"
    )
    with pytest.raises(ValidationFailed) as caught:
        parse_csv(tenant=tenant, data=text.encode())
    assert [(e["line"], e["code"]) for e in caught.value.details] == [(3, "nul_character")]


def test_a_utf16_csv_with_a_byte_order_mark_imports(tenant, mirror):
    assert targets_by_id(parse_csv(tenant=tenant, data=CSV.encode("utf-16"))) == SAMPLE_TARGETS


def test_statuses_are_accepted_in_any_case(tenant, mirror):
    _, items = parse_bundle(tenant=tenant, data=bundle(**{"2.sections.delivery.status.value": "PAUSED"}))
    assert targets_by_id(items)["sandbox-cmp-1003"] == {"status": "paused"}


def test_entities_of_every_platform_resolve_in_one_query(tenant, mirror, django_assert_num_queries):
    meta = ConnectionFactory(tenant=tenant, platform="meta", currency="EUR")
    EntityFactory(connection=meta, external_id="120330000001")
    data = bundle()
    data["entities"].append(
        {
            "entity_type": "campaign",
            "entity_id": 120330000001,
            "metadata": {"platform": "meta"},
            "sections": {"spend": {"daily_budget": {"unit": "EUR", "value": "50.00"}}},
        }
    )
    with django_assert_num_queries(1):
        _, items = parse_bundle(tenant=tenant, data=json.dumps(data))
    assert len(items) == 4 and items[3].entity.connection == meta


def test_large_inputs_resolve_in_batches_of_entities_not_per_entity(
    tenant, mirror, monkeypatch, django_assert_num_queries
):
    monkeypatch.setattr("scenarios.services.imports.RESOLVE_BATCH", 2)
    with django_assert_num_queries(2):
        items = parse_csv(tenant=tenant, data=CSV)
    assert targets_by_id(items) == SAMPLE_TARGETS
    with django_assert_num_queries(2):
        assert (
            len(parse_item_list(tenant=tenant, items=[{"entity": i.entity.pk, "status": "paused"} for i in items])) == 3
        )


# Refused bundles ---------------------------------------------------------------------------------

BAD_BUNDLES = [
    # (case, changes, entity index, field, code, text)
    (
        "unknown entity",
        {"0.entity_id": "sandbox-cmp-9"},
        0,
        "entity_id",
        "unknown_entity",
        "sandbox campaign sandbox-cmp-9 does not exist in your tenant",
    ),
    (
        "wrong entity type",
        {"1.entity_type": "campaign"},
        1,
        "entity_id",
        "unknown_entity",
        "sandbox campaign sandbox-adset-2003 does not exist in your tenant",
    ),
    (
        "negative budget",
        {"0.sections.spend.daily_budget.value": "-5.00"},
        0,
        "sections.spend.daily_budget.value",
        "negative",
        "cannot be negative",
    ),
    (
        "zero budget",
        {"0.sections.spend.daily_budget.value": "0"},
        0,
        "sections.spend.daily_budget.value",
        "zero",
        "must be greater than zero",
    ),
    (
        "zero bid",
        {"1.sections.spend.bid_amount.value": "0.00"},
        1,
        "sections.spend.bid_amount.value",
        "zero",
        "must be greater than zero",
    ),
    (
        "NaN as a string",
        {"0.sections.spend.daily_budget.value": "NaN"},
        0,
        "sections.spend.daily_budget.value",
        "not_finite",
        "finite",
    ),
    (
        "Infinity as a string",
        {"0.sections.spend.daily_budget.value": "Infinity"},
        0,
        "sections.spend.daily_budget.value",
        "not_finite",
        "finite",
    ),
    (
        "over-precise amount",
        {"1.sections.spend.daily_budget.value": "95.555"},
        1,
        "sections.spend.daily_budget.value",
        "precision",
        "more than 2 decimal places",
    ),
    (
        "not a number",
        {"0.sections.spend.daily_budget.value": "lots"},
        0,
        "sections.spend.daily_budget.value",
        "invalid",
        "decimal amount",
    ),
    (
        "wrong currency",
        {"0.sections.spend.daily_budget.unit": "USD"},
        0,
        "sections.spend.daily_budget.unit",
        "wrong_currency",
        "the amount is in USD but the account of sandbox-cmp-1001 is in EUR",
    ),
    (
        "unknown field",
        {"0.sections.spend.budget": {"unit": "EUR", "value": "5.00"}},
        0,
        "sections.spend.budget",
        "unknown_field",
        "unknown field",
    ),
    (
        "audience change",
        {"0.sections.audience.age_min": {"value": "18"}},
        0,
        "sections.audience.age_min",
        "unknown_field",
        "unknown field",
    ),
    (
        "status in the wrong section",
        {"0.sections.spend.status": {"value": "paused"}},
        0,
        "sections.spend.status",
        "unknown_field",
        "delivery.status",
    ),
    (
        "removal",
        {"2.sections.delivery.status.value": "removed"},
        2,
        "sections.delivery.status.value",
        "removal_refused",
        "would delete or remove the entity",
    ),
    (
        "deletion as the entity status",
        {"2.status": "DELETED"},
        2,
        "status",
        "removal_refused",
        "BudgetRadar only sets active or paused",
    ),
    (
        "unknown status",
        {"2.sections.delivery.status.value": "sleeping"},
        2,
        "sections.delivery.status.value",
        "invalid_status",
        "must be active or paused",
    ),
    (
        "unsupported platform",
        {"0.metadata.platform": "tiktok"},
        0,
        "metadata.platform",
        "unsupported_platform",
        "platform 'tiktok' is not supported; use one of sandbox, google_ads, meta",
    ),
    (
        "missing platform",
        {"0.metadata": None},
        0,
        "metadata.platform",
        "unsupported_platform",
        "is not supported",
    ),
    ("missing entity id", {"0.entity_id": None}, 0, "entity_id", "required", "entity_id"),
    (
        "bid on a campaign",
        {"0.sections.spend.bid_amount": {"unit": "EUR", "value": "1.00"}},
        0,
        "sections.spend.bid_amount",
        "not_supported",
        "bid can be set on ad sets only, not on the campaign sandbox-cmp-1001",
    ),
    ("nothing to change", {"2.sections": {}}, 2, "sections", "empty", "sets nothing"),
    (
        "value missing",
        {"0.sections.spend.daily_budget": {"unit": "EUR"}},
        0,
        "sections.spend.daily_budget",
        "malformed",
        '"value"',
    ),
]


@pytest.mark.parametrize(
    ("changes", "index", "field", "code", "text"),
    [case[1:] for case in BAD_BUNDLES],
    ids=[case[0] for case in BAD_BUNDLES],
)
def test_a_bad_bundle_value_refuses_the_whole_import_naming_entity_and_field(
    tenant, mirror, operator, changes, index, field, code, text
):
    data = json.dumps(bundle(**changes))
    exc = refused(lambda: scenario_import(tenant=tenant, actor=operator, name="x", data=data, format="bundle"))
    error = only_error(exc)
    assert (error["index"], error["field"], error["code"]) == (index, field, code)
    assert text in error["message"] and error["message"].startswith(f"entities[{index}]")
    assert "nothing was imported" in exc.message and text in exc.message


def test_another_tenants_entity_is_refused_like_a_missing_one(tenant, mirror, other_tenant):
    theirs = ConnectionFactory(tenant=other_tenant, platform="sandbox")
    EntityFactory(connection=theirs, external_id="sandbox-cmp-7777")
    error = only_error(refused(lambda: parse_bundle(tenant=tenant, data=bundle(**{"0.entity_id": "sandbox-cmp-7777"}))))
    assert error["message"] == (
        "entities[0] (sandbox-cmp-7777), entity_id: sandbox campaign sandbox-cmp-7777 does not exist in your tenant."
    )
    assert error["entity_id"] == "sandbox-cmp-7777"


def test_a_duplicated_entity_names_both_positions(tenant, mirror):
    data = bundle()
    data["entities"].append(copy.deepcopy(data["entities"][0]))
    error = only_error(refused(lambda: parse_bundle(tenant=tenant, data=data)))
    assert (error["index"], error["code"]) == (3, "duplicate")
    assert "already listed at entities[0]" in error["message"]


def test_json_nan_and_infinity_literals_are_refused_as_non_finite(tenant, mirror):
    text = json.dumps(bundle()).replace('"460.00"', "NaN").replace('"95.50"', "-Infinity")
    exc = refused(lambda: parse_bundle(tenant=tenant, data=text))
    assert [(e["index"], e["code"]) for e in exc.details] == [(0, "not_finite"), (1, "not_finite")]


def test_an_amount_precise_for_euros_is_refused_for_yen(tenant, mirror):
    yen = ConnectionFactory(tenant=tenant, platform="google_ads", currency="JPY")
    EntityFactory(connection=yen, external_id="555")
    data = {
        "entities": [
            {
                "entity_type": "campaign",
                "entity_id": "555",
                "metadata": {"platform": "google_ads"},
                "sections": {"spend": {"daily_budget": {"unit": "JPY", "value": "1000.50"}}},
            }
        ]
    }
    error = only_error(refused(lambda: parse_bundle(tenant=tenant, data=data)))
    assert error["code"] == "precision" and "JPY" in error["message"]


def test_every_bad_value_is_reported_not_just_the_first(tenant, mirror):
    data = bundle(
        **{
            "0.sections.spend.daily_budget.value": "-1",
            "1.sections.spend.bid_amount.value": "0",
            "2.entity_id": "sandbox-cmp-404",
        }
    )
    exc = refused(lambda: parse_bundle(tenant=tenant, data=data))
    assert [(e["index"], e["code"]) for e in exc.details] == [(0, "negative"), (1, "zero"), (2, "unknown_entity")]
    assert exc.message.startswith("The bundle was refused and nothing was imported (3 errors).")


def test_two_connections_with_the_same_id_are_ambiguous(tenant, mirror):
    second = ConnectionFactory(tenant=tenant, platform="sandbox", name="Second sandbox")
    EntityFactory(connection=second, external_id="sandbox-cmp-1001")
    error = only_error(refused(lambda: parse_bundle(tenant=tenant, data=bundle())))
    assert error["code"] == "ambiguous_entity" and "Second sandbox" in error["message"]


@pytest.mark.parametrize(
    ("data", "code", "text"),
    [
        (b'{"entities": [', "malformed", "not valid JSON"),
        (b"[]", "malformed", 'an "entities" list'),
        (b'{"plan_id": "x"}', "malformed", 'an "entities" list'),
        (b'{"entities": []}', "empty", "no entities"),
        ('{"entities": [], "plan_id": "caf\u00e9"}'.encode("latin-1"), "encoding", "not UTF-8"),
        (b'{"entities": ["sandbox-cmp-1001"]}', "malformed", "must be a JSON object"),
    ],
)
def test_a_malformed_bundle_is_refused_with_a_clear_reason(tenant, mirror, operator, data, code, text):
    exc = refused(lambda: scenario_import(tenant=tenant, actor=operator, name="x", data=data, format="bundle"))
    assert only_error(exc)["code"] == code and text in exc.message


@override_settings(IMPORT_MAX_BYTES=2048)
def test_a_bundle_over_the_size_limit_is_refused_stating_the_limit(tenant, mirror, operator):
    data = bundle()
    data["entities"] *= 10
    exc = refused(
        lambda: scenario_import(tenant=tenant, actor=operator, name="x", data=json.dumps(data), format="bundle")
    )
    assert only_error(exc)["code"] == "too_large"
    assert "the limit is 2.0 KB (2048 bytes)" in exc.message


# Refused CSVs ------------------------------------------------------------------------------------

CSV_HEADER = "platform,entity_id,field,value\n"
BAD_CSV_ROWS = [
    # (case, row on line 3, field, code, text)
    ("unknown entity", "sandbox,sandbox-cmp-9,daily_budget,10.00", "entity_id", "unknown_entity", "does not exist"),
    ("negative", "sandbox,sandbox-cmp-1003,daily_budget,-10.00", "daily_budget", "negative", "cannot be negative"),
    ("zero", "sandbox,sandbox-cmp-1003,lifetime_budget,0", "lifetime_budget", "zero", "greater than zero"),
    ("NaN", "sandbox,sandbox-cmp-1003,daily_budget,NaN", "daily_budget", "not_finite", "finite"),
    ("Infinity", "sandbox,sandbox-cmp-1003,daily_budget,-inf", "daily_budget", "not_finite", "finite"),
    ("over-precise", "sandbox,sandbox-cmp-1003,daily_budget,10.001", "daily_budget", "precision", "decimal places"),
    ("empty value", "sandbox,sandbox-cmp-1003,daily_budget,", "daily_budget", "required", "needs a decimal amount"),
    ("unknown field", "sandbox,sandbox-cmp-1003,budgett,10.00", "budgett", "unknown_field", "unknown field 'budgett'"),
    ("removal", "sandbox,sandbox-cmp-1003,status,deleted", "status", "removal_refused", "delete or remove"),
    ("bad status", "sandbox,sandbox-cmp-1003,status,on", "status", "invalid_status", "active or paused"),
    ("platform", "facebook,sandbox-cmp-1003,status,paused", "platform", "unsupported_platform", "'facebook'"),
    ("short row", "sandbox,sandbox-cmp-1003", "file", "malformed", "has 2 cells; expected at least 4"),
    ("bid on campaign", "sandbox,sandbox-cmp-1003,bid,1.00", "bid", "not_supported", "ad sets only"),
    ("duplicate", "sandbox,sandbox-cmp-1001,daily_budget,470.00", "daily_budget", "duplicate", "already set on line 2"),
]


@pytest.mark.parametrize(
    ("row", "field", "code", "text"), [case[1:] for case in BAD_CSV_ROWS], ids=[case[0] for case in BAD_CSV_ROWS]
)
def test_a_bad_csv_row_refuses_the_whole_file_naming_line_and_field(tenant, mirror, operator, row, field, code, text):
    data = f"{CSV_HEADER}sandbox,sandbox-cmp-1001,daily_budget,460.00\n{row}\nsandbox,sandbox-cmp-1003,status,paused\n"
    exc = refused(lambda: scenario_import(tenant=tenant, actor=operator, name="x", data=data.encode(), format="csv"))
    error = only_error(exc)
    assert (error["line"], error["field"], error["code"]) == (3, field, code)
    assert error["message"].startswith("Line 3") and text in error["message"]


def test_csv_line_numbers_count_physical_lines_including_blank_and_quoted_ones(tenant, mirror):
    data = (
        f'{CSV_HEADER}\n"sandbox","sandbox-cmp-1001","daily_budget","460.00"\n\nsandbox,sandbox-cmp-1003,status,gone\n'
    )
    error = only_error(refused(lambda: parse_csv(tenant=tenant, data=data)))
    assert error["line"] == 5 and error["entity_id"] == "sandbox-cmp-1003"


@pytest.mark.parametrize(
    ("data", "line", "code", "text"),
    [
        (b"platform,entity_id,field\nsandbox,sandbox-cmp-1001,status\n", 1, "missing_column", "lacks the column value"),
        (b"entity,amount\n", 1, "missing_column", "columns platform, entity_id, field, value"),
        (b"", 1, "empty", "The CSV is empty"),
        (CSV_HEADER.encode(), 2, "empty", "no rows"),
        (f'{CSV_HEADER}sandbox,"sandbox-cmp-1001,status,paused\n'.encode(), 2, "malformed", "not valid CSV"),
        (f"{CSV_HEADER}sandbox,caf\u00e9,status,paused\n".encode("latin-1"), None, "encoding", "not UTF-8"),
    ],
)
def test_a_malformed_csv_is_refused_with_a_clear_reason(tenant, mirror, data, line, code, text):
    exc = refused(lambda: parse_csv(tenant=tenant, data=data))
    error = only_error(exc)
    assert error["code"] == code and error.get("line") == line and text in exc.message


@override_settings(IMPORT_MAX_BYTES=1024)
def test_a_csv_over_the_size_limit_is_refused_stating_the_limit(tenant, mirror):
    data = CSV_HEADER + "sandbox,sandbox-cmp-1001,daily_budget,460.00\n" * 40
    exc = refused(lambda: parse_csv(tenant=tenant, data=data))
    assert only_error(exc)["code"] == "too_large" and "the limit is 1.0 KB (1024 bytes)" in exc.message


# Item lists (API and admin) ---------------------------------------------------------------------------


def test_an_item_list_becomes_items(tenant, mirror):
    brand = mirror.entities.get(external_id="sandbox-cmp-1001")
    adset = mirror.entities.get(external_id="sandbox-adset-2003")
    items = parse_item_list(
        tenant=tenant,
        items=[{"entity": brand.pk, "daily_budget": "120.00", "status": "paused"}, {"entity": str(adset.pk), "bid": 1}],
    )
    assert [i.targets for i in items] == [{"daily_budget": Decimal("120.00"), "status": "paused"}, {"bid": Decimal(1)}]


def test_bad_items_are_refused_naming_index_and_field(tenant, mirror, other_tenant):
    brand = mirror.entities.get(external_id="sandbox-cmp-1001")
    theirs = EntityFactory(connection=ConnectionFactory(tenant=other_tenant))
    items = [
        {"entity": brand.pk, "daily_budget": "120.00"},
        {"entity": theirs.pk, "daily_budget": "120.00"},
        {"entity": brand.pk, "status": "paused"},
        {"entity": 999999, "status": "paused"},
        {"entity": True, "status": "paused"},
        {"daily_budget": "1.00"},
        {"entity": mirror.entities.get(external_id="sandbox-cmp-1003").pk, "daily_budget": "0", "colour": "red"},
        {"entity": mirror.entities.get(external_id="sandbox-adset-2003").pk},
    ]
    exc = refused(lambda: parse_item_list(tenant=tenant, items=items))
    found = [(e["index"], e["field"], e["code"]) for e in exc.details]
    assert found == [
        (1, "entity", "unknown_entity"),
        (2, "entity", "duplicate"),
        (3, "entity", "unknown_entity"),
        (4, "entity", "invalid"),
        (5, "entity", "required"),
        (6, "daily_budget", "zero"),
        (6, "colour", "unknown_field"),
        (7, "entity", "empty"),
    ]
    assert exc.details[0]["message"] == f"Item 1, entity: Entity {theirs.pk} does not exist in your tenant."


# Writes -----------------------------------------------------------------------------------------------


def test_a_viewer_cannot_create_or_import_scenarios(tenant, mirror, viewer):
    with pytest.raises(PermissionDenied, match="create scenarios"):
        scenario_create(tenant=tenant, actor=viewer, name="x", items=[])
    with pytest.raises(PermissionDenied, match="import scenarios"):
        scenario_import(tenant=tenant, actor=viewer, name="x", data="not even json", format="bundle")
    assert Scenario.objects.count() == 0


def test_a_scenario_needs_a_name(tenant, operator):
    exc = refused(lambda: scenario_create(tenant=tenant, actor=operator, name="  ", items=[]))
    assert exc.details == [{"field": "name", "code": "required", "message": "A scenario needs a name."}]


def test_items_of_another_tenant_are_refused_even_when_built_by_hand(tenant, mirror, operator, other_tenant):
    _, items = parse_bundle(tenant=tenant, data=bundle())
    exc = refused(lambda: scenario_create(tenant=other_tenant, actor=None, name="x", items=items))
    assert {e["code"] for e in exc.details} == {"unknown_entity"}


def test_updating_items_replaces_them_bumps_updated_at_and_records_who_and_why(tenant, mirror, operator):
    scenario = scenario_import(tenant=tenant, actor=operator, name="Plan", data=CSV, format="csv")
    first_update = scenario.updated_at
    brand = mirror.entities.get(external_id="sandbox-cmp-1001")
    scenario_update(
        scenario=scenario,
        actor=operator,
        name="Plan v2",
        items=parse_item_list(tenant=tenant, items=[{"entity": brand.pk, "daily_budget": "500.00"}]),
        reason="raised brand",
    )
    scenario.refresh_from_db()
    assert scenario.name == "Plan v2" and scenario.updated_at > first_update
    assert [(i.entity_id, i.daily_budget) for i in scenario.items.all()] == [(brand.pk, Decimal("500.00"))]
    latest = scenario.history.first()
    assert latest.history_user == operator and latest.history_change_reason == "raised brand"


def test_a_viewer_cannot_change_and_an_archived_scenario_cannot_be_changed(tenant, mirror, operator, viewer):
    scenario = scenario_import(tenant=tenant, actor=operator, name="Plan", data=CSV, format="csv")
    with pytest.raises(PermissionDenied):
        scenario_update(scenario=scenario, actor=viewer, name="Mine")
    Scenario.objects.filter(pk=scenario.pk).update(status=Scenario.Status.ARCHIVED)
    with pytest.raises(InvalidState, match="archived"):
        scenario_update(scenario=scenario, actor=operator, name="Mine")
    assert Scenario.objects.get(pk=scenario.pk).name == "Plan"


def test_an_unknown_import_format_is_refused(tenant, operator):
    exc = refused(lambda: scenario_import(tenant=tenant, actor=operator, name="x", data=CSV, format="xlsx"))
    assert "format must be bundle or csv" in exc.message
