from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_schedules(sender, **kwargs) -> None:
    from planning.schedules import schedules_sync

    schedules_sync()


class PlanningConfig(AppConfig):
    name = "planning"
    verbose_name = "Planning and automation"

    def ready(self) -> None:
        # The daily loop's tick is declared in code; every migrate upserts it (idempotent).
        post_migrate.connect(_sync_schedules, sender=self)
