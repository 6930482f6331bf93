"""``__in_array``: the rows of ``__in``, with the values as one parameter on PostgreSQL."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from actions.models import Action
from tests.factories import ActionFactory


def test_in_array_matches_the_rows_in_matches(campaign):
    actions = [ActionFactory(entity=campaign) for _ in range(3)]
    ids = [actions[0].pk, actions[2].pk, actions[2].pk, None, 10**9]
    expected = set(Action.objects.filter(pk__in=ids).values_list("pk", flat=True))
    assert set(Action.objects.filter(pk__in_array=ids).values_list("pk", flat=True)) == expected
    assert set(Action.objects.exclude(pk__in_array=ids).values_list("pk", flat=True)) == {actions[1].pk}
    assert Action.objects.filter(entity_id__in_array=[campaign.pk]).count() == 3
    assert Action.objects.filter(entity__in_array=[campaign]).count() == 3
    assert Action.objects.filter(status__in_array=["pending_approval", "approved"]).count() == 3
    assert not Action.objects.filter(pk__in_array=[]).exists()


def test_in_array_sends_one_parameter_on_postgresql(campaign):
    action = ActionFactory(entity=campaign)
    ids = [action.pk, *range(10**9, 10**9 + 999)]
    with CaptureQueriesContext(connection) as queries:
        assert list(Action.objects.filter(pk__in_array=ids).values_list("pk", flat=True)) == [action.pk]
    sql = queries.captured_queries[0]["sql"]
    if connection.vendor == "postgresql":
        assert "= ANY(" in sql and sql.count(str(10**9 + 998)) == 1
    else:
        assert " IN (" in sql
