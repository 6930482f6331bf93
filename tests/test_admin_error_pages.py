"""403 and 404 pages in the admin's style that say why and lead back; the favicon."""

from __future__ import annotations

from django.urls import reverse

from tests import factories


def test_a_viewer_opening_an_approve_url_is_told_which_role_it_needs(client, viewer, campaign):
    action = factories.ActionFactory(entity=campaign)
    client.force_login(viewer)
    back = reverse("admin:actions_action_change", args=[action.pk])

    approve = reverse("admin:actions_action_approve", args=[action.pk])
    response = client.get(approve, HTTP_REFERER=f"http://testserver{back}")

    assert response.status_code == 403
    html = response.content.decode()
    assert "<h1>You may not open this page</h1>" in html
    assert "You may not approve actions: it needs the approver role and your role is viewer." in html
    assert f'href="http://testserver{back}" id="error-back"' in html
    assert 'id="site-name"' in html  # the admin's header, not a bare "403 Forbidden"


def test_a_missing_object_is_a_styled_404_that_leads_home(client, viewer):
    client.force_login(viewer)
    response = client.get(reverse("admin:actions_action_change", args=[999999]), HTTP_REFERER="https://evil.example/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "<h1>Not found</h1>" in html
    assert "No action with id 999999." in html
    assert f'href="{reverse("admin:index")}" id="error-back"' in html  # never back to another site


def test_an_unknown_address_is_a_styled_404(client, viewer):
    client.force_login(viewer)
    response = client.get("/admin/no-such-page/here/")
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in response.content.decode()


def test_api_errors_stay_json(client, viewer):
    client.force_login(viewer)
    response = client.get("/api/no-such-endpoint/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


def test_admin_pages_link_a_favicon_and_the_ico_address_leads_to_it(client, viewer):
    client.force_login(viewer)
    html = client.get(reverse("admin:index")).content.decode()
    assert '<link rel="icon" href="/static/budgetradar/favicon.svg" type="image/svg+xml">' in html
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/budgetradar/favicon.svg"
