"""django-q2 entry points of observability: thin, idempotent, ids only."""

from __future__ import annotations

import logging
import os
import socket

from django.utils import timezone

from observability.models import WorkerHeartbeat
from observability.services.delivery import deliveries_send
from observability.services.detectors import describe_report, performance_detectors_run, system_detectors_run
from observability.services.watch import watch_evaluate, watch_restore, watches_due, watches_to_restore

logger = logging.getLogger(__name__)


def heartbeat_task() -> str:
    """Prove that a worker of this host runs scheduled tasks (readiness reads it)."""
    host = socket.gethostname()[:200]
    WorkerHeartbeat.objects.update_or_create(host=host, defaults={"pid": os.getpid(), "seen_at": timezone.now()})
    return f"heartbeat from {host}"


def deliveries_send_task() -> str:
    return str(deliveries_send())


def detectors_task() -> str:
    return describe_report(system_detectors_run())


def watch_tick_task() -> str:
    """Evaluate due watches, restore triggered ones, run the daily performance detectors."""
    triggered = sum(1 for watch in watches_due() if watch_evaluate(watch) is not None)
    restored = 0
    for watch in watches_to_restore():
        try:
            watch_restore(watch)
            restored += 1
        except Exception:  # one watch's failure must not stop the others; the next tick retries it
            logger.exception("Restoring watch %s failed", watch.pk)
    return f"watches triggered={triggered} restored={restored}; {describe_report(performance_detectors_run())}"
