"""The read API: tenant-scoped, paginated, filterable, never leaking credentials."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import AdSetFactory, ConnectionFactory, EntityFactory

SECRET = "meta-secret-EAAB-123"


@pytest.fixture
def api(viewer):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer).key}")
    return client


def test_anonymous_requests_are_refused(db):
    response = APIClient().get("/api/connections/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_connections_list_only_the_tenants_own_and_never_credentials(api, tenant, other_tenant):
    mine = ConnectionFactory(tenant=tenant, credentials={"access_token": SECRET})
    ConnectionFactory(tenant=other_tenant, name="Theirs")
    response = api.get("/api/connections/")
    assert response.status_code == 200
    body = response.json()
    assert [c["id"] for c in body["results"]] == [mine.pk]
    assert body["count"] == 1 and "next" in body
    assert SECRET not in response.content.decode()
    assert "credentials" not in body["results"][0]


def test_another_tenants_connection_and_entity_are_404(api, other_tenant):
    theirs = ConnectionFactory(tenant=other_tenant)
    entity = EntityFactory(connection=theirs)
    assert api.get(f"/api/connections/{theirs.pk}/").status_code == 404
    assert api.get(f"/api/entities/{entity.pk}/").status_code == 404
    assert api.get(f"/api/entities/?connection={theirs.pk}").status_code == 400


def test_entities_filter_by_connection_type_and_search(api, tenant):
    first, second = ConnectionFactory(tenant=tenant), ConnectionFactory(tenant=tenant)
    brand = EntityFactory(connection=first, name="EU Search - Brand", external_id="cmp-1")
    EntityFactory(connection=second, name="US Search - Brand", external_id="cmp-2")
    adset = AdSetFactory(connection=first, parent=brand, name="Lookalike 1%", external_id="as-9")

    def ids(query: str) -> list[int]:
        return [e["id"] for e in api.get(f"/api/entities/?{query}").json()["results"]]

    assert sorted(ids(f"connection={first.pk}")) == sorted([brand.pk, adset.pk])
    assert ids("entity_type=ad_set") == [adset.pk]
    assert ids("search=eu search") == [brand.pk]
    assert ids("search=as-9") == [adset.pk]
    detail = api.get(f"/api/entities/{adset.pk}/").json()
    assert detail["parent_external_id"] == "cmp-1"
    assert detail["currency"] == "EUR" and detail["platform"] == "sandbox"


def test_entity_list_is_paginated(api, tenant):
    conn = ConnectionFactory(tenant=tenant)
    EntityFactory.create_batch(60, connection=conn)
    page = api.get("/api/entities/").json()
    assert page["count"] == 60 and len(page["results"]) == 50 and page["next"]
    assert len(api.get("/api/entities/?page_size=10").json()["results"]) == 10


def test_entity_list_query_count_does_not_grow_with_rows(api, tenant):
    conn = ConnectionFactory(tenant=tenant)
    parent = EntityFactory(connection=conn)
    AdSetFactory.create_batch(5, connection=conn, parent=parent)
    with CaptureQueriesContext(connection) as few:
        assert api.get("/api/entities/").status_code == 200
    AdSetFactory.create_batch(40, connection=conn, parent=parent)
    with CaptureQueriesContext(connection) as many:
        assert api.get("/api/entities/").status_code == 200
    assert len(many) == len(few)
