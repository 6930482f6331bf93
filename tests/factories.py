"""factory_boy factories for the whole suite."""

from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from actions.models import Action, ActionStatus, ActionType, Recommendation
from budgetradar.models import Membership, Plan, Tenant
from budgetradar.plans import plan_named
from budgetradar.roles import Role
from platforms.models import EntityPerformanceDaily, Platform, PlatformConnection, PlatformEntity
from platforms.sandbox.models import SandboxAccount, SandboxEntity


def plan(code: str = "pro") -> Plan:
    return plan_named(code)


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")
    currency = "EUR"
    time_zone = "Europe/Berlin"
    plan = factory.LazyFunction(lambda: plan("pro"))


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", "pw")

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    tenant = factory.SubFactory(TenantFactory)
    role = Role.APPROVER


def member(tenant: Tenant, role: str = Role.APPROVER, username: str | None = None):
    """A staff user with ``role`` in ``tenant``."""
    kwargs = {"username": username} if username else {}
    return MembershipFactory(tenant=tenant, role=role, user=UserFactory(**kwargs)).user


class ConnectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlatformConnection

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Account {n}")
    platform = Platform.SANDBOX
    account_id = factory.Sequence(lambda n: f"sandbox-{n}")
    currency = "EUR"
    time_zone = "Europe/Berlin"
    credentials = factory.LazyFunction(lambda: {"access_token": "secret-token-value"})


class EntityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlatformEntity

    connection = factory.SubFactory(ConnectionFactory)
    tenant = factory.SelfAttribute("connection.tenant")
    entity_type = "campaign"
    external_id = factory.Sequence(lambda n: f"cmp-{n}")
    name = factory.Sequence(lambda n: f"Campaign {n}")
    status = "active"
    daily_budget = Decimal("100.00")


class AdSetFactory(EntityFactory):
    entity_type = "ad_set"
    external_id = factory.Sequence(lambda n: f"adset-{n}")
    name = factory.Sequence(lambda n: f"Ad set {n}")
    parent = factory.SubFactory(EntityFactory, connection=factory.SelfAttribute("..connection"))
    bid = Decimal("1.00")


class PerformanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EntityPerformanceDaily

    entity = factory.SubFactory(EntityFactory)
    tenant = factory.SelfAttribute("entity.tenant")
    date = factory.Faker("date_this_year")
    spend = Decimal("100.00")
    impressions = 10000
    clicks = 300
    conversions = Decimal("12")
    revenue = Decimal("480.00")


class RecommendationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Recommendation

    entity = factory.SubFactory(EntityFactory)
    tenant = factory.SelfAttribute("entity.tenant")
    action_type = ActionType.ADJUST_BUDGET
    params = factory.LazyFunction(lambda: {"new_budget": "120.00", "budget_type": "daily"})
    rationale = "Marginal ROAS is above target."


class ActionFactory(factory.django.DjangoModelFactory):
    """An action in any state (``status=...`` writes the protected field directly)."""

    class Meta:
        model = Action

    entity = factory.SubFactory(EntityFactory)
    tenant = factory.SelfAttribute("entity.tenant")
    connection = factory.SelfAttribute("entity.connection")
    platform = factory.SelfAttribute("entity.connection.platform")
    action_type = ActionType.ADJUST_BUDGET
    params = factory.LazyFunction(lambda: {"new_budget": "120.00", "budget_type": "daily"})
    recommendation = factory.SubFactory(
        RecommendationFactory,
        entity=factory.SelfAttribute("..entity"),
        params=factory.SelfAttribute("..params"),
        action_type=factory.SelfAttribute("..action_type"),
    )

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        status = kwargs.pop("status", ActionStatus.PENDING_APPROVAL)
        if status == ActionStatus.APPROVED:
            kwargs.setdefault("next_attempt_at", timezone.now())  # due, as "execute on approval" makes it
        obj = model_class(*args, **kwargs)
        obj.save()
        if status != ActionStatus.PENDING_APPROVAL:
            # An executing action is always held by a lease (a check constraint says so).
            held = {"lease_owner": "worker:test"} if status == ActionStatus.EXECUTING and not obj.lease_owner else {}
            model_class.objects.filter(pk=obj.pk).update(status=status, **held)
            obj = model_class.objects.get(pk=obj.pk)
        return obj


# Sandbox platform ----------------------------------------------------------------------

SANDBOX_TOKEN = "sandbox-test-token"


def _digest(token: str) -> str:
    from platforms.sandbox.models import token_digest

    return token_digest(token)


class SandboxAccountFactory(factory.django.DjangoModelFactory):
    """A sandbox account accepting ``SANDBOX_TOKEN`` (``token=...`` to choose another)."""

    class Meta:
        model = "sandbox.SandboxAccount"
        django_get_or_create = ("account_id",)

    class Params:
        token = SANDBOX_TOKEN

    account_id = factory.Sequence(lambda n: f"sbx-account-{n}")
    name = factory.Sequence(lambda n: f"Sandbox account {n}")
    currency = "EUR"
    time_zone = "Europe/Berlin"
    access_token_digest = factory.LazyAttribute(lambda o: _digest(o.token))


class SandboxCampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "sandbox.SandboxEntity"

    account = factory.SubFactory(SandboxAccountFactory)
    entity_type = "campaign"
    external_id = factory.Sequence(lambda n: f"sandbox-cmp-{5000 + n}")
    name = factory.Sequence(lambda n: f"Sandbox campaign {n}")
    status = "active"
    daily_budget = Decimal("300.00")


class SandboxAdSetFactory(SandboxCampaignFactory):
    entity_type = "ad_set"
    external_id = factory.Sequence(lambda n: f"sandbox-adset-{6000 + n}")
    name = factory.Sequence(lambda n: f"Sandbox ad set {n}")
    parent = factory.SubFactory(SandboxCampaignFactory, account=factory.SelfAttribute("..account"))
    daily_budget = Decimal("80.00")
    bid = Decimal("1.50")
    targeting = factory.LazyFunction(lambda: {"countries": ["DE"]})
    schedule = factory.LazyFunction(lambda: {"days": "mon-sun"})


class SandboxAdFactory(SandboxCampaignFactory):
    entity_type = "ad"
    external_id = factory.Sequence(lambda n: f"sandbox-ad-{7000 + n}")
    name = factory.Sequence(lambda n: f"Sandbox ad {n}")
    parent = factory.SubFactory(SandboxAdSetFactory, account=factory.SelfAttribute("..account"))
    daily_budget = None


class SandboxFaultFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "sandbox.SandboxFault"

    account = factory.SubFactory(SandboxAccountFactory)
    kind = "rate_limit"
    scope = "write"
    remaining = 1


def sandbox_connection(tenant: Tenant, account, *, token: str = SANDBOX_TOKEN, **kwargs) -> PlatformConnection:
    """A sandbox connection of ``tenant`` to ``account`` presenting ``token``."""
    fields = {
        "platform": Platform.SANDBOX,
        "account_id": account.account_id,
        "currency": account.currency,
        "time_zone": account.time_zone,
        "credentials": {"access_token": token},
    }
    return ConnectionFactory(tenant=tenant, **{**fields, **kwargs})


def on_sandbox(entity: PlatformEntity):
    """The platform twin of a mirrored entity on its connection's sandbox account (same
    values), so a read of the platform finds what the mirror says."""
    account = SandboxAccount.objects.get(account_id=entity.connection.account_id)
    parent = None
    if entity.parent_id is not None:
        parent = SandboxEntity.objects.get(account=account, external_id=entity.parent.external_id)
    return SandboxEntity.objects.create(
        account=account,
        entity_type=entity.entity_type,
        external_id=entity.external_id,
        parent=parent,
        name=entity.name,
        status=entity.status,
        daily_budget=entity.daily_budget,
        lifetime_budget=entity.lifetime_budget,
        bid=entity.bid,
    )
