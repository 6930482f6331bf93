"""The standard plans (DESIGN.md section 8).

Migration 0002 created them with a frozen copy of this table; ``plans_sync`` re-asserts
them (tests that flush the database, ``seed_demo``) and is idempotent.
"""

from __future__ import annotations

from budgetradar.models import Plan

STANDARD_PLANS = {
    # code: name, actions_enabled, actions_per_month, live_deploy, autopilot, max_connections
    "free": ("Free", False, 0, False, False, 1),
    "growth": ("Growth", False, 0, False, False, 3),
    "pro": ("Pro", True, 100, True, False, 10),
    "enterprise": ("Enterprise", True, None, True, True, None),
}


def plans_sync() -> None:
    """Create any missing standard plan (existing ones are left as an admin set them)."""
    for code, (name, enabled, per_month, live, autopilot, connections) in STANDARD_PLANS.items():
        Plan.objects.get_or_create(
            code=code,
            defaults={
                "name": name,
                "actions_enabled": enabled,
                "actions_per_month": per_month,
                "live_deploy": live,
                "autopilot": autopilot,
                "max_connections": connections,
            },
        )


def plan_named(code: str) -> Plan:
    plans_sync()
    return Plan.objects.get(code=code)
