"""Objects for .ci/api_fuzz to aim at, and the schemathesis.toml that names them.

Run with ``manage.py shell --no-imports < .ci/api_fuzz_config.py`` after ``seed_demo``: creates, for
the demo tenant, a scenario with two items, its preflight and a dry-run deployment
(through the same services the API calls), then prints a configuration whose
per-operation parameters point path ids at them, so every operation gets past its 404.
"""

import uuid

from actions.models import Action, Recommendation
from budgetradar.models import Membership
from platforms.models import PlatformEntity
from scenarios.services.adpush import scenario_preflight
from scenarios.services.deploy import deployment_create
from scenarios.services.imports import parse_item_list, scenario_create

admin = Membership.objects.select_related("user", "tenant").get(user__username="demo-admin")
tenant, user = admin.tenant, admin.user
campaigns = PlatformEntity.objects.filter(tenant=tenant, entity_type="campaign").order_by("id")[:2]
items = parse_item_list(
    tenant=tenant,
    items=[
        {"entity": campaigns[0].pk, "daily_budget": str(campaigns[0].daily_budget + 10)},
        {"entity": campaigns[1].pk, "status": "paused"},
    ],
)
scenario = scenario_create(tenant=tenant, actor=user, name="Fuzz target", items=items, reason="api fuzz")
preflight = scenario_preflight(scenario=scenario, actor=user)
deployment = deployment_create(scenario=scenario, actor=user, mode="dry_run", idempotency_key=str(uuid.uuid4()))
deployment_id = deployment.response["id"]
action = Action.objects.filter(tenant=tenant).order_by("id").first()
recommendation = Recommendation.objects.filter(tenant=tenant).order_by("-id").first()

targets = [
    (r"^/api/actions/\{id\}/", {"id": action.pk}),
    (r"^/api/actions/approve/", {"recommendation_id": recommendation.pk}),
    (r"^/api/scenarios/\{id\}/", {"id": scenario.pk}),
    (r"^/api/deployments/\{id\}/", {"id": deployment_id}),
    (r"^/api/tenants/", {"tenant_id": tenant.slug, "run_id": preflight.run_id}),
    (r"^/api/preflights/", {"run_id": preflight.run_id}),
]
for regex, parameters in targets:
    values = ", ".join(f'"{name}" = {value!r}'.replace("'", '"') for name, value in parameters.items())
    print(f"[[operations]]\ninclude-path-regex = '{regex}'\nparameters = {{ {values} }}\n")
