"""Admin pages of observability: alerts open first with filters, channels with a test button."""

from __future__ import annotations

import pytest
from django.test import Client

from observability.models import AlertKind, AlertStatus, Channel, ChannelKind, Delivery, DeliveryEvent, Severity
from observability.services.alerts import Condition, alert_raise

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def raise_(tenant, key, severity) -> None:
    alert_raise(Condition(AlertKind.CIRCUIT_OPEN, severity, key, f"Alert {key}", "Do something.", tenant.pk))


def test_alerts_page_lists_open_first_and_filters(tenant, other_tenant, viewer, django_assert_max_num_queries):
    raise_(tenant, "warn", Severity.WARNING)
    raise_(tenant, "crit", Severity.CRITICAL)
    raise_(other_tenant, "theirs", Severity.CRITICAL)
    client = login(viewer)
    with django_assert_max_num_queries(12):
        page = client.get("/admin/observability/alert/").content.decode()
    assert page.index("Alert crit") < page.index("Alert warn") and "Alert theirs" not in page
    filtered = client.get("/admin/observability/alert/?severity__exact=warning").content.decode()
    assert "Alert warn" in filtered and "Alert crit" not in filtered


def test_acknowledge_button_is_a_post_that_calls_the_service(tenant, operator):
    raise_(tenant, "crit", Severity.CRITICAL)
    from observability.models import Alert

    alert = Alert.objects.get()
    client = login(operator)
    assert 'id="tool-acknowledge"' in client.get(f"/admin/observability/alert/{alert.pk}/change/").content.decode()
    assert client.get(f"/admin/observability/alert/{alert.pk}/acknowledge/").status_code == 405
    client.post(f"/admin/observability/alert/{alert.pk}/acknowledge/")
    alert.refresh_from_db()
    assert alert.status == AlertStatus.ACKNOWLEDGED and alert.acknowledged_by == operator


def test_channel_form_keeps_secrets_write_only_and_sends_a_test(tenant, tenant_admin):
    client = login(tenant_admin)
    response = client.post(
        "/admin/observability/channel/add/",
        {
            "name": "Ops hook",
            "kind": ChannelKind.WEBHOOK,
            "severities": ["critical"],
            "is_active": "on",
            "url": "https://hooks.example.com/in",
            "secret": "a-very-long-signing-secret",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    channel = Channel.objects.get()
    assert channel.tenant == tenant and channel.config["secret"] == "a-very-long-signing-secret"
    page = client.get(f"/admin/observability/channel/{channel.pk}/change/").content.decode()
    assert "a-very-long-signing-secret" not in page and 'id="tool-test"' in page
    client.post(f"/admin/observability/channel/{channel.pk}/test/")
    assert Delivery.objects.get().event == DeliveryEvent.TEST
