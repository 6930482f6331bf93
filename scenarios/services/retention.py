"""Retention of preflight runs: old runs go, evidence that something still relies on stays.

``preflights_prune`` deletes finished (succeeded or failed) preflight runs created more
than ``PREFLIGHT_RETENTION_DAYS`` ago, with their per-entity rows, except:

- a run a deployment used (``Deployment.preflight``: its diff is the deployment's record);
- a run with a guardrail override, requested or approved (the override's evidence);
- a single action's newest preflight (what the safety gate saw for that action);
- queued and running runs, whatever their age.

Deletion goes in batches of ``PRUNE_BATCH`` runs, each in its own short transaction, so
a large backlog never holds one long lock; the exclusions are checked again inside each
batch's delete, so a deployment created meanwhile keeps its run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from scenarios.models import Deployment, GuardrailOverride, PreflightEntity, PreflightRun

logger = logging.getLogger(__name__)

PRUNE_BATCH = 500
FINISHED = (PreflightRun.Status.SUCCEEDED, PreflightRun.Status.FAILED)


@dataclass(frozen=True)
class PruneResult:
    runs: int
    entity_rows: int
    cutoff: datetime


def prunable_preflights(*, now: datetime | None = None) -> QuerySet:
    """The runs ``preflights_prune`` would delete now (see the module docstring)."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.PREFLIGHT_RETENTION_DAYS)
    newer_of_same_action = PreflightRun.objects.filter(
        action_id=OuterRef("action_id"), created_at__gt=OuterRef("created_at")
    )
    return (
        PreflightRun.objects.filter(created_at__lt=cutoff, status__in=FINISHED)
        .exclude(Exists(Deployment.objects.filter(preflight_id=OuterRef("pk"))))
        .exclude(Exists(GuardrailOverride.objects.filter(preflight_id=OuterRef("pk"))))
        .filter(Q(action__isnull=True) | Exists(newer_of_same_action))
    )


def preflights_prune(*, now: datetime | None = None, dry_run: bool = False) -> PruneResult:
    """Delete the prunable runs (or only count them with ``dry_run``); see the module docstring."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.PREFLIGHT_RETENTION_DAYS)
    if dry_run:
        ids = prunable_preflights(now=now).values("pk")
        return PruneResult(
            prunable_preflights(now=now).count(), PreflightEntity.objects.filter(run__in=ids).count(), cutoff
        )
    runs = rows = 0
    while True:
        with transaction.atomic():
            batch = list(prunable_preflights(now=now).order_by("pk").values_list("pk", flat=True)[:PRUNE_BATCH])
            if not batch:
                break
            rows += PreflightEntity.objects.filter(run_id__in=batch).delete()[0]
            runs += prunable_preflights(now=now).filter(pk__in=batch).delete()[1].get("scenarios.PreflightRun", 0)
    if runs:
        logger.info("pruned %s preflight runs (%s entity rows) created before %s", runs, rows, cutoff.isoformat())
    return PruneResult(runs, rows, cutoff)
