"""``manage.py preflight --tenant SLUG --plan-run-id ID --proposed-actions-path FILE [--mode M]``.

Preflights a proposed push bundle (the optimizer's export) against the live platforms:
stores the ``PreflightRun`` and exports its document (``STATE_DIR/ad_push_diffs/<run_id>.json``,
listed first in the index ``STATE_DIR/ad_push_diffs.json``).
Exit status 0 when the preflight ran (guardrail breaches are findings in the document,
not failures); 1 with a one-line reason for malformed input, an unknown tenant, a
missing baseline (an entity never synced into the mirror) or a platform failure such as
expired credentials.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from budgetradar.errors import DomainError, ValidationFailed
from budgetradar.models import Tenant
from platforms.types import ErrorCode, PlatformCallError
from scenarios.models import PreflightRun
from scenarios.services.export import export_run
from scenarios.services.imports import check_size, parse_bundle
from scenarios.services.items import TargetItem


class Command(BaseCommand):
    help = "Preflight a proposed push bundle: store the run and append it to state/ad_push_diffs.json."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True, metavar="SLUG", help="The tenant's slug.")
        parser.add_argument(
            "--plan-run-id", required=True, metavar="ID", help="The optimizer's plan run id (the run's plan id)."
        )
        parser.add_argument(
            "--proposed-actions-path", required=True, type=Path, metavar="FILE", help="The proposed push bundle."
        )
        parser.add_argument("--mode", choices=PreflightRun.Mode.values, default=PreflightRun.Mode.MANUAL)

    def handle(self, *args, tenant: str, plan_run_id: str, proposed_actions_path: Path, mode: str, **options) -> None:
        target = self._tenant(tenant)
        items = self._items(target, proposed_actions_path)
        run = self._preflight(target, items, plan_run_id=plan_run_id, mode=mode)
        try:
            path = export_run(run=run)
        except OSError as exc:
            raise CommandError(one_line(f"preflight {run.run_id} was stored but not exported: {exc}")) from None
        self.stdout.write(summary(run, path))

    def _tenant(self, slug: str) -> Tenant:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"unknown tenant {slug!r}: no tenant has that slug")
        return tenant

    def _items(self, tenant: Tenant, path: Path) -> list[TargetItem]:
        try:
            check_size(path.stat().st_size, what=f"The file {path}")
            data = path.read_bytes()
            return parse_bundle(tenant=tenant, data=data)[1]
        except OSError as exc:
            raise CommandError(one_line(f"malformed input: cannot read {path}: {exc.strerror or exc}")) from None
        except ValidationFailed as exc:
            raise refusal(exc) from None

    def _preflight(self, tenant: Tenant, items: list[TargetItem], *, plan_run_id: str, mode: str) -> PreflightRun:
        from scenarios.services.preflight import preflight_run

        try:
            return preflight_run(tenant=tenant, items=items, actor=None, mode=mode, plan_id=plan_run_id)
        except DomainError as exc:
            reason = "platform auth failure" if is_auth_failure(exc) else "preflight failed"
            raise CommandError(one_line(f"{reason}: {exc.message}")) from None


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def refusal(exc: ValidationFailed) -> CommandError:
    """The one-line reason for a refused bundle; entities missing from the mirror only
    mean the baseline was never synced, which has its own remedy."""
    errors = exc.details if isinstance(exc.details, list) else []
    missing = [e["entity_id"] for e in errors if e.get("code") == "unknown_entity" and e.get("entity_id")]
    if errors and len(missing) == len(errors):
        rest = f" and {len(missing) - 1} more entities have" if len(missing) > 1 else " has"
        return CommandError(f"missing baseline: {missing[0]}{rest} never been synced; run manage.py sync_platforms")
    return CommandError(one_line(f"malformed input: {exc.message}"))


def is_auth_failure(exc: DomainError) -> bool:
    """Whether a preflight failed because the platform refused the credentials."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, PlatformCallError):
        return cause.error.code == ErrorCode.AUTH_EXPIRED
    details = exc.details if isinstance(exc.details, dict) else {}
    return details.get("code") == ErrorCode.AUTH_EXPIRED


def summary(run: PreflightRun, path: Path) -> str:
    """One paragraph: what was checked, what would change, what the guardrails found."""
    document = run.payload or {}
    counts = document.get("summary", {})
    stored = Counter(b.get("severity") for b in document.get("breaches", []))
    severities = Counter(counts.get("breaches") or {}) or stored  # the summary counts every breach
    found = ", ".join(f"{severities[s]} {s}" for s in ("critical", "warning") if severities[s]) or "none"
    blocked = " Critical breaches block a live deploy until overridden." if severities["critical"] else ""
    return (
        f"Preflight {run.run_id} for tenant {run.tenant.slug} (plan {run.plan_id or '-'}, mode {run.mode}): "
        f"{counts.get('entities', 0)} entities checked against the live platforms, {counts.get('changed', 0)} "
        f"would change, {counts.get('noop', 0)} unchanged; guardrail breaches: {found}.{blocked} "
        f"Stored as run {run.run_id} and appended to {path}."
    )
