"""``manage.py seed_demo [--tenant SLUG]``: a demo tenant on a realistic sandbox account.

Idempotent: a second run creates nothing and changes nothing. It never resets a
password, never overwrites an entity a demo user edited or the guardrail policy an admin
changed, syncs only a connection that was never synced, and proposes recommendations
only when the tenant has none. The demo tenant has four-eyes on and a guardrail policy
("max +50 % per change", critical) that one of the proposals breaches, so the safety
gate's refusals show on the first approval. The ids
match /work/shared/samples, so the sample scenario imports against the demo.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from actions.models import ActionType, Recommendation
from actions.services.recommendations import RecommendationInput, recommendations_create
from budgetradar.errors import DomainError
from budgetradar.models import Membership, Plan, Tenant
from budgetradar.roles import Role
from budgetradar.timefmt import format_time
from platforms.models import Platform, PlatformConnection, PlatformEntity
from platforms.sandbox.models import SandboxAccount, SandboxEntity
from platforms.services import connection_create, connection_sync
from scenarios.models import GuardrailPolicy

ADMIN_URL = "http://127.0.0.1:8000/admin/"
CURRENCY, TIME_ZONE = "EUR", "Europe/Berlin"
EU = ["DE", "FR", "NL", "ES", "IT"]
DACH = ["DE", "AT", "CH"]


@dataclass(frozen=True)
class Curve:
    """Response-curve parameters of a kind of ad set (see platforms.sandbox.simulation)."""

    max_conversions: str
    half_saturation_spend: str
    shape: str
    value_per_conversion: str
    ctr: str
    cpm: str

    def fields(self) -> dict[str, Decimal]:
        return {name: Decimal(value) for name, value in self.__dict__.items()}


CURVES = {
    "brand": Curve("40", "80", "1.1", "55", "0.08", "30"),
    "prospecting": Curve("14", "90", "0.9", "70", "0.012", "8"),
    "retargeting": Curve("12", "35", "1.2", "85", "0.018", "12"),
    "generic": Curve("10", "110", "1.0", "65", "0.04", "22"),
    "awareness": Curve("2", "70", "0.8", "50", "0.004", "5"),
    "shopping": Curve("16", "90", "1.0", "75", "0.025", "14"),
}

# external id, name, status, daily budget, countries. Campaigns deliver through their ad
# sets, so their own response curve (the model default) never matters here.
CAMPAIGNS = [
    ("sandbox-cmp-1001", "EU Search - Brand", "active", "400.00", EU),
    ("sandbox-cmp-1002", "EU Social - Prospecting", "active", "300.00", EU),
    ("sandbox-cmp-1003", "EU Display - Retargeting", "active", "150.00", EU),
    ("sandbox-cmp-1004", "EU Search - Generic", "active", "250.00", EU),
    ("sandbox-cmp-1005", "DACH Video - Awareness", "paused", "120.00", DACH),
    ("sandbox-cmp-1006", "EU Shopping - Campaign budget", "active", "200.00", EU),
]
# external id, campaign, name, daily budget (None: shares the campaign's), bid, curve
AD_SETS = [
    ("sandbox-adset-2001", "sandbox-cmp-1001", "Brand - Exact", "150.00", "0.85", "brand"),
    ("sandbox-adset-2002", "sandbox-cmp-1001", "Brand - Phrase", "120.00", "0.70", "brand"),
    ("sandbox-adset-2003", "sandbox-cmp-1002", "Prospecting - Lookalike 1%", "80.00", "1.50", "prospecting"),
    ("sandbox-adset-2004", "sandbox-cmp-1002", "Prospecting - Lookalike 3%", "70.00", "1.30", "prospecting"),
    ("sandbox-adset-2005", "sandbox-cmp-1002", "Prospecting - Interests: Running", "60.00", "1.10", "prospecting"),
    ("sandbox-adset-2006", "sandbox-cmp-1002", "Prospecting - Broad", "50.00", "0.90", "prospecting"),
    ("sandbox-adset-2007", "sandbox-cmp-1003", "Retargeting - Cart abandoners 7d", "60.00", "2.10", "retargeting"),
    ("sandbox-adset-2008", "sandbox-cmp-1003", "Retargeting - Product viewers 30d", "50.00", "1.60", "retargeting"),
    ("sandbox-adset-2009", "sandbox-cmp-1003", "Retargeting - Past purchasers 180d", "40.00", "1.20", "retargeting"),
    ("sandbox-adset-2010", "sandbox-cmp-1004", "Generic - Running shoes", "90.00", "1.40", "generic"),
    ("sandbox-adset-2011", "sandbox-cmp-1004", "Generic - Trail shoes", "70.00", "1.20", "generic"),
    ("sandbox-adset-2012", "sandbox-cmp-1004", "Generic - Competitor terms", "50.00", "1.80", "generic"),
    ("sandbox-adset-2013", "sandbox-cmp-1005", "Awareness - 18-34", "60.00", "0.40", "awareness"),
    ("sandbox-adset-2014", "sandbox-cmp-1005", "Awareness - 35-54", "60.00", "0.35", "awareness"),
    ("sandbox-adset-2015", "sandbox-cmp-1006", "Shopping - Best sellers", None, "0.95", "shopping"),
    ("sandbox-adset-2016", "sandbox-cmp-1006", "Shopping - New arrivals", None, "0.80", "shopping"),
]
AD_FORMATS = ["Static image", "Short video"]

# external id, action type, params, rationale
RECOMMENDATIONS = [
    (
        "sandbox-cmp-1001",
        ActionType.ADJUST_BUDGET,
        {"new_budget": "460.00"},
        "Brand search spends its full budget most days at a marginal ROAS of 4.1 (target 3.0).",
    ),
    (
        "sandbox-adset-2003",
        ActionType.ADJUST_BUDGET,
        {"new_budget": "95.50"},
        "Lookalike 1% is still far from saturation: +19 % budget forecasts +14 % conversions.",
    ),
    (
        "sandbox-adset-2003",
        ActionType.ADJUST_BID,
        {"new_bid": "1.80"},
        "The bid cap loses auctions the budget could afford; raise it to 1.80.",
    ),
    (
        "sandbox-cmp-1003",
        ActionType.PAUSE_CAMPAIGN,
        {},
        "Display retargeting CPA has been 38 % above target for 14 days.",
    ),
    (
        "sandbox-cmp-1005",
        ActionType.RESUME_CAMPAIGN,
        {},
        "The DACH awareness flight starts this week.",
    ),
    (
        "sandbox-adset-2010",
        ActionType.ADJUST_BUDGET,
        {"new_budget": "200.00"},
        "A competitor left the auction: double the running-shoes budget while CPCs are low.",
    ),
]
# Proposed by the demo approver, so four-eyes shows its skip reason when they approve it.
APPROVER_RECOMMENDATIONS = [
    (
        "sandbox-adset-2007",
        ActionType.ADJUST_BID,
        {"new_bid": "2.30"},
        "Cart abandoners convert at twice the account average; bid a little higher.",
    ),
]
# The demo's guardrail policy: "double the budget" above breaches the critical +50 % rule.
DEMO_GUARDRAILS = {
    "name": "Demo guardrails",
    "max_increase_pct": Decimal("50"),
    "max_decrease_pct": Decimal("50"),
    "max_daily_budget": Decimal("1000.00"),
}


class Command(BaseCommand):
    help = "Create (idempotently) a demo tenant with users, a synced sandbox account and recommendations."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", default="demo", help="Slug of the demo tenant (default: demo).")

    def handle(self, *args, tenant: str, **options) -> None:
        slug = tenant
        with transaction.atomic():
            demo = self._tenant(slug)
            users = {role: self._member(demo, role) for role in Role}
            self._superuser()
            connection = self._sandbox(demo)
        # Outside the transaction: the sandbox is a platform, its requests commit on their own.
        if connection.last_synced_at is None:
            try:
                result = connection_sync(connection=connection, days=60)
            except DomainError as exc:
                raise CommandError(f"The demo was created but its first sync failed: {exc.message}") from None
            self.stdout.write(f"Synced {connection.name}: {result.message}")
        else:
            self.stdout.write(
                f"{connection.name} was synced at {format_time(connection.last_synced_at, connection.time_zone)}; "
                "run manage.py sync_platforms to refresh."
            )
        self._guardrails(demo)
        self._recommendations(demo, connection, users[Role.OPERATOR], users[Role.APPROVER])
        self.stdout.write(self.style.SUCCESS(f"Demo tenant '{slug}' is ready: {ADMIN_URL}"))
        self.stdout.write(f"Users: admin (superuser), {', '.join(f'{slug}-{role}' for role in Role)}")

    # Tenant and people -------------------------------------------------------------------

    def _tenant(self, slug: str) -> Tenant:
        demo, created = Tenant.objects.get_or_create(
            slug=slug,
            defaults={
                "name": f"{slug.title()} Shoes GmbH",
                "plan": Plan.objects.get(code=Plan.Code.PRO),
                "currency": CURRENCY,
                "time_zone": TIME_ZONE,
                "four_eyes_required": True,
            },
        )
        self.stdout.write(f"Tenant '{slug}' {'created on the Pro plan' if created else 'exists'}.")
        return demo

    def _member(self, demo: Tenant, role: Role):
        username = f"{demo.slug}-{role}"
        user = get_user_model().objects.filter(username=username).first()
        if user is not None:
            self.stdout.write(f"User {username} exists (password unchanged).")
            return user
        password = secrets.token_urlsafe(12)
        user = get_user_model().objects.create_user(
            username=username, email=f"{username}@example.com", password=password, is_staff=True
        )
        Membership.objects.create(user=user, tenant=demo, role=role)
        self.stdout.write(f"User {username} ({role}) created, password: {password}  (demo only, shown once)")
        return user

    def _superuser(self) -> None:
        model = get_user_model()
        if model.objects.filter(username="admin").exists():
            self.stdout.write("Superuser admin exists (password unchanged).")
            return
        password = secrets.token_urlsafe(12)
        model.objects.create_superuser(username="admin", email="admin@example.com", password=password)
        self.stdout.write(f"Superuser admin created, password: {password}  (demo only, shown once)")

    # The sandbox account -----------------------------------------------------------------

    def _sandbox(self, demo: Tenant) -> PlatformConnection:
        account_id = f"{demo.slug}-sandbox-eu"
        account, created = SandboxAccount.objects.get_or_create(
            account_id=account_id,
            defaults={"name": f"{demo.name} EU", "currency": CURRENCY, "time_zone": TIME_ZONE},
        )
        added = self._entities(account)
        self.stdout.write(f"Sandbox account {account_id} {'created' if created else 'exists'}; {added} entities added.")
        connection = PlatformConnection.objects.filter(
            tenant=demo, platform=Platform.SANDBOX, account_id=account_id
        ).first()
        if connection is not None:
            return connection
        # A new connection gets a new token; the account accepts only that one from now on.
        token = secrets.token_urlsafe(24)
        account.set_access_token(token)
        account.save(update_fields=["access_token_digest"])
        connection = connection_create(
            tenant=demo,
            actor=None,
            name="EU Sandbox",
            platform=Platform.SANDBOX,
            account_id=account_id,
            currency=CURRENCY,
            time_zone=TIME_ZONE,
            credentials={"access_token": token},
        )
        self.stdout.write(f"Connection '{connection.name}' created (credentials encrypted).")
        return connection

    def _entities(self, account: SandboxAccount) -> int:
        """Create the catalog's missing entities; existing ones are left exactly as they are."""
        existing = {e.external_id: e for e in SandboxEntity.objects.filter(account=account)}
        before = len(existing)
        countries = {}
        for external_id, name, status, budget, markets in CAMPAIGNS:
            countries[external_id] = markets
            self._ensure(
                existing,
                account,
                external_id,
                "campaign",
                None,
                name=name,
                status=status,
                daily_budget=Decimal(budget),
            )
        ad_number = 3001
        for external_id, campaign_id, name, budget, bid, curve in AD_SETS:
            self._ensure(
                existing,
                account,
                external_id,
                "ad_set",
                campaign_id,
                name=name,
                daily_budget=Decimal(budget) if budget else None,
                bid=Decimal(bid),
                targeting={"countries": countries[campaign_id], "audience": name.split(" - ", 1)[1]},
                schedule={"days": "mon-sun", "hours": "00:00-24:00"},
                **CURVES[curve].fields(),
            )
            for ad_format in AD_FORMATS:
                self._ensure(
                    existing, account, f"sandbox-ad-{ad_number}", "ad", external_id, name=f"{name} / {ad_format}"
                )
                ad_number += 1
        return len(existing) - before

    def _ensure(self, existing: dict, account, external_id: str, entity_type: str, parent_id, **fields) -> None:
        if external_id in existing:
            return
        parent = existing[parent_id] if parent_id else None
        existing[external_id] = SandboxEntity.objects.create(
            account=account, external_id=external_id, entity_type=entity_type, parent=parent, **fields
        )

    # Guardrails and recommendations ----------------------------------------------------------

    def _guardrails(self, demo: Tenant) -> None:
        """The tenant's default guardrail policy, created once and never changed afterwards."""
        policy, created = GuardrailPolicy.objects.get_or_create(tenant=demo, connection=None, defaults=DEMO_GUARDRAILS)
        self.stdout.write(f"Guardrail policy '{policy.name}' {'created' if created else 'exists'}.")

    def _recommendations(self, demo: Tenant, connection: PlatformConnection, operator, approver) -> None:
        if Recommendation.objects.filter(tenant=demo).exists():
            self.stdout.write("Recommendations exist; none added.")
            return
        ids = dict(PlatformEntity.objects.filter(connection=connection).values_list("external_id", "pk"))
        created = []
        for proposer, catalog in ((operator, RECOMMENDATIONS), (approver, APPROVER_RECOMMENDATIONS)):
            items = [
                RecommendationInput(
                    entity_id=ids[external_id],
                    action_type=action_type,
                    params=params,
                    rationale=rationale,
                    source="demo-optimizer" if proposer == operator else "manual",
                )
                for external_id, action_type, params, rationale in catalog
                if external_id in ids  # a demo user may have deleted it on the platform
            ]
            created += recommendations_create(tenant=demo, actor=proposer, items=items)
        self.stdout.write(f"{len(created)} recommendations proposed (actions pending approval).")
