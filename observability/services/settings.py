"""A tenant's watch and alert settings, with the defaults when it has none."""

from __future__ import annotations

from django.utils import timezone

from budgetradar.audit import audited_save
from budgetradar.entitlements import Feature, entitlement_check_feature
from budgetradar.errors import ValidationFailed
from budgetradar.models import Tenant
from budgetradar.tenancy import require_perm, tenant_of
from observability.models import ObservabilitySettings, WatchMode


def settings_for(tenant: Tenant) -> ObservabilitySettings:
    """The tenant's saved settings, or an unsaved row holding the defaults."""
    try:
        return tenant.observability_settings
    except ObservabilitySettings.DoesNotExist:
        return ObservabilitySettings(tenant=tenant)


def settings_for_tenants(tenant_ids: set[int]) -> dict[int, ObservabilitySettings]:
    """Settings of many tenants in one query; defaults for those without a row."""
    saved = {s.tenant_id: s for s in ObservabilitySettings.objects.filter(tenant_id__in=tenant_ids)}
    return {pk: saved.get(pk) or ObservabilitySettings(tenant_id=pk) for pk in tenant_ids}


def observability_settings_save(*, row: ObservabilitySettings, actor) -> ObservabilitySettings:
    """Save a tenant's watch settings; autopilot needs an approver of the tenant who may
    deploy live, and their consent is timestamped when they are (re)named.

    Raises ``ValidationFailed`` naming the field; nothing is written then.
    """
    require_perm(actor, "observability.change_observabilitysettings", doing="change watch and alert settings")
    person = row.autopilot_actor
    if row.watch_mode == WatchMode.AUTOPILOT:
        entitlement_check_feature(tenant=row.tenant, feature=Feature.AUTOPILOT)
        if person is None:
            raise ValidationFailed(
                "Autopilot deploys restoring scenarios as an approver who consents: choose one.",
                details={"autopilot_actor": "required for autopilot"},
            )
        if tenant_of(person) != row.tenant or not person.has_perm("scenarios.deploy_live"):
            raise ValidationFailed(
                f"{person.username} may not deploy live in {row.tenant.name}; "
                "choose an approver or admin of the tenant.",
                details={"autopilot_actor": "needs the deploy-live permission in this tenant"},
            )
    previous = ObservabilitySettings.objects.filter(pk=row.pk).values_list("autopilot_actor_id", flat=True).first()
    if person is not None and (row.pk is None or previous != person.pk or row.autopilot_consent_at is None):
        row.autopilot_consent_at = timezone.now()
    if person is None:
        row.autopilot_consent_at = None
    audited_save(row, actor=actor, reason=f"watch mode {row.watch_mode}")
    return row
