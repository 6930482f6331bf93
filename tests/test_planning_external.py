"""External plans: items, Robyn allocator CSV and Meridian optimized spend, phased per day."""

from __future__ import annotations

from decimal import Decimal

import pytest

from budgetradar.errors import ValidationFailed
from planning.services.external import external_proposals
from tests import factories

ROBYN = (
    '"","solID","dep_var_type","channels","date_min","date_max","periods","initSpendUnit","optmSpendUnit"\n'
    '"1","3_141_5","conversion","search","2025-01-06","2025-03-03","8 weeks","1400","2100"\n'
    '"2","3_141_5","conversion","social","2025-01-06","2025-03-03","8 weeks","700","350"\n'
)
MERIDIAN = (
    "channel,spend,pct_of_spend,start_date,end_date\n"
    "search,8400,0.6,2025-01-06,2025-01-27\n"
    "social,5600,0.4,2025-01-06,2025-01-27\n"
)


@pytest.fixture
def entities(tenant):
    connection = factories.ConnectionFactory(tenant=tenant)
    a = factories.EntityFactory(connection=connection, external_id="s-1", daily_budget=Decimal("100.00"))
    b = factories.EntityFactory(connection=connection, external_id="s-2", daily_budget=Decimal("300.00"))
    c = factories.EntityFactory(connection=connection, external_id="so-1", daily_budget=Decimal("50.00"))
    return connection, a, b, c


MAPPING = {"search": ["s-1", "s-2"], "social": ["so-1"]}


def budgets(proposals):
    return {p["entity_id"]: Decimal(p["daily_budget"]) for p in proposals}


def test_robyn_weekly_optimised_spend_is_phased_per_day_and_split_by_budget(entities):
    connection, a, b, c = entities
    result = budgets(
        external_proposals(connection=connection, source="robyn", payload={"csv": ROBYN, "mapping": MAPPING})
    )
    # search: 2100 a week = 300 a day, split 1:3 by today's budgets; social: 350 a week = 50 a day.
    assert result == {a.pk: Decimal("75.00"), b.pk: Decimal("225.00"), c.pk: Decimal("50.00")}


def test_meridian_period_total_is_phased_over_the_period_days(entities):
    connection, a, b, c = entities
    result = budgets(
        external_proposals(connection=connection, source="meridian", payload={"csv": MERIDIAN, "mapping": MAPPING})
    )
    # 2025-01-06 .. 2025-01-27 is the start of the last weekly period: 21 + 7 = 28 days.
    assert result == {a.pk: Decimal("75.00"), b.pk: Decimal("225.00"), c.pk: Decimal("200.00")}


def test_an_unmapped_channel_is_refused_by_name(entities):
    connection, *_ = entities
    with pytest.raises(ValidationFailed) as refused:
        external_proposals(
            connection=connection, source="robyn", payload={"csv": ROBYN, "mapping": {"search": ["s-1"]}}
        )
    assert refused.value.details[0]["channel"] == "social"


def test_items_name_the_entity_and_field(entities):
    connection, a, *_ = entities
    with pytest.raises(ValidationFailed) as refused:
        external_proposals(
            connection=connection, source="items", payload={"items": [{"entity": a.pk, "daily_budget": "abc"}]}
        )
    assert refused.value.details[0] == {
        "field": "items[0].daily_budget",
        "message": "items[0].daily_budget 'abc' is not a number.",
        "index": 0,
        "entity": a.pk,
    }
