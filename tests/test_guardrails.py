"""Guardrails: every rule at, just under and just over its threshold; severities; policy
resolution; change windows and blackout dates in the account's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from actions.models import ActionStatus
from platforms.models import EntityPerformanceDaily
from scenarios.models import GuardrailPolicy
from scenarios.services import guardrails as g
from scenarios.services.items import TargetItem
from scenarios.services.preflight import preflight_entities, preflight_run
from tests.engine_helpers import sandbox_world
from tests.factories import ActionFactory, ConnectionFactory

D = Decimal
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
SUBJECT, KEY = "Campaign 1 (sandbox:campaign:cmp-1)", "sandbox:campaign:cmp-1"
ENTITY = {"subject": SUBJECT, "key": KEY}


def policy(**fields) -> GuardrailPolicy:
    return GuardrailPolicy(**fields)


# (code, policy fields, evaluate(policy, value), [(position, value, expected observed or None)])
RULES = [
    (
        "max_increase_pct",
        {"max_increase_pct": D("50")},
        lambda p, v: g.evaluate_max_increase_pct(
            p, field="daily_budget", before=D("100.00"), after=D(v), unit="EUR", **ENTITY
        ),
        [("under", "149.99", None), ("at", "150.00", None), ("over", "150.01", "50.01")],
    ),
    (
        "max_decrease_pct",
        {"max_decrease_pct": D("20")},
        lambda p, v: g.evaluate_max_decrease_pct(
            p, field="daily_budget", before=D("100.00"), after=D(v), unit="EUR", **ENTITY
        ),
        [("under", "80.01", None), ("at", "80.00", None), ("over", "79.99", "20.01")],
    ),
    (
        "min_daily_budget",
        {"min_daily_budget": D("10.00")},
        lambda p, v: g.evaluate_min_daily_budget(p, after=D(v), unit="EUR", **ENTITY),
        [("under", "9.99", "9.99"), ("at", "10.00", None), ("over", "10.01", None)],
    ),
    (
        "max_daily_budget",
        {"max_daily_budget": D("500.00")},
        lambda p, v: g.evaluate_max_daily_budget(p, after=D(v), unit="EUR", **ENTITY),
        [("under", "499.99", None), ("at", "500.00", None), ("over", "500.01", "500.01")],
    ),
    (
        "max_account_daily_spend",
        {"max_account_daily_spend": D("1000.00")},
        lambda p, v: g.evaluate_max_account_daily_spend(
            p, account="Acme Sandbox", before=D("900.00"), after=D(v), unit="EUR"
        ),
        [("under", "999.99", None), ("at", "1000.00", None), ("over", "1000.01", "1000.01")],
    ),
    (
        "roas_floor",
        {"roas_floor": D("3.0000")},
        lambda p, v: g.evaluate_roas_floor(p, roas=D(v), confidence="high", **ENTITY),
        [("under", "2.9999", "2.9999"), ("at", "3.0000", None), ("over", "3.0001", None)],
    ),
    (
        "cpa_ceiling",
        {"cpa_ceiling": D("20.00")},
        lambda p, v: g.evaluate_cpa_ceiling(p, cpa=D(v), unit="EUR", confidence="medium", **ENTITY),
        [("under", "19.99", None), ("at", "20.00", None), ("over", "20.01", "20.01")],
    ),
    (
        "max_entities_per_deploy",
        {"max_entities_per_deploy": 100},
        lambda p, v: g.evaluate_max_entities_per_deploy(p, scope="The plan", changed=int(v)),
        [("under", "99", None), ("at", "100", None), ("over", "101", "101")],
    ),
    (
        "cooldown",
        {"cooldown_hours": 24},
        lambda p, v: g.evaluate_cooldown(p, last_change=NOW - timedelta(seconds=int(v)), now=NOW, **ENTITY),
        [("under", str(24 * 3600 - 1), "24.0"), ("at", str(24 * 3600), None), ("over", str(24 * 3600 + 1), None)],
    ),
    (
        "learning_phase",
        {"learning_phase_change_pct": D("20")},
        lambda p, v: g.evaluate_learning_phase(
            p,
            field="daily_budget",
            platform="meta",
            entity_type="ad_set",
            before=D("100.00"),
            after=D(v),
            **ENTITY,
        ),
        [("under", "119.99", None), ("at", "120.00", None), ("over", "120.01", "20.01")],
    ),
]

CASES = [
    pytest.param(code, fields, evaluate, value, expected, id=f"{code}-{position}")
    for code, fields, evaluate, triples in RULES
    for position, value, expected in triples
]


@pytest.mark.parametrize(("code", "fields", "evaluate", "value", "expected"), CASES)
def test_each_rule_breaches_only_beyond_its_threshold(code, fields, evaluate, value, expected):
    breach = evaluate(policy(**fields), value)

    if expected is None:
        assert breach is None
        return
    assert breach["code"] == code
    assert breach["severity"] == g.DEFAULT_SEVERITIES[code]
    assert breach["observed"] == expected
    assert breach["limit"] is not None
    assert breach["message"]


@pytest.mark.parametrize(("code", "fields", "evaluate", "value", "expected"), CASES)
def test_a_rule_switched_off_never_breaches(code, fields, evaluate, value, expected):
    assert evaluate(policy(severities={code: "off"}, **fields), value) is None


@pytest.mark.parametrize(("code", "fields", "evaluate", "value", "expected"), CASES)
def test_a_rule_without_a_threshold_never_breaches(code, fields, evaluate, value, expected):
    if code == "learning_phase":
        fields = {"learning_phase_warning": False}
    else:
        fields = {}
    assert evaluate(policy(**fields), value) is None


@pytest.mark.parametrize(
    ("campaigns", "severity"), [(2, "warning"), (3, "warning"), (4, "critical")], ids=["under", "at", "over"]
)
def test_shared_budget_reach_always_warns_and_is_critical_over_the_limit(campaigns, severity):
    breach = g.evaluate_shared_budget_reach(
        policy(shared_budget_max_campaigns=3), field="daily_budget", budget_id="900", campaigns=campaigns, **ENTITY
    )

    assert breach["severity"] == severity
    assert f"moves {campaigns} campaigns" in breach["message"]
    assert breach["observed"] == str(campaigns)


def test_shared_budget_reach_warns_even_without_a_limit():
    breach = g.evaluate_shared_budget_reach(policy(), field="daily_budget", budget_id="9", campaigns=5, **ENTITY)

    assert (breach["severity"], breach["limit"]) == ("warning", None)
    assert "4 besides this one" in breach["message"]


@pytest.mark.parametrize(("notes", "breaches"), [("", True), ("   ", True), ("Holiday push", False)])
def test_notes_are_required_when_the_policy_says_so(notes, breaches):
    breach = g.evaluate_notes_required(policy(require_notes=True), scope="The plan", notes=notes)

    assert (breach is not None) == breaches
    assert g.evaluate_notes_required(policy(), scope="The plan", notes=notes) is None


def test_an_increase_from_zero_breaches_a_percentage_limit():
    breach = g.evaluate_max_increase_pct(
        policy(max_increase_pct=D("50")), field="daily_budget", before=D("0"), after=D("10.00"), unit="EUR", **ENTITY
    )

    assert breach["observed"] is None
    assert "from zero" in breach["message"]


def test_learning_phase_is_only_about_meta_ad_sets():
    kwargs = {"field": "bid", "before": D("1.00"), "after": D("2.00"), **ENTITY}

    assert g.evaluate_learning_phase(policy(), platform="meta", entity_type="ad_set", **kwargs)["severity"] == "warning"
    assert g.evaluate_learning_phase(policy(), platform="meta", entity_type="campaign", **kwargs) is None
    assert g.evaluate_learning_phase(policy(), platform="google_ads", entity_type="ad_set", **kwargs) is None


def test_low_confidence_and_missing_forecasts_are_warned_about():
    assert g.evaluate_low_confidence_forecast(policy(), forecast=None, **ENTITY)["observed"] == "none"
    low = {"confidence": "low", "days": 3, "r_squared": "0.1000"}
    assert "low confidence (3 days" in g.evaluate_low_confidence_forecast(policy(), forecast=low, **ENTITY)["message"]
    assert g.evaluate_low_confidence_forecast(policy(), forecast={**low, "confidence": "medium"}, **ENTITY) is None


def test_entity_missing_is_always_critical():
    breach = g.evaluate_entity_missing(
        policy(severities={"entity_missing": "off"}), removed=False, subject=SUBJECT, key=KEY
    )

    assert breach["severity"] == "critical"


def test_every_code_has_a_default_severity():
    assert set(g.DEFAULT_SEVERITIES.values()) == {"warning", "critical"}
    assert (
        len(g.DEFAULT_SEVERITIES) == 20
    )  # issue 9 added change_rate_limit, shared_budget_conflict, platform_minimum_budget, google_operations_quota


# Change windows and blackout dates in the account's time zone --------------------------------

TOKYO = ZoneInfo("Asia/Tokyo")
FRIDAY = 4


def tokyo(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment in November 2026, Tokyo time, as UTC (Nov 20 2026 is a Friday)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=TOKYO).astimezone(UTC)


NIGHT_WINDOW = {"change_window_start": time(22, 0), "change_window_end": time(2, 0)}


@pytest.mark.parametrize(
    ("moment", "allowed"),
    [
        (tokyo(20, 21, 59), False),  # just before the window opens
        (tokyo(20, 22, 0), True),  # the start is inside
        (tokyo(20, 23, 59), True),
        (tokyo(21, 0, 0), True),  # past midnight: the next local (and UTC) day
        (tokyo(21, 1, 59), True),
        (tokyo(21, 2, 0), False),  # the end is outside
    ],
)
def test_a_change_window_runs_across_midnight_in_the_account_time_zone(moment, allowed):
    breach = g.evaluate_change_window(policy(**NIGHT_WINDOW), account="Tokyo", now=moment, time_zone="Asia/Tokyo")

    assert (breach is None) == allowed
    if breach is not None:
        assert breach["code"] == "change_window" and breach["severity"] == "critical"
        assert "Asia/Tokyo" in breach["message"]
        assert breach["observed"] == f"{moment.astimezone(TOKYO):%A %H:%M} Asia/Tokyo"


@pytest.mark.parametrize(
    ("moment", "allowed"),
    [
        (tokyo(20, 23, 0), True),  # Friday night
        (tokyo(21, 1, 0), True),  # Saturday 01:00 still belongs to Friday's window
        (tokyo(21, 23, 0), False),  # Saturday night: not a Friday window
        (tokyo(20, 1, 0), False),  # Friday 01:00 belongs to Thursday's window
    ],
)
def test_the_small_hours_belong_to_the_window_of_the_day_before(moment, allowed):
    rules = policy(change_window_days=[FRIDAY], **NIGHT_WINDOW)

    assert g.in_change_window(rules, moment.astimezone(TOKYO)) == allowed


def test_a_window_of_weekdays_only_allows_the_whole_day():
    rules = policy(change_window_days=[0, 1, 2, 3, 4])

    assert g.in_change_window(rules, tokyo(20, 23, 59).astimezone(TOKYO))
    assert not g.in_change_window(rules, tokyo(21, 0, 0).astimezone(TOKYO))  # Saturday in Tokyo, Friday in UTC


@pytest.mark.parametrize(
    ("moment", "blocked"),
    [
        (tokyo(20, 23, 59), False),  # Friday the 20th in Tokyo
        (tokyo(21, 0, 0), True),  # the 21st in Tokyo, still the 20th in UTC
        (tokyo(21, 8, 59), True),  # the 21st in Tokyo, still the 20th in UTC
        (tokyo(21, 23, 59), True),
        (tokyo(22, 0, 0), False),
    ],
)
def test_blackout_dates_are_dates_in_the_account_time_zone(moment, blocked):
    breach = g.evaluate_blackout_date(
        policy(blackout_dates=["2026-11-21"]), account="Tokyo", now=moment, time_zone="Asia/Tokyo"
    )

    assert (breach is not None) == blocked
    if blocked:
        assert moment.date().isoformat() in {"2026-11-20", "2026-11-21"}
        assert breach["observed"] == "2026-11-21"


# Policies and severities through a preflight ------------------------------------------------


def item(entity, **targets) -> TargetItem:
    return TargetItem(entity=entity, targets={k: (v if k == "status" else D(v)) for k, v in targets.items()})


@pytest.fixture
def world(tenant):
    return sandbox_world(tenant)


def breaches(tenant, items, **kwargs) -> list[dict]:
    kwargs.setdefault("now", NOW)
    return preflight_run(tenant=tenant, items=items, actor=None, **kwargs).payload["breaches"]


def codes(found: list[dict]) -> list[tuple[str, str]]:
    return [(b["code"], b["severity"]) for b in found if b["code"] != "low_confidence_forecast"]


def test_the_connection_policy_wins_over_the_tenant_default(tenant, world):
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=D("10"))
    own = GuardrailPolicy.objects.create(tenant=tenant, connection=world.connection, max_increase_pct=D("60"))
    other = ConnectionFactory(tenant=tenant)

    assert g.policy_for(tenant, world.connection) == own
    assert g.policy_for(tenant, other).max_increase_pct == D("10")
    assert codes(breaches(tenant, [item(world.entity("sandbox-cmp-1"), daily_budget="150.00")])) == []


def test_without_any_policy_the_builtin_defaults_apply(tenant, world):
    builtin = g.policy_for(tenant, world.connection)

    assert builtin.pk is None and builtin.max_increase_pct is None
    assert codes(breaches(tenant, [item(world.entity("sandbox-cmp-1"), daily_budget="900.00")])) == []


@pytest.mark.parametrize(
    ("severities", "expected"),
    [
        ({}, [("max_increase_pct", "critical")]),
        ({"max_increase_pct": "warning"}, [("max_increase_pct", "warning")]),
        ({"max_increase_pct": "off"}, []),
    ],
)
def test_severity_is_configurable_per_rule(tenant, world, severities, expected):
    GuardrailPolicy.objects.create(tenant=tenant, max_increase_pct=D("20"), severities=severities)

    run = preflight_run(
        tenant=tenant, items=[item(world.entity("sandbox-cmp-1"), daily_budget="150.00")], actor=None, now=NOW
    )

    assert codes(run.payload["breaches"]) == expected
    assert run.has_critical == (expected == [("max_increase_pct", "critical")])
    if expected:
        field_change = preflight_entities(run)[0]["sections"]["spend"][0]
        assert [b["code"] for b in field_change["breaches"]] == ["max_increase_pct"]
        assert field_change["breaches"][0]["field"] == "daily_budget"
        assert field_change["breaches"][0]["key"] == "sandbox:campaign:sandbox-cmp-1"


def test_run_level_rules_name_the_account_and_are_sorted_critical_first(tenant, world):
    GuardrailPolicy.objects.create(
        tenant=tenant,
        require_notes=True,
        max_entities_per_deploy=1,
        max_account_daily_spend=D("220.00"),
        max_decrease_pct=D("10"),
    )

    found = breaches(
        tenant,
        [
            item(world.entity("sandbox-cmp-1"), daily_budget="150.00"),
            item(world.entity("sandbox-adset-1-1"), daily_budget="20.00"),
            item(world.entity("sandbox-cmp-2"), daily_budget="100.00"),  # a noop does not count
        ],
    )

    assert codes(found) == [
        ("max_account_daily_spend", "critical"),
        ("max_entities_per_deploy", "critical"),
        ("notes_required", "critical"),
        ("max_decrease_pct", "warning"),
    ]
    account = next(b for b in found if b["code"] == "max_account_daily_spend")
    assert (account["observed"], account["limit"], account["key"]) == ("250.00", "220.00", None)
    assert "Sandbox (Sandbox sbx-acme)" in account["message"]
    assert next(b for b in found if b["code"] == "max_entities_per_deploy")["observed"] == "2"


def test_the_change_window_is_judged_at_the_preflight_time_in_the_connection_zone(tenant, world):
    world.connection.time_zone = "Asia/Tokyo"
    world.connection.save()
    GuardrailPolicy.objects.create(tenant=tenant, **NIGHT_WINDOW, blackout_dates=["2026-11-21"])
    items = [item(world.entity("sandbox-cmp-1"), daily_budget="110.00")]

    inside_friday = breaches(tenant, items, now=tokyo(20, 23, 30))
    after_midnight = breaches(tenant, items, now=tokyo(21, 0, 30))  # UTC: 2026-11-20 15:30
    closed = breaches(tenant, items, now=tokyo(21, 2, 0))

    assert codes(inside_friday) == []
    assert codes(after_midnight) == [("blackout_date", "critical")]
    assert codes(closed) == [("blackout_date", "critical"), ("change_window", "critical")]


def test_noop_plans_are_not_judged_by_run_level_rules(tenant, world):
    GuardrailPolicy.objects.create(tenant=tenant, require_notes=True, blackout_dates=[NOW.date().isoformat()])

    assert breaches(tenant, [item(world.entity("sandbox-cmp-1"), daily_budget="100.00")]) == []


def test_a_recent_change_by_budgetradar_starts_the_cooldown(tenant, world):
    GuardrailPolicy.objects.create(tenant=tenant, cooldown_hours=24)
    entity = world.entity("sandbox-cmp-1")
    ActionFactory(entity=entity, status=ActionStatus.SUCCEEDED, finished_at=NOW - timedelta(hours=23))
    ActionFactory(entity=world.entity("sandbox-cmp-2"), status=ActionStatus.FAILED, finished_at=NOW)

    found = breaches(
        tenant,
        [item(entity, daily_budget="110.00"), item(world.entity("sandbox-cmp-2"), daily_budget="110.00")],
    )

    assert codes(found) == [("cooldown", "critical")]
    assert found[0]["key"] == "sandbox:campaign:sandbox-cmp-1"
    assert found[0]["observed"] == "23.0"


def seed_curve(entity, *, days: int, exponent: float = 0.7, value: str = "40.00") -> None:
    """Daily rows on an exact power law: conversions = 0.5 * spend^exponent."""
    rows = []
    for day in range(days):
        spend = D(50 + 5 * day)
        conversions = D(0.5 * float(spend) ** exponent).quantize(D("0.01"))
        rows.append(
            EntityPerformanceDaily(
                tenant=entity.tenant,
                entity=entity,
                date=NOW.date() - timedelta(days=day + 1),
                spend=spend,
                conversions=conversions,
                revenue=conversions * D(value),
            )
        )
    EntityPerformanceDaily.objects.filter(entity=entity).delete()
    EntityPerformanceDaily.objects.bulk_create(rows)


def test_roas_floor_and_cpa_ceiling_are_judged_on_the_forecast(tenant, world):
    GuardrailPolicy.objects.create(tenant=tenant, roas_floor=D("5.0"), cpa_ceiling=D("9.00"))
    entity = world.entity("sandbox-cmp-1")
    seed_curve(entity, days=30)

    run = preflight_run(tenant=tenant, items=[item(entity, daily_budget="200.00")], actor=None, now=NOW)

    forecast = preflight_entities(run)[0]["forecast"]
    assert forecast["confidence"] == "high"
    found = {b["code"]: b for b in run.payload["breaches"]}
    assert set(found) == {"roas_floor", "cpa_ceiling"}
    roas = D(forecast["revenue_after"]) / D(forecast["spend_after"])
    assert D(found["roas_floor"]["observed"]) == roas.quantize(D("0.0001"))
    assert "high confidence" in found["roas_floor"]["message"]
    assert found["cpa_ceiling"]["severity"] == "warning"


def test_a_healthy_forecast_passes_roas_and_cpa(tenant, world):
    GuardrailPolicy.objects.create(tenant=tenant, roas_floor=D("2.0"), cpa_ceiling=D("40.00"))
    entity = world.entity("sandbox-cmp-1")
    seed_curve(entity, days=30, value="400.00")

    assert codes(breaches(tenant, [item(entity, daily_budget="120.00")])) == []
