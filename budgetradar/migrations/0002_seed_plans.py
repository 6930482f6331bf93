"""The four standard plans (DESIGN.md section 8)."""

from django.db import migrations

PLANS = [
    # code, name, actions_enabled, actions_per_month, live_deploy, autopilot, max_connections
    ("free", "Free", False, 0, False, False, 1),
    ("growth", "Growth", False, 0, False, False, 3),
    ("pro", "Pro", True, 100, True, False, 10),
    ("enterprise", "Enterprise", True, None, True, True, None),
]


def seed(apps, schema_editor):
    Plan = apps.get_model("budgetradar", "Plan")
    for code, name, enabled, per_month, live, autopilot, connections in PLANS:
        Plan.objects.update_or_create(
            code=code,
            defaults={
                "name": name, "actions_enabled": enabled, "actions_per_month": per_month,
                "live_deploy": live, "autopilot": autopilot, "max_connections": connections,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("budgetradar", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
