"""Services for platform connections: create, test, sync.

Every service checks the actor's tenant (another tenant's connection is not found) and
role permission itself; the admin, the API, commands and tasks all call these.
``actor=None`` means the system (management commands, workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from budgetradar.audit import audited_save
from budgetradar.entitlements import entitlement_check_new_connection
from budgetradar.errors import Conflict, InvalidState, ValidationFailed
from budgetradar.models import Tenant
from budgetradar.tenancy import require_perm, require_same_tenant
from platforms.models import Platform, PlatformConnection
from platforms.registry import get_executor
from platforms.sync import SyncResult, sync_connection
from platforms.types import ErrorCode, PlatformCallError, PlatformError

MAX_SYNC_DAYS = 730


@dataclass(frozen=True)
class ConnectionTestResult:
    ok: bool
    message: str


def _authorize(actor, connection: PlatformConnection, perm: str, doing: str) -> None:
    if actor is None:
        return
    require_same_tenant(actor, connection.tenant, what="platform connection")
    require_perm(actor, perm, doing=doing)


def connection_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    platform: str,
    account_id: str,
    currency: str,
    time_zone: str,
    credentials: dict[str, Any],
    api_base_url: str = "",
) -> PlatformConnection:
    """Create a connection with encrypted credentials.

    Guarantees: the actor is an admin of ``tenant``; the plan's connection limit is
    checked under a lock on the tenant row, so two concurrent creations at the limit
    cannot both pass (HTTP 402); the same account cannot be connected twice (409); the
    creation is audited; credentials never appear in the history or the error messages.
    """
    if actor is not None:
        require_same_tenant(actor, tenant, what="tenant")
        require_perm(actor, "platforms.add_platformconnection", doing="add platform connections")
    if not isinstance(credentials, dict):
        raise ValidationFailed("Credentials must be an object.", details={"credentials": "Must be an object."})
    connection = PlatformConnection(
        tenant=tenant,
        name=name,
        platform=platform,
        account_id=account_id,
        currency=currency,
        time_zone=time_zone,
        credentials=credentials,
        api_base_url=api_base_url,
    )
    try:
        connection.full_clean(exclude=["tenant", "credentials"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise ValidationFailed("The connection is invalid; nothing was created.", details=exc.message_dict)
    with transaction.atomic():
        entitlement_check_new_connection(tenant=tenant)
        # Checked under the tenant lock, so two concurrent creations cannot both pass.
        if PlatformConnection.objects.filter(tenant=tenant, platform=platform, account_id=account_id).exists():
            raise Conflict(f"{Platform(platform).label} account {account_id} is already connected in this tenant.")
        audited_save(connection, actor=actor, reason="connection created")
    return connection


def _explain(connection: PlatformConnection, error: PlatformError) -> str:
    """What a failed test means for the person who set the connection up."""
    account = f"{connection.get_platform_display()} account {connection.account_id}"
    match error.code:
        case ErrorCode.AUTH_EXPIRED:
            advice = "The access token was refused (expired, revoked or wrong): update the connection's credentials."
        case ErrorCode.PERMISSION_DENIED:
            advice = f"The token is valid but may not access {account}: ask an account admin to grant access."
        case ErrorCode.NOT_FOUND:
            advice = f"{account} was not found: check the account id (or whether this token can see it)."
        case ErrorCode.RATE_LIMITED | ErrorCode.TRANSIENT:
            advice = "The platform did not answer properly just now: test again in a minute."
        case _:
            advice = error.hint
    return f"{advice} Platform said: {error.message}"


def connection_test(*, connection: PlatformConnection, actor) -> ConnectionTestResult:
    """Read the account through its executor and record whether that works.

    Guarantees: another tenant's connection is not found; the actor needs
    ``platforms.test_platformconnection``; the result (ok, a message saying what is
    wrong and what to do, the time) is stored on the connection with an audit entry;
    platform errors never raise, they are the result.
    """
    _authorize(actor, connection, "platforms.test_platformconnection", "test platform connections")
    try:
        ok, message = True, get_executor(connection).test_connection()
    except PlatformCallError as exc:
        ok, message = False, _explain(connection, exc.error)
    connection.last_test_ok = ok
    connection.last_test_message = message[:500]
    connection.last_tested_at = timezone.now()
    audited_save(
        connection,
        actor=actor,
        reason="connection test passed" if ok else "connection test failed",
        update_fields=["last_test_ok", "last_test_message", "last_tested_at"],
    )
    return ConnectionTestResult(ok=ok, message=message)


def connection_sync(*, connection: PlatformConnection, actor=None, days: int = 60) -> SyncResult:
    """Mirror the connection's entities and the last ``days`` days of performance.

    Guarantees: the actor (when given) needs ``platforms.sync_platformconnection`` in
    the connection's tenant; an inactive connection is refused; platform failures raise
    ``SyncFailed`` with the reason and leave the mirror as it was; see
    ``platforms.sync.sync_connection`` for what the mirror guarantees.
    """
    _authorize(actor, connection, "platforms.sync_platformconnection", "sync platform connections")
    if not connection.is_active:
        raise InvalidState(f"{connection} is inactive; activate it before syncing.")
    if not 1 <= days <= MAX_SYNC_DAYS:
        raise ValidationFailed(f"days must be between 1 and {MAX_SYNC_DAYS}; got {days}.", details={"days": days})
    return sync_connection(connection=connection, executor=get_executor(connection), days=days)


def connection_sync_enqueue(*, connection: PlatformConnection, actor) -> None:
    """Check the actor may sync, then run the sync in a worker once the caller commits."""
    from django_q.tasks import async_task

    _authorize(actor, connection, "platforms.sync_platformconnection", "sync platform connections")
    if not connection.is_active:
        raise InvalidState(f"{connection} is inactive; activate it before syncing.")
    connection_id = connection.pk
    transaction.on_commit(lambda: async_task("platforms.tasks.sync_connection_task", connection_id))
