"""Creating recommendations (and the pending action each one proposes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from actions.changes import ParamsError, normalize_params
from actions.models import Action, ActionType, Recommendation
from budgetradar.audit import audited_save
from budgetradar.errors import ValidationFailed
from budgetradar.models import Tenant
from budgetradar.tenancy import require_perm
from platforms.models import PlatformEntity
from safety.gate import gate_recommendation


@dataclass(frozen=True)
class RecommendationInput:
    entity_id: Any
    action_type: Any
    params: Any = None
    rationale: str = ""
    source: str = "manual"


def _validate(item: RecommendationInput, entities: dict[int, PlatformEntity]) -> tuple[PlatformEntity, dict]:
    try:
        entity_pk = int(item.entity_id)
    except (TypeError, ValueError):
        raise ParamsError(
            "entity", f"entity must be an entity id from /api/entities/; got {item.entity_id!r}."
        ) from None
    entity = entities.get(entity_pk)
    if entity is None:
        raise ParamsError("entity", f"Entity {entity_pk} does not exist in your tenant.")
    if item.action_type not in ActionType.values:
        raise ParamsError(
            "action_type", f"Unknown action type {item.action_type!r}; expected one of {', '.join(ActionType.values)}."
        )
    params = normalize_params(
        item.action_type,
        item.params,
        entity_type=entity.entity_type,
        currency=entity.connection.currency,
        entity=entity,
    )
    gate_recommendation(entity=entity, action_type=item.action_type, params=params)
    return entity, params


def recommendations_create(*, tenant: Tenant, actor, items: list[RecommendationInput]) -> list[Recommendation]:
    """Create recommendations, each with its action pending approval.

    Guarantees: all or nothing — every item is validated first (its params, and the
    safety gate's value sanity: finite, within the currency's floor and ceiling, exact on
    the platform; ``safety.gate.gate_recommendation``) and any invalid item
    refuses the whole request with ``ValidationFailed`` whose details map the item index
    to ``{field: message}``; entities of other tenants are reported as not existing.
    """
    if actor is not None:
        require_perm(actor, "actions.add_recommendation", doing="create recommendations")
    ids = {int(i.entity_id) for i in items if str(i.entity_id).isdigit()}
    entities = {e.pk: e for e in PlatformEntity.objects.filter(tenant=tenant, pk__in=ids).select_related("connection")}
    validated: list[tuple[RecommendationInput, PlatformEntity, dict]] = []
    errors: dict[str, dict[str, str]] = {}
    for index, item in enumerate(items):
        try:
            entity, params = _validate(item, entities)
            validated.append((item, entity, params))
        except ParamsError as exc:
            errors[str(index)] = {exc.field: exc.message}
    if errors:
        raise ValidationFailed("Some recommendations are invalid; nothing was created.", details=errors)
    with transaction.atomic():
        return [_create_one(tenant, actor, item, entity, params) for item, entity, params in validated]


def _create_one(
    tenant: Tenant, actor, item: RecommendationInput, entity: PlatformEntity, params: dict
) -> Recommendation:
    proposer = actor if getattr(actor, "is_authenticated", False) else None
    recommendation = Recommendation.objects.create(
        tenant=tenant,
        source=item.source or "manual",
        entity=entity,
        action_type=item.action_type,
        params=params,
        rationale=item.rationale or "",
        created_by=proposer,
    )
    action = Action(
        tenant=tenant,
        recommendation=recommendation,
        connection=entity.connection,
        entity=entity,
        platform=entity.connection.platform,
        action_type=item.action_type,
        params=params,
        proposed_by=proposer,
    )
    audited_save(action, actor=actor, reason=f"proposed by {item.source or 'manual'}")
    return recommendation
