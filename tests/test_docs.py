"""The README points only to what the repository contains, and its samples import."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.management import call_command

from budgetradar.models import Tenant
from scenarios.services.imports import scenario_import
from tests import factories

ROOT = Path(__file__).resolve().parent.parent


def _paths_in_readme() -> set[str]:
    text = (ROOT / "README.md").read_text()
    links = set(re.findall(r"\]\(([^)#]+)\)", text))
    mentioned = set(re.findall(r"`((?:docs|bench|templates)/[\w./-]+\.(?:md|json|csv|py|html))`", text))
    return {p for p in links | mentioned if not p.startswith("http")}


def test_every_file_the_readme_names_is_in_the_repository():
    paths = _paths_in_readme()
    assert "docs/DESIGN.md" in paths and "docs/samples/proposed_push_bundle.json" in paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"README names files the repository does not have: {missing}"


@pytest.mark.django_db
@pytest.mark.parametrize("name, fmt", [("proposed_push_bundle.json", "bundle"), ("scenario.csv", "csv")])
def test_the_samples_import_into_the_demo(capsys, name, fmt):
    call_command("seed_demo")
    capsys.readouterr()
    tenant = Tenant.objects.get(slug="demo")
    operator = factories.member(tenant, username="docs-operator")
    scenario = scenario_import(
        tenant=tenant, actor=operator, data=(ROOT / "docs" / "samples" / name).read_bytes(), format=fmt
    )
    assert scenario.items.count() == 3
