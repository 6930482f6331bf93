"""Leases: who may work on an action right now, and for how long.

Whoever works on actions — a worker running a job, a rollback, the reconciler — first
takes a lease on them: an owner token written on each action row (``lease_owner``)
with an expiry (``lease_expires_at``), and on the job row it runs. Guarantees:

- Taking a lease is a compare-and-set on the rows, so two holders never share one.
- While the holder works, ``LeaseKeeper`` renews the lease from a ticker thread every
  third of its time to live — during throttle sleeps, retry waits and long platform
  requests too — but only while the holder makes progress: a holder that has shown no
  sign of life for ``stall_after`` stops being renewed, so a hung worker cannot keep
  an entity blocked.
- Every write the holder makes is fenced on its token (the row must still carry it),
  and before each platform request the holder fences the request itself
  (``fence_request``): the request is sent only if every action in it is still held,
  with at least ``margin`` left on the lease. A holder that lost its lease stops
  without writing.
- A lease that is not renewed expires after ``ttl`` (default 30 s): the reconciler may
  then take the actions over. A crashed worker's actions are therefore picked up after
  at most ``ttl`` plus the reconciler's period (one minute), i.e. within about two
  minutes.

Clock: expiries are compared with this process's clock; machines running workers must
keep their clocks in sync (NTP), as for any lease.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db import connection as db_connection
from django.utils import timezone

from actions.models import Action, ActionJob, ActionStatus
from actions.services.logs import log_events
from budgetradar.bulk import bulk_set

UNSETTLED = [ActionStatus.EXECUTING, ActionStatus.ROLLING_BACK]
logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The holder no longer holds the lease (it expired and someone took over)."""


def new_token(role: str) -> str:
    """A unique owner token that also says who holds it (shown in the admin)."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_ttl() -> timedelta:
    return timedelta(seconds=settings.LEASE_TTL_SECONDS)


@dataclass
class Lease:
    """A lease held by this process. ``expires_at`` is the latest expiry it wrote."""

    token: str
    ttl: timedelta
    expires_at: datetime
    job_id: int | None = None
    lost: threading.Event = field(default_factory=threading.Event)

    def remaining(self, now: datetime | None = None) -> float:
        return ((self.expires_at) - (now or timezone.now())).total_seconds()

    def ensure(self, margin: float) -> None:
        """Raise ``LeaseLost`` unless the lease is held with at least ``margin`` seconds left."""
        if self.lost.is_set():
            raise LeaseLost(f"lease {self.token} was lost")
        if self.remaining() < margin:
            raise LeaseLost(f"lease {self.token} has less than {margin:g}s left")


def lease_margin() -> float:
    """Seconds a lease must still have before a platform request may go out."""
    return settings.LEASE_TTL_SECONDS / 3


# Taking and releasing ----------------------------------------------------------------------


def job_lease_take(job_id: int, *, token: str, from_status: str, to_status: str, **fields) -> Lease | None:
    """Compare-and-set a job from ``from_status`` to ``to_status`` under a new lease."""
    ttl = lease_ttl()
    expires = timezone.now() + ttl
    taken = ActionJob.objects.filter(pk=job_id, status=from_status).update(
        status=to_status, lease_owner=token, lease_expires_at=expires, **fields
    )
    return Lease(token=token, ttl=ttl, expires_at=expires, job_id=job_id) if taken == 1 else None


def actions_lease_take(
    ids: Iterable[int], *, lease: Lease, expired_only: bool = False, statuses: Iterable[str] = UNSETTLED
) -> list[int]:
    """Put ``lease`` on the given unsettled actions; return the ids taken.

    ``expired_only`` (the reconciler) takes only actions whose lease has expired, so a
    live holder is never robbed. The lock-then-update is one transaction: no two
    takers can both win a row.
    """
    now = timezone.now()
    with transaction.atomic():
        rows = Action.objects.select_for_update().filter(pk__in=list(ids), status__in=list(statuses))
        if expired_only:
            rows = rows.filter(lease_expires_at__lt=now)
        taken = list(rows.values_list("pk", flat=True))
        if taken:
            Action.objects.filter(pk__in=taken).update(lease_owner=lease.token, lease_expires_at=lease.expires_at)
    return taken


def lease_renew(lease: Lease) -> bool:
    """Push the expiry out by one time to live; False (and ``lease.lost`` set) if it is gone.

    A job lease is lost when the job row no longer carries the token. Actions the
    reconciler took over individually simply stop matching the token; the fence
    before each request and every fenced write notice them.
    """
    expires = timezone.now() + lease.ttl
    if lease.job_id is not None:
        held = ActionJob.objects.filter(pk=lease.job_id, lease_owner=lease.token).update(lease_expires_at=expires)
        if held != 1:
            lease.lost.set()
            return False
    _renew_actions(lease.token, expires)
    lease.expires_at = expires
    return True


def _renew_actions(token: str, expires: datetime) -> None:
    """Extend the unsettled actions ``token`` holds, skipping rows locked right now.

    The keeper's thread renews while its worker settles: on PostgreSQL an UPDATE of the
    same rows in another order would deadlock with the worker's transaction, so rows
    the worker has locked are skipped (it is writing them itself; the next tick renews
    what is still unsettled).
    """
    owned = Action.objects.filter(lease_owner=token, status__in=UNSETTLED)
    if not db_connection.features.has_select_for_update_skip_locked:
        owned.update(lease_expires_at=expires)  # SQLite: one writer at a time, nothing to skip
        return
    table, quote = Action._meta.db_table, db_connection.ops.quote_name
    with db_connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(table)} SET {quote('lease_expires_at')} = %s WHERE {quote('id')} IN ("
            f"SELECT {quote('id')} FROM {quote(table)} WHERE {quote('lease_owner')} = %s "
            f"AND {quote('status')} = ANY(%s) ORDER BY {quote('id')} FOR UPDATE SKIP LOCKED)",
            [expires, token, [str(status) for status in UNSETTLED]],
        )


RELEASED_SUFFIX = ":released"


def released_owner(lease: Lease) -> str:
    """The owner mark of actions a holder let go unsettled: no longer its token (so its
    renewals skip them), still saying who had them (an executing action always names one)."""
    return f"{lease.token[: 120 - len(RELEASED_SUFFIX)]}{RELEASED_SUFFIX}"


def lease_hand_over(lease: Lease, action_ids: Iterable[int], **fields) -> int:
    """Let the reconciler have these actions now (their outcome could not be settled).

    Their lease expires at once and no longer carries the token, so this holder's
    renewals leave them alone. ``fields`` are written in the same statement.
    """
    return Action.objects.filter(pk__in=list(action_ids), lease_owner=lease.token).update(
        lease_owner=released_owner(lease), lease_expires_at=timezone.now(), **fields
    )


def fence_request(
    lease: Lease,
    action_ids: Iterable[int],
    *,
    logs: Sequence[dict[str, Any]] = (),
    before_states: dict[int, dict[str, Any] | None] | None = None,
) -> None:
    """Check that every action of a platform request is still held with margin left,
    write the before-states given for its actions (``{action id: state}``) and append
    ``logs`` (``log_events``' form: the request's ``request_sent`` rows) only if so. Call
    it inside the transaction that commits them.

    The check is an UPDATE that is also a renewal: it extends exactly the rows that are
    still ours and have at least the margin left, and sets their before-states in the
    same row version (so an action's before-state is on its row before any request of
    it leaves). Raises ``LeaseLost`` if any row did not match; nothing has been sent and
    no log row written then (roll the transaction back: the renewal of the rows that did
    match goes with it). Two statements: the UPDATE, then the log rows (``COPY`` on
    PostgreSQL). ``ValueError`` if ``before_states`` names an action the request does
    not carry (nothing is written).
    """
    ids = sorted(set(action_ids))
    before_states = before_states or {}
    if not before_states.keys() <= set(ids):
        raise ValueError("before_states may only name actions of the request")
    lease.ensure(lease_margin())
    now = timezone.now()
    expires = now + lease.ttl
    threshold = now + timedelta(seconds=lease_margin())
    held = _fence_update(lease, ids, before_states, expires=expires, threshold=threshold)
    if held != len(ids):
        _fence_lost(lease, ids, held=held)
    if logs:
        log_events(logs)


def _fence_update(lease: Lease, ids: list[int], before_states, *, expires: datetime, threshold: datetime) -> int:
    """Renew the held rows among ``ids`` (and set the given before-states); return how many."""
    held = Action.objects.filter(
        pk__in_array=ids, lease_owner=lease.token, status__in=UNSETTLED, lease_expires_at__gt=threshold
    )
    if not before_states:
        return held.update(lease_expires_at=expires)
    if db_connection.vendor != "postgresql":
        count = held.update(lease_expires_at=expires)
        rows = [Action(pk=pk, before_state=state) for pk, state in before_states.items()]
        bulk_set(rows, ["before_state"], only_if={"lease_owner": lease.token})
        return count
    table, quote = Action._meta.db_table, db_connection.ops.quote_name
    document = [{"pk": pk, "set": pk in before_states, "state": before_states.get(pk)} for pk in ids]
    sql = (
        f"UPDATE {quote(table)} AS t SET {quote('lease_expires_at')} = %s, {quote('before_state')} = "
        f"CASE WHEN v.set THEN v.state ELSE t.{quote('before_state')} END "
        f"FROM jsonb_to_recordset(%s::jsonb) AS v(pk bigint, set boolean, state jsonb) "
        f"WHERE t.{quote('id')} = v.pk AND t.{quote('lease_owner')} = %s AND t.{quote('status')} = ANY(%s) "
        f"AND t.{quote('lease_expires_at')} > %s"
    )
    with db_connection.cursor() as cursor:
        cursor.execute(sql, [expires, json.dumps(document), lease.token, [str(s) for s in UNSETTLED], threshold])
        return cursor.rowcount


def _fence_lost(lease: Lease, ids: list[int], *, held: int | None) -> None:
    lease.lost.set()
    missing = "some" if held is None else str(len(ids) - held)
    raise LeaseLost(f"{missing} of {len(ids)} actions are no longer held by {lease.token}")


# Keeping a lease alive -----------------------------------------------------------------------


class LeaseKeeper:
    """Renews a lease from a daemon thread while its holder makes progress.

    Use as a context manager around the work. The holder calls ``touch()`` at every
    step (the keeper's ``sleep`` does it during waits); the thread renews every
    ``ttl / 3`` unless the holder has been silent longer than ``stall_after``.
    """

    def __init__(self, lease: Lease, *, stall_after: float | None = None) -> None:
        self.lease = lease
        self.period = lease.ttl.total_seconds() / 3
        self.stall_after = stall_after if stall_after is not None else settings.LEASE_STALL_SECONDS
        self._progress = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.token}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.period + 5)

    @property
    def lost(self) -> bool:
        return self.lease.lost.is_set()

    def touch(self) -> None:
        """The holder is alive and working."""
        self._progress = time.monotonic()

    def sleep(self, seconds: float, *, sleep: Callable[[float], None] = time.sleep) -> None:
        """Wait ``seconds`` in short steps, showing progress; stop early if the lease is lost."""
        left = seconds
        while left > 0 and not self.lost:
            self.touch()
            step = min(left, self.period)
            sleep(step)
            left -= step
        self.touch()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.period):
                if time.monotonic() - self._progress > self.stall_after:
                    continue  # a silent holder is not renewed; its lease runs out
                try:
                    if not lease_renew(self.lease):
                        return
                except DatabaseError:
                    logger.warning("lease %s: renewal failed, retrying", self.lease.token, exc_info=True)
        finally:
            db_connection.close()  # this thread's own connection
