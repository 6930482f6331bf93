"""Building blocks for engine tests: a synced sandbox account and a worker run."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from actions.models import Action, ActionJob, JobStatus
from actions.services.dispatch import actions_dispatch
from actions.services.engine import JobReport, job_process
from actions.services.lifecycle import action_approve
from actions.services.recommendations import RecommendationInput, recommendations_create
from budgetradar.outbox import outbox_drain
from platforms.base import no_throttle
from platforms.models import PlatformConnection, PlatformEntity
from platforms.registry import get_executor
from platforms.retry import RetryPolicy
from platforms.sandbox.models import SandboxAccount, SandboxEntity, SandboxFault, SandboxRequest
from platforms.sync import sync_connection
from tests.factories import SandboxAccountFactory, SandboxAdSetFactory, SandboxCampaignFactory, sandbox_connection

FAST = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=5.0)


@dataclass
class World:
    account: SandboxAccount
    connection: PlatformConnection

    def entity(self, external_id: str) -> PlatformEntity:
        return PlatformEntity.objects.select_related("connection", "parent").get(
            connection=self.connection, external_id=external_id
        )

    def platform(self, external_id: str) -> SandboxEntity:
        return SandboxEntity.objects.get(account=self.account, external_id=external_id)

    def fault(self, kind: str, **kwargs) -> SandboxFault:
        return SandboxFault.objects.create(account=self.account, kind=kind, **kwargs)

    def applied_count(self, external_id: str) -> int:
        """How many write requests naming the entity really changed the platform."""
        rows = SandboxRequest.objects.filter(
            account=self.account, method="apply", validate_only=False, applied_count__gt=0
        )
        return sum(1 for r in rows if external_id in r.entity_ids)

    def apply_requests(self) -> int:
        return SandboxRequest.objects.filter(account=self.account, method="apply").count()

    def sync(self) -> None:
        sync_connection(connection=self.connection, executor=get_executor(self.connection), days=1)


def sandbox_world(tenant, *, campaigns: int = 2, ad_sets_per_campaign: int = 2) -> World:
    """An account with campaigns ``sandbox-cmp-1..N`` and ad sets ``sandbox-adset-<c>-<i>``, mirrored."""
    account = SandboxAccountFactory(account_id=f"sbx-{tenant.slug}")
    for c in range(1, campaigns + 1):
        campaign = SandboxCampaignFactory(
            account=account, external_id=f"sandbox-cmp-{c}", name=f"Campaign {c}", daily_budget=Decimal("100.00")
        )
        for i in range(1, ad_sets_per_campaign + 1):
            SandboxAdSetFactory(
                account=account,
                parent=campaign,
                external_id=f"sandbox-adset-{c}-{i}",
                name=f"Ad set {c}.{i}",
                daily_budget=Decimal("40.00"),
                bid=Decimal("1.50"),
            )
    world = World(account=account, connection=sandbox_connection(tenant, account, name="Sandbox"))
    world.sync()
    return world


def approved(entity: PlatformEntity, approver, action_type: str = "adjust_budget", **params) -> Action:
    """Recommend and approve one action (through the real services)."""
    if action_type == "adjust_budget" and not params:
        params = {"new_budget": "150.00"}
    [recommendation] = recommendations_create(
        tenant=entity.tenant,
        actor=approver,
        items=[RecommendationInput(entity_id=entity.pk, action_type=action_type, params=params)],
    )
    action = recommendation.actions.get()
    action_approve(action=action, actor=approver)
    return Action.objects.get(pk=action.pk)


def run_worker(*, policy: RetryPolicy = FAST, sleeps: list | None = None) -> list[JobReport]:
    """What the workers do: dispatch, run every queued job (as the enqueued tasks would),
    and run the outbox consumers (deployments, circuit breaker) as the drain task would."""
    actions_dispatch()
    reports = []
    for job_id in ActionJob.objects.filter(status=JobStatus.QUEUED).order_by("id").values_list("id", flat=True):
        sleep = sleeps.append if sleeps is not None else _no_sleep
        # Time does not pass in these tests, so the shared bucket must not block either.
        report = job_process(job_id=job_id, policy=policy, sleep=sleep, throttle=no_throttle)
        if report:
            reports.append(report)
    outbox_drain()
    return reports


def _no_sleep(_seconds: float) -> None:
    return None
